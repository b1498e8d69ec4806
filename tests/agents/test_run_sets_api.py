"""Run sets over REST: made from run ids, external ids or a runs filter, kept by the runs'
external ids when runs are re-ingested, workspace-scoped, with the standard error shape."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import AuditEvent, Run, RunSet
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


def session(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def runs(agent):
    now = timezone.now()
    return [
        RunFactory(
            agent=agent,
            external_id=f"ticket-{i}",
            status="failure" if i % 2 else "success",
            started_at=now - timedelta(hours=i),
        )
        for i in range(6)
    ]


def test_a_run_set_is_made_from_run_ids_and_lists_its_runs(agent, reviewer, runs):
    client = session(reviewer)
    response = client.post(
        f"/api/v1/agents/{agent.slug}/run-sets",
        {
            "name": "Golden regressions",
            "pinned": True,
            "runs": {"run_ids": [runs[0].pk, runs[1].pk]},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["runs"] == 2 and body["pinned"] is True and body["origin"] == "api"
    listed = client.get(f"/api/v1/agents/{agent.slug}/run-sets").json()["results"]
    assert [s["name"] for s in listed] == ["Golden regressions"]
    members = client.get(f"/api/v1/agents/{agent.slug}/run-sets/{body['id']}/runs").json()
    assert {r["external_id"] for r in members["results"]} == {"ticket-0", "ticket-1"}
    assert AuditEvent.objects.filter(action="run_set.create", target_id=str(body["id"])).exists()


def test_a_run_set_from_a_filter_takes_the_matching_runs(agent, reviewer, runs):
    response = session(reviewer).post(
        f"/api/v1/agents/{agent.slug}/run-sets",
        {"name": "Escalations", "filter": {"status": "failure"}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    run_set = RunSet.objects.get(pk=response.json()["id"])
    assert run_set.origin == "filter" and run_set.origin_detail == {"filter": {"status": "failure"}}
    assert set(run_set.runs().values_list("external_id", flat=True)) == {
        "ticket-1",
        "ticket-3",
        "ticket-5",
    }


def test_membership_survives_the_runs_being_ingested_again(agent, reviewer, runs, api):
    client = session(reviewer)
    created = client.post(
        f"/api/v1/agents/{agent.slug}/run-sets",
        {"name": "Customer A", "runs": {"run_ids": [runs[2].pk]}},
        format="json",
    ).json()
    Run.objects.filter(pk=runs[2].pk).delete()
    members = f"/api/v1/agents/{agent.slug}/run-sets/{created['id']}/runs"
    assert client.get(members).json()["results"] == []
    reposted = api.post(
        "/api/v1/runs",
        {
            "agent": agent.slug,
            "external_id": "ticket-2",
            "status": "failure",
            "messages": [
                {"role": "user", "content": "Refund order 7?"},
                {"role": "assistant", "content": "Done."},
            ],
        },
        format="json",
    )
    assert reposted.status_code == 201, reposted.json()
    again = client.get(members).json()["results"]
    assert [r["id"] for r in again] == [reposted.json()["id"]] != [runs[2].pk]


def test_members_are_added_and_removed_and_the_set_renamed_pinned_and_deleted(
    agent, reviewer, runs
):
    client = session(reviewer)
    made = client.post(f"/api/v1/agents/{agent.slug}/run-sets", {"name": "S"}, format="json").json()
    url = f"/api/v1/agents/{agent.slug}/run-sets/{made['id']}"
    changed = client.post(
        url + "/runs",
        {"add": {"run_ids": [runs[0].pk, runs[1].pk], "external_ids": ["not-yet-sent"]}},
        format="json",
    ).json()
    assert changed["runs"] == 3
    changed = client.post(url + "/runs", {"remove": {"external_ids": ["ticket-0"]}}, format="json")
    assert changed.json()["runs"] == 2
    patched = client.patch(url, {"name": "Renamed", "pinned": True}, format="json").json()
    assert patched["name"] == "Renamed" and patched["pinned"] is True
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


def test_bad_input_is_a_400_naming_the_field(agent, reviewer, runs, other_workspace):
    client = session(reviewer)
    base = f"/api/v1/agents/{agent.slug}/run-sets"
    client.post(base, {"name": "Taken"}, format="json")
    taken = client.post(base, {"name": "Taken"}, format="json")
    assert taken.status_code == 400 and "name" in taken.json()["error"]["fields"]
    foreign = RunFactory(agent__workspace=other_workspace)
    bad = client.post(base, {"name": "X", "runs": {"run_ids": [foreign.pk]}}, format="json")
    assert bad.status_code == 400 and "runs.run_ids" in bad.json()["error"]["fields"]
    bad_time = client.post(base, {"name": "Y", "filter": {"since": "soon"}}, format="json")
    assert bad_time.status_code == 400 and "filter.since" in bad_time.json()["error"]["fields"]


def test_other_workspaces_and_viewers_cannot_touch_a_run_set(agent, reviewer, viewer, outsider):
    made = (
        session(reviewer)
        .post(f"/api/v1/agents/{agent.slug}/run-sets", {"name": "Mine"}, format="json")
        .json()
    )
    url = f"/api/v1/agents/{agent.slug}/run-sets/{made['id']}"
    assert session(outsider).get(url).status_code == 404
    assert session(viewer).get(url).status_code == 200
    refused = session(viewer).patch(url, {"pinned": True}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"]


def test_json_types_are_strict_as_the_schema_says(agent, reviewer):
    """Found by schemathesis: 0 for a boolean and a number for an external id were accepted."""
    client = session(reviewer)
    made = client.post(f"/api/v1/agents/{agent.slug}/run-sets", {"name": "S"}, format="json").json()
    url = f"/api/v1/agents/{agent.slug}/run-sets/{made['id']}"
    not_bool = client.patch(url, {"pinned": 0}, format="json")
    assert not_bool.status_code == 400 and "pinned" in not_bool.json()["error"]["fields"]
    not_text = client.post(url + "/runs", {"remove": {"external_ids": [0]}}, format="json")
    assert not_text.status_code == 400
    assert client.get(url).json()["pinned"] is False
