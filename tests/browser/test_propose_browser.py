"""Propose a change by hand in the browser: agent page → editor → replayed proposal page."""

import io
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from agents.models import Agent, Membership
from dreams.models import Proposal
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.browser

RULE = "Before issuing any refund, always check the refund window with check_refund_policy."


@pytest.fixture
def demo(transactional_db):
    call_command("seed_demo", runs=40, no_dream=True, stdout=io.StringIO())
    agent = Agent.objects.get(slug="refunds-desk")
    user = UserFactory(username="riley-reviewer")
    MembershipFactory(user=user, workspace=agent.workspace, role=Membership.Role.REVIEWER)
    return agent


def test_propose_a_change_from_the_agent_page(page, live_server, login, shot, demo):
    login("riley-reviewer")
    page.goto(f"{live_server.url}/agents/{demo.slug}/")
    page.click("#propose-change")
    expect(page.locator("#system_prompt")).to_have_value(demo.stable_version.system_prompt)
    page.fill("#title", "Check the refund window first")
    page.fill("#rationale", "Refunds past the window slip through.")
    page.locator("#system_prompt").press("Control+End")
    page.locator("#system_prompt").type("\n" + RULE)
    page.check("input[name=runs][value=unstudied]")
    shot("propose")
    page.click("#propose-submit")
    page.wait_for_url(re.compile(r"/proposals/\d+/$"))
    proposal = Proposal.objects.get(title="Check the refund window first")
    assert proposal.source == "human" and RULE in proposal.candidate_version.system_prompt
    expect(page.locator(".diff-doc").first).to_contain_text("check the refund window")
    expect(page.locator("#proposal-status")).to_have_text(re.compile("Ready|Replaying"))
