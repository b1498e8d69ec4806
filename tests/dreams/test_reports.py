"""Dream API: start, list, report JSON and Markdown correction report; spend share."""

from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Membership
from dreams import cycles, reports
from dreams.models import DreamCycle, Experiment, ModelCall, Proposal
from tests.factories import MembershipFactory, UserFactory


@pytest.fixture
def demo_api(demo_agent: Any) -> APIClient:
    from agents import services

    _, raw = services.create_api_key(workspace=demo_agent.workspace, name="tests", scope="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def finished_cycle(demo_agent: Any) -> DreamCycle:
    cycle = cycles.start_cycle(agent=demo_agent, trigger="manual", enqueue=False)
    cycles.run_cycle(cycle_id=cycle.pk)
    cycle.refresh_from_db()
    return cycle


def session_client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_post_starts_a_cycle_and_runs_it(
    demo_api: APIClient, demo_agent: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = demo_api.post("/api/v1/agents/refunds-desk/dreams")

    assert response.status_code == 202, response.content
    cycle = DreamCycle.objects.get(pk=response.json()["id"])
    assert cycle.trigger == DreamCycle.Trigger.API
    assert cycle.status == DreamCycle.Status.SUCCEEDED  # eager Celery ran it after commit
    assert response.json()["report_url"] == f"/api/v1/dreams/{cycle.pk}"


def test_post_while_a_cycle_is_active_answers_409(demo_api: APIClient, demo_agent: Any) -> None:
    active = cycles.start_cycle(agent=demo_agent, trigger="manual", enqueue=False)

    response = demo_api.post("/api/v1/agents/refunds-desk/dreams")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "cycle_active"
    assert error["fields"] == {"cycle": [str(active.pk)]}


def test_post_on_a_paused_agent_answers_409(demo_api: APIClient, demo_agent: Any) -> None:
    demo_agent.is_paused = True
    demo_agent.save(update_fields=["is_paused"])

    response = demo_api.post("/api/v1/agents/refunds-desk/dreams")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "dreaming_unavailable"


def test_viewers_cannot_start_cycles_but_reviewers_can(
    agent: Any, viewer: Any, reviewer: Any
) -> None:
    assert session_client(viewer).post("/api/v1/agents/support/dreams").status_code == 403
    response = session_client(reviewer).post("/api/v1/agents/support/dreams")
    assert response.status_code == 202
    assert response.json()["trigger"] == "manual"
    assert DreamCycle.objects.get().created_by == reviewer


def test_cycles_of_another_workspace_are_invisible(
    finished_cycle: DreamCycle, outsider_api: APIClient
) -> None:
    assert outsider_api.get(f"/api/v1/dreams/{finished_cycle.pk}").status_code == 404
    assert outsider_api.get(f"/api/v1/dreams/{finished_cycle.pk}/report.md").status_code == 404
    assert outsider_api.get("/api/v1/agents/refunds-desk/dreams").status_code == 404


def test_list_shows_the_agents_cycles(demo_api: APIClient, finished_cycle: DreamCycle) -> None:
    response = demo_api.get("/api/v1/agents/refunds-desk/dreams")

    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert row["id"] == finished_cycle.pk
    assert row["status"] == "succeeded"
    assert row["tokens_used"] == finished_cycle.tokens_used > 0


def test_report_has_patterns_suggestions_metrics_and_usage(
    demo_api: APIClient, finished_cycle: DreamCycle
) -> None:
    report = demo_api.get(f"/api/v1/dreams/{finished_cycle.pk}").json()

    assert report["runs_studied"] == finished_cycle.runs.count()
    assert sum(p["count"] for p in report["patterns"]) == report["runs_studied"]
    for pattern in report["patterns"]:
        assert set(pattern["example_run_ids"]) <= set(
            pattern["drafting_run_ids"] + pattern["heldout_run_ids"]
        )
        assert pattern["divergences"]
    assert len(report["suggestions"]) == Proposal.objects.filter(cycle=finished_cycle).count() == 3
    for suggestion in report["suggestions"]:
        (change,) = suggestion["changes"]
        assert change["change"] == "changed"
        assert change["diff"].startswith(f"--- a/{change['document']}")
    calls = ModelCall.objects.filter(cycle=finished_cycle)
    assert report["usage"]["model_calls"] == calls.count()
    assert report["usage"]["tokens"] == sum(c.input_tokens + c.output_tokens for c in calls)
    share = report["usage"]["spend_share"]
    assert share["production_runs"] > 0
    expected = float(
        Decimal(share["dreaming_cost_usd"]) / Decimal(share["production_cost_usd"]) * 100
    )
    assert share["share_of_cost_pct"] == pytest.approx(expected, abs=0.001)


def test_report_shows_experiment_numbers_once_they_exist(finished_cycle: DreamCycle) -> None:
    proposal = Proposal.objects.filter(cycle=finished_cycle).first()
    block = {
        "n": 10,
        "baseline": {"passed": 0, "n": 10, "rate": 0.0, "ci": [0.0, 0.28]},
        "candidate": {"passed": 9, "n": 10, "rate": 0.9, "ci": [0.6, 0.98]},
        "fixes": 9,
        "regressions": 0,
        "mcnemar_p": 0.004,
    }
    Experiment.objects.create(
        agent=proposal.agent,
        proposal=proposal,
        baseline_version=proposal.base_version,
        candidate_version=proposal.candidate_version,
        status="completed",
        stats={
            "verdict": "improves",
            "fidelity": 0.96,
            "target": block,
            "regression": block,
            "harness": {"fidelity": 1.0, "can_judge": True, "summary": "Harness fidelity 100%."},
            "simulated_user": {"share": 0.5, "baseline_agreement": 1.0, "trusted": True},
        },
    )

    report = reports.build_cycle_report(finished_cycle)
    markdown = reports.render_markdown(report, agent_name="Refunds desk")

    suggestion = next(s for s in report["suggestions"] if s["proposal_id"] == proposal.pk)
    assert suggestion["metrics"]["verdict"] == "improves"
    assert suggestion["metrics"]["target"]["candidate_pass_rate"] == 0.9
    assert "pass rate 0% → 90% (9 fixed, 0 broken); verdict: improves" in markdown
    assert suggestion["metrics"]["harness"]["can_judge"] is True  # the API shows the check
    assert suggestion["metrics"]["simulated_user"]["trusted"] is True
    assert "Harness check (no tokens): Harness fidelity 100%." in markdown


def test_markdown_correction_report_downloads(
    demo_api: APIClient, finished_cycle: DreamCycle
) -> None:
    response = demo_api.get(f"/api/v1/dreams/{finished_cycle.pk}/report.md")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert "attachment" in response["Content-Disposition"]
    text = response.content.decode()
    assert text.startswith(f"# Correction report: Refunds desk, dream cycle {finished_cycle.pk}")
    assert "## Decision points that failed" in text
    for pattern in finished_cycle.patterns.all():
        assert f"### {pattern.title}" in text
    assert "```diff" in text
    assert "+- Always verify the order with lookup_order" in text
    assert "## Patterns without an edit" in text


def test_markdown_escapes_table_cells_and_fences() -> None:
    report = {
        "id": 1,
        "status": "succeeded",
        "stop_reason": "",
        "trigger": "manual",
        "window": {"start": None, "end": None},
        "runs_studied": 1,
        "error": "",
        "usage": {"tokens": 1, "model_calls": 1, "cost_usd": "0.0", "spend_share": {}},
        "patterns": [
            {
                "title": "t",
                "count": 1,
                "severity": "low",
                "description": "",
                "grouping_reason": "",
                "divergences": [{"run_id": 1, "step": 0, "explanation": "a | b\nc"}],
            }
        ],
        "suggestions": [
            {
                "proposal_id": 1,
                "title": "t",
                "status": "drafted",
                "base_version": 1,
                "candidate_version": 2,
                "flags": [],
                "rationale": "",
                "changes": [{"document": "d", "change": "changed", "diff": "+```\n"}],
                "metrics": None,
            }
        ],
        "not_drafted": [],
    }

    text = reports.render_markdown(report, agent_name="A")

    assert "| 1 | 0 | a \\| b c |" in text
    assert "````diff\n+```\n````" in text


def test_agent_dreaming_spend_share(demo_api: APIClient, finished_cycle: DreamCycle) -> None:
    response = demo_api.get("/api/v1/agents/refunds-desk/dreaming-spend?days=30")

    assert response.status_code == 200
    body = response.json()
    assert body["dreaming_tokens"] == finished_cycle.tokens_used
    assert body["production_runs"] == finished_cycle.agent.runs.count()
    # The demo dreams on the simulated model: its tokens count, its price is $0, and it says so.
    assert body["share_of_cost_pct"] == 0 and body["dreaming_cost_usd"] == "0.000000"
    assert body["dreaming_free_calls"] == body["dreaming_calls"] > 0
    assert demo_api.get("/api/v1/agents/refunds-desk/dreaming-spend?days=x").status_code == 400


def test_only_members_see_reports(finished_cycle: DreamCycle) -> None:
    stranger = UserFactory(username="stranger")
    member = UserFactory(username="member")
    MembershipFactory(
        user=member, workspace=finished_cycle.agent.workspace, role=Membership.Role.VIEWER
    )

    assert session_client(stranger).get(f"/api/v1/dreams/{finished_cycle.pk}").status_code == 403
    assert session_client(member).get(f"/api/v1/dreams/{finished_cycle.pk}").status_code == 200
    assert APIClient().get(f"/api/v1/dreams/{finished_cycle.pk}").status_code == 401
