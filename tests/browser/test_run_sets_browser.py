"""Run sets and conflict resolution in the browser: save the runs list's filter as a pinned set,
see it replayed on the next proposal; resolve a conflicted rebase in the proposal page's editor."""

import io
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from agents.models import Agent, ConfigVersion, Membership, RunSet
from dreams import rebase
from dreams.models import Proposal
from tests.factories import (
    ConfigVersionFactory,
    MembershipFactory,
    UserFactory,
    reviewable_proposal,
)

pytestmark = pytest.mark.browser

RULE = "Before issuing any refund, always check the refund window with check_refund_policy."


@pytest.fixture
def demo(transactional_db):
    call_command("seed_demo", runs=40, no_dream=True, stdout=io.StringIO())
    agent = Agent.objects.select_related("stable_version").get(slug="refunds-desk")
    user = UserFactory(username="riley-reviewer")
    MembershipFactory(user=user, workspace=agent.workspace, role=Membership.Role.REVIEWER)
    return agent


def test_a_pinned_set_from_the_runs_list_is_replayed_on_the_next_proposal(
    page, live_server, login, shot, demo
):
    login("riley-reviewer")
    page.goto(f"{live_server.url}/runs/?agent={demo.slug}&status=success")
    page.fill("#save-run-set input[name=name]", "Golden passes")
    page.check("#save-run-set input[name=pinned]")
    shot("runs-save-set")
    page.click("#save-run-set button")
    page.wait_for_url(re.compile(r"/run-sets/$"))
    expect(page.locator("#run-set-table")).to_contain_text("Golden passes")
    expect(page.locator("#run-set-table")).to_contain_text("pinned")
    shot("run-sets")
    assert RunSet.objects.get(name="Golden passes").pinned

    page.goto(f"{live_server.url}/agents/{demo.slug}/propose/")
    page.fill("#title", "Check the refund window first")
    page.locator("#system_prompt").press("Control+End")
    page.locator("#system_prompt").type("\n" + RULE)
    page.click("#propose-submit")
    page.wait_for_url(re.compile(r"/proposals/\d+/$"))
    expect(page.locator("table.metrics")).to_contain_text("Run set: Golden passes")
    shot("proposal-run-set-row")


def test_a_conflicted_rebase_is_resolved_in_the_editor(page, live_server, login, shot, demo):
    reviewer = UserFactory(username="casey-reviewer")
    MembershipFactory(user=reviewer, workspace=demo.workspace, role=Membership.Role.REVIEWER)
    proposal = reviewable_proposal(agent=demo, runs=2)
    newer = ConfigVersionFactory(
        agent=demo,
        number=ConfigVersion.objects.filter(agent=demo).count() + 10,
        system_prompt=proposal.base_version.system_prompt,
        memory_documents={"policies/refunds.md": "# Refund policy\n\n- 14 days.\n"},
    )
    demo.stable_version = newer
    demo.save(update_fields=["stable_version"])
    rebase.rebase_proposal(proposal_id=proposal.pk, actor=reviewer)

    login("casey-reviewer")
    page.goto(f"{live_server.url}/proposals/{proposal.pk}/")
    editor = page.locator("#resolve-0")
    expect(editor).to_have_value(re.compile("<<<<<<< proposal"))
    shot("rebase-conflict-editor")
    editor.fill("# Refund policy\n\n- 14 days from delivery.\n- Check the window first.\n")
    page.click("#resolve-submit")
    page.wait_for_url(re.compile(r"/proposals/\d+/$"))
    new = Proposal.objects.get(revision_of=proposal)
    assert page.url.endswith(f"/proposals/{new.pk}/")
    expect(page.locator(".flash").first).to_contain_text("Conflict resolved")
    assert new.base_version == newer
