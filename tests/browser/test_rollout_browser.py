"""Browser: approve a proposal, start its rollout, approve stage 2, see the split; halt, stable back."""

import random

import pytest

from rollouts.models import Rollout
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def split_rows(page):
    return page.locator("[data-testid=agent-split] tbody tr").all_inner_texts()


def agent_page_split(page, live_server, agent):
    """The split as the agent page shows it (loaded into the page by htmx)."""
    page.goto(f"{live_server.url}/agents/{agent.slug}/")
    page.wait_for_selector("[data-testid=agent-split] tbody tr")
    return split_rows(page)


def test_a_rollout_from_approval_to_stage_two_and_halt(
    page, login, shot, live_server, owner, agent, settings
):
    settings.REVERIE_ROLLOUT_MIN_RUNS = 10
    settings.REVERIE_CANARY_MIN_SAMPLE = 10  # a stage needs at least the canary's sample
    settings.REVERIE_ROLLOUT_MIN_MINUTES = 1
    proposal = approved_proposal(agent, actor=owner)  # drafted → ready → approved

    login(owner.username)
    rows = agent_page_split(page, live_server, agent)
    assert len(rows) == 1 and "v1" in rows[0] and "100%" in rows[0]
    page.goto(f"{live_server.url}/proposals/{proposal.pk}/")
    page.get_by_role("button", name="Start staged rollout").click()

    page.wait_for_url(f"{live_server.url}/rollouts/*/")
    rollout = Rollout.objects.get(proposal=proposal)
    rows = split_rows(page)
    assert any("v1" in r and "95%" in r for r in rows)
    assert any("v2" in r and "5%" in r for r in rows)
    assert page.get_by_role("button", name="Approve next stage").is_disabled()
    assert "canary runs so far" in page.get_by_test_id("not-ready").inner_text()

    # Stage 1 meets its minimums: ten canary runs, and its minimum duration has passed.
    age_stage(rollout, minutes=2)
    seed_runs(agent=agent, version=rollout.to_version, n=10, success=1.0, rng=random.Random(1))
    page.reload()
    page.get_by_role("button", name="Approve next stage").click()
    page.wait_for_load_state()
    shot("rollout-stage-2")
    rows = agent_page_split(page, live_server, agent)
    shot("agent-split-stage-2")
    assert any("v1" in r and "75%" in r for r in rows), rows
    assert any("v2" in r and "25%" in r for r in rows), rows

    page.goto(f"{live_server.url}/rollouts/{rollout.pk}/")
    page.click("#halt-open")  # Halt… opens the form: a reason and a confirmation
    page.click("#halt-submit")  # neither given: the browser refuses to send it
    assert Rollout.objects.get(pk=rollout.pk).status == Rollout.Status.RUNNING
    page.fill("#halt-reason", "error spike on the canary")
    page.click("#halt-submit")  # still not confirmed
    assert Rollout.objects.get(pk=rollout.pk).status == Rollout.Status.RUNNING
    shot("rollout-halt-confirm")
    page.check("#halt-check")
    page.click("#halt-submit")
    page.wait_for_load_state()
    assert page.get_by_test_id("rollout-status").inner_text() == "Halted"
    assert "error spike on the canary" in page.content()
    rollout.refresh_from_db()
    assert rollout.halt_reason == "error spike on the canary"
    page.click("#rollout-proposal")  # the rollout links its proposal, and back
    page.wait_for_url(f"{live_server.url}/proposals/{proposal.pk}/")
    assert page.locator("#proposal-rollout a").get_attribute("href") == f"/rollouts/{rollout.pk}/"
    assert page.locator("#reapprove-button").is_visible()
    rows = agent_page_split(page, live_server, agent)
    assert len(rows) == 1 and "v1" in rows[0] and "100%" in rows[0]
    agent.refresh_from_db()
    assert agent.canary_version_id is None and agent.stable_version.number == 1
