"""Run sets in the browser: saved from the runs list's filters, listed per agent, pinned,
unpinned and deleted by reviewers; viewers only read."""

import pytest

from agents.models import AuditEvent, RunSet
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(agent):
    return [
        RunFactory(agent=agent, status="failure" if i % 2 else "success", external_id=f"t-{i}")
        for i in range(5)
    ]


def test_the_runs_list_saves_its_filters_as_a_run_set(client, agent, reviewer, runs):
    client.force_login(reviewer)
    page = client.get("/runs/", {"agent": agent.slug, "status": "failure"}).content.decode()
    assert 'id="save-run-set"' in page and 'name="status" value="failure"' in page
    # A filter change swaps the list by htmx: the form comes with it, so it saves what is shown.
    partial = client.get(
        "/runs/", {"agent": agent.slug, "status": "success"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert 'id="save-run-set"' in partial and 'name="status" value="success"' in partial
    response = client.post(
        f"/agents/{agent.slug}/run-sets/",
        {"name": "Escalations", "status": "failure", "pinned": "on"},
    )
    assert response.status_code == 302
    run_set = RunSet.objects.get(name="Escalations")
    assert run_set.pinned and run_set.origin == "filter"
    assert set(run_set.members.values_list("external_id", flat=True)) == {"t-1", "t-3"}
    listing = client.get(response["Location"]).content.decode()
    assert "Escalations" in listing and "pinned" in listing


def test_the_runs_list_offers_no_set_without_an_agent_or_to_viewers(client, agent, viewer, runs):
    client.force_login(viewer)
    assert 'id="save-run-set"' not in client.get("/runs/", {"agent": agent.slug}).content.decode()
    assert client.post(f"/agents/{agent.slug}/run-sets/", {"name": "X"}).status_code == 403


def test_a_reviewer_pins_unpins_and_deletes_a_set(client, agent, reviewer, runs):
    client.force_login(reviewer)
    client.post(f"/agents/{agent.slug}/run-sets/", {"name": "<b>Golden</b>"})
    run_set = RunSet.objects.get()
    page = client.get(f"/agents/{agent.slug}/run-sets/").content.decode()
    assert "<b>Golden</b>" not in page and "&lt;b&gt;Golden&lt;/b&gt;" in page
    url = f"/agents/{agent.slug}/run-sets/{run_set.pk}/"
    client.post(url, {"action": "pin"})
    assert RunSet.objects.get().pinned
    client.post(url, {"action": "unpin"})
    assert not RunSet.objects.get().pinned
    client.post(url, {"action": "delete"})
    assert not RunSet.objects.exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"run_set.create", "run_set.pin", "run_set.delete"} <= actions


def test_a_taken_name_is_refused_on_the_page(client, agent, reviewer, runs):
    client.force_login(reviewer)
    client.post(f"/agents/{agent.slug}/run-sets/", {"name": "Same"})
    again = client.post(f"/agents/{agent.slug}/run-sets/", {"name": "Same"})
    assert again.status_code == 400 and "already has a run set" in again.content.decode()
