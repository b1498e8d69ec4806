"""The rollout REST API: start, read with analysis, approve (409 with reasons), halt, tenancy."""

import random
from datetime import timedelta

import pytest

from rollouts import services
from rollouts.models import Rollout
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs

pytestmark = pytest.mark.django_db


def test_an_api_key_starts_a_rollout_of_an_approved_proposal(api, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    response = api.post(
        "/api/v1/rollouts", {"proposal": proposal.pk, "stages": [10, 100]}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "running" and body["stage"] == 1
    assert [s["percent"] for s in body["stages"]] == [10, 100]
    assert body["not_ready"]  # the defaults need 100 runs and 30 minutes
    agent.refresh_from_db()
    assert agent.canary_percent == 10
    again = api.post("/api/v1/rollouts", {"proposal": proposal.pk}, format="json")
    assert again.status_code == 409


def test_approve_answers_409_with_the_reasons_until_the_minimums_are_met(api, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=5, min_duration=timedelta(minutes=1)
    )
    response = api.post(f"/api/v1/rollouts/{rollout.pk}/approve", {}, format="json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "stage_not_ready" and len(error["fields"]["reasons"]) == 2
    age_stage(rollout, minutes=2)
    seed_runs(agent=agent, version=rollout.to_version, n=5, success=1.0, rng=random.Random(1))
    response = api.post(f"/api/v1/rollouts/{rollout.pk}/approve", {}, format="json")
    assert response.status_code == 200 and response.json()["stage"] == 2
    assert response.json()["analysis"]["canary"]["counts"]["n"] == 0  # a new stage, a new window


def test_halt_over_the_api_is_audited_with_the_reason(api, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(proposal_id=proposal.pk, actor=owner)
    response = api.post(f"/api/v1/rollouts/{rollout.pk}/halt", {"reason": "pager"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "halted"
    from agents.models import AuditEvent

    event = AuditEvent.objects.get(action="rollout.halt")
    assert event.comment == "pager" and event.actor_label.startswith("API key")


def test_rollouts_of_another_workspace_are_invisible(outsider_api, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(proposal_id=proposal.pk, actor=owner)
    assert outsider_api.get(f"/api/v1/rollouts/{rollout.pk}").status_code == 404
    assert outsider_api.post(f"/api/v1/rollouts/{rollout.pk}/halt", {}).status_code == 404
    assert outsider_api.get("/api/v1/rollouts").json()["results"] == []
    assert outsider_api.post("/api/v1/rollouts", {"proposal": proposal.pk}).status_code == 404
    assert Rollout.objects.get(pk=rollout.pk).is_active


def test_a_viewer_can_read_but_not_act(client, viewer, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(proposal_id=proposal.pk, actor=owner)
    client.force_login(viewer)
    assert client.get(f"/api/v1/rollouts/{rollout.pk}").status_code == 200
    assert client.post(f"/api/v1/rollouts/{rollout.pk}/halt").status_code == 403


def test_the_list_filters_by_agent_and_status(api, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(proposal_id=proposal.pk, actor=owner)
    services.halt_rollout(rollout_id=rollout.pk, actor=owner, reason="x")
    assert [r["id"] for r in api.get("/api/v1/rollouts?status=halted").json()["results"]] == [
        rollout.pk
    ]
    assert api.get("/api/v1/rollouts?status=running").json()["results"] == []
    assert api.get("/api/v1/rollouts?agent=nope").json()["results"] == []
