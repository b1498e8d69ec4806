"""Capture pages: agents, runs, the agent page, the audit log (dreams pages: tests/dreams)."""

import json

import pytest
from django.urls import reverse

from agents.models import AuditEvent, Feedback, Run
from dreams.models import DreamCycle, ModelCall
from tests.factories import (
    ConfigVersionFactory,
    DreamCycleFactory,
    FeedbackFactory,
    RunFactory,
    reviewable_proposal,
)

pytestmark = pytest.mark.django_db

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def test_agents_overview_moved_to_agents_url(client, viewer, agent):
    client.force_login(viewer)
    html = client.get("/agents/").content.decode()
    assert "Support" in html and reverse("agent-detail", args=["support"]) in html


def test_run_page_escapes_run_content(client, viewer, agent):
    run = RunFactory(
        agent=agent,
        status=Run.Status.FAILURE,
        outcome_reason=XSS,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": XSS}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": XSS}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": XSS}],
            },
        ],
    )
    FeedbackFactory(run=run, comment=XSS)
    client.force_login(viewer)
    html = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "<script>window.pwned" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html


def test_run_page_shows_raw_json_and_config_version(client, viewer, agent):
    run = RunFactory(agent=agent, config_version=agent.stable_version)
    client.force_login(viewer)
    response = client.get(reverse("run-detail", args=[run.pk]))
    raw = response.context["raw_json"]
    assert json.loads(raw)["messages"][0]["role"] == "user"
    assert 'id="raw-json"' in response.content.decode()
    assert "v1" in response.content.decode()


def test_reviewer_adds_feedback_on_the_run_page(client, reviewer, agent):
    run = RunFactory(agent=agent)
    client.force_login(reviewer)
    response = client.post(
        reverse("run-feedback", args=[run.pk]), {"rating": "negative", "comment": "Wrong order"}
    )
    assert response.status_code == 302
    feedback = Feedback.objects.get(run=run)
    assert (feedback.rating, feedback.source, feedback.author) == ("negative", "human", reviewer)


def test_viewer_cannot_add_feedback(client, viewer, agent):
    run = RunFactory(agent=agent)
    client.force_login(viewer)
    assert (
        client.post(reverse("run-feedback", args=[run.pk]), {"rating": "positive"}).status_code
        == 403
    )


def test_outsider_cannot_see_a_run(client, outsider, agent):
    run = RunFactory(agent=agent)
    client.force_login(outsider)
    assert client.get(reverse("run-detail", args=[run.pk])).status_code == 404


def test_runs_list_filters_by_status(client, viewer, agent):
    RunFactory(agent=agent, external_id="ok-run", status="success")
    RunFactory(agent=agent, external_id="bad-run", status="failure")
    client.force_login(viewer)
    html = client.get("/runs/?status=failure").content.decode()
    assert "bad-run" in html and "ok-run" not in html


def test_agent_page_pass_rate_by_version_and_spend(client, viewer, agent):
    v2 = ConfigVersionFactory(agent=agent, number=2, system_prompt="Be brief.")
    for status in ("success", "failure", "failure", "failure"):
        RunFactory(agent=agent, config_version=agent.stable_version, status=status, cost_usd="0.5")
    for status in ("success", "success", "success", "failure"):
        RunFactory(agent=agent, config_version=v2, status=status)
    ModelCall.objects.create(agent=agent, purpose="replay", model="m", cost_usd="0.25")
    client.force_login(viewer)
    response = client.get(reverse("agent-detail", args=["support"]))
    rates = {p["number"]: (p["passed"], p["n"]) for p in response.context["pass_rates"]}
    assert rates == {1: (1, 4), 2: (3, 4)}
    html = response.content.decode()
    assert "<svg" in html and "v2: 3 of 4 runs passed" in html
    assert 'hx-trigger="load"' in html  # spend arrives after the page
    assert reverse("agent-spend", args=["support"]) in html
    panel = client.get(
        reverse("agent-spend", args=["support"]),
        headers={"HX-Request": "true", "HX-Target": "spend"},
    )
    spend = panel.context["spend"]
    assert float(spend["production"]) == 2.0 and float(spend["dreaming"]) == 0.25
    assert panel.content.decode().lstrip().startswith('<div id="spend"')
    assert "$2.00" in panel.content.decode()


def test_agent_page_diffs_any_two_versions(client, viewer, agent):
    ConfigVersionFactory(agent=agent, number=2, system_prompt="You are a careful support agent.")
    ConfigVersionFactory(agent=agent, number=3, system_prompt="You are a terse support agent.")
    client.force_login(viewer)
    response = client.get(
        reverse("agent-detail", args=["support"]) + "?a=2&b=3",
        headers={"HX-Request": "true", "HX-Target": "version-diff"},
    )
    html = response.content.decode()  # the whole page; htmx selects #version-diff (hx-select)
    assert '<div id="version-diff">' in html and 'hx-select="#version-diff"' in html
    assert "<del>careful</del>" in html and "<ins>terse</ins>" in html


def test_agent_page_polls_while_a_cycle_is_running(client, viewer, agent):
    DreamCycleFactory(
        agent=agent,
        status=DreamCycle.Status.RUNNING,
        stage="replay",
        progress_done=3,
        progress_total=10,
        finished_at=None,
    )
    client.force_login(viewer)
    url = reverse("agent-detail", args=["support"])
    html = client.get(url).content.decode()
    assert 'hx-trigger="every 3s"' in html
    poll = reverse("dreams") + "?agent=support"
    assert f'hx-get="{poll}"' in html
    partial = client.get(
        poll, headers={"HX-Request": "true", "HX-Target": "cycles"}
    ).content.decode()
    assert partial.lstrip().startswith('<div id="cycles"') and "3/10" in partial


def test_dream_now_is_offered_for_a_live_agent_and_not_for_a_paused_one(client, owner, agent):
    client.force_login(owner)
    url = reverse("agent-detail", args=["support"])
    assert 'id="dream-now"' in client.get(url).content.decode()

    agent.is_paused = True
    agent.save(update_fields=["is_paused"])
    assert 'id="dream-now"' not in client.get(url).content.decode()


def test_audit_log_filters_by_action(client, reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    from reviews.services import reject_proposal

    reject_proposal(proposal_id=proposal.pk, reviewer=reviewer, comment="nope <b>x</b>")
    client.force_login(reviewer)
    html = client.get("/audit/?action=proposal.reject").content.decode()
    assert "proposal.reject" in html and "nope &lt;b&gt;x&lt;/b&gt;" in html
    assert AuditEvent.objects.filter(action="proposal.reject").count() == 1
    assert "No audit events" in client.get("/audit/?action=nothing").content.decode()


def test_runs_list_merges_agents_newest_first_and_pages(client, viewer, agent):
    from datetime import timedelta

    from django.utils import timezone

    from agents import views
    from tests.factories import AgentFactory

    other = AgentFactory(workspace=agent.workspace, slug="billing", name="Billing")
    now = timezone.now()
    for minute in range(6):
        owner_agent = agent if minute % 2 else other
        RunFactory(
            agent=owner_agent, external_id=f"m{minute}", started_at=now - timedelta(minutes=minute)
        )
    client.force_login(viewer)
    original = views.RUNS_PAGE_SIZE
    views.RUNS_PAGE_SIZE = 4
    try:
        first = client.get("/runs/").context
        second = client.get("/runs/?page=2").context
    finally:
        views.RUNS_PAGE_SIZE = original
    assert [r.external_id for r in first["runs"]] == ["m0", "m1", "m2", "m3"]
    assert first["has_next"] is True
    assert [r.external_id for r in second["runs"]] == ["m4", "m5"]
    assert second["has_next"] is False
