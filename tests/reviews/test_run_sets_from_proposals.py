"""A proposal's replays saved as a run set (page and API); the Propose-a-change page judges a
change on a run set."""

import pytest
from rest_framework.test import APIClient

from agents import run_sets
from agents.models import RunSet
from dreams.models import Experiment, Proposal
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db


@pytest.fixture
def proposal(agent):
    return reviewable_proposal(agent=agent, runs=4)


def test_the_regressed_replays_are_saved_as_a_pinned_set_from_the_page(client, reviewer, proposal):
    client.force_login(reviewer)
    page = client.get(f"/proposals/{proposal.pk}/", {"outcome": "regressed"}).content.decode()
    assert 'id="save-replays-set"' in page and 'name="outcome" value="regressed"' in page
    response = client.post(
        f"/proposals/{proposal.pk}/run-set/",
        {"name": "Broke in #1", "outcome": "regressed", "pinned": "on"},
    )
    assert response.status_code == 302
    made = RunSet.objects.get(name="Broke in #1")
    experiment = Experiment.objects.get(proposal=proposal)
    regressed = {
        r.run.external_id
        for r in experiment.replays.select_related("run")
        if r.run_set == "regression"
    }
    assert set(made.members.values_list("external_id", flat=True)) == regressed
    assert made.pinned and made.origin == "proposal"
    assert made.origin_detail["proposal"] == proposal.pk


def test_all_replays_are_saved_as_a_set_over_the_api(reviewer, proposal, viewer):
    client = APIClient()
    client.force_authenticate(reviewer)
    response = client.post(
        f"/api/v1/proposals/{proposal.pk}/run-set", {"name": "Everything"}, format="json"
    )
    assert response.status_code == 201, response.json()
    replayed = Experiment.objects.get(proposal=proposal).replays.values("run_id").distinct()
    assert response.json()["runs"] == replayed.count()
    bad = client.post(
        f"/api/v1/proposals/{proposal.pk}/run-set", {"name": "X", "outcome": "nope"}, format="json"
    )
    assert bad.status_code == 400 and "outcome" in bad.json()["error"]["fields"]
    client.force_authenticate(viewer)
    refused = client.post(f"/api/v1/proposals/{proposal.pk}/run-set", {"name": "Y"}, format="json")
    assert refused.status_code == 403


def test_the_propose_page_judges_a_change_on_a_run_set(client, agent, reviewer, proposal):
    failing = list(agent.runs.filter(status="failure")[:2])
    chosen = run_sets.create_run_set(
        agent=agent, actor=None, name="Customer A", external_ids=[r.external_id for r in failing]
    )
    client.force_login(reviewer)
    page = client.get(f"/agents/{agent.slug}/propose/").content.decode()
    assert 'id="run-set-choice"' in page and "Customer A" in page
    response = client.post(
        f"/agents/{agent.slug}/propose/",
        {
            "title": "Be kind",
            "system_prompt": agent.stable_version.system_prompt + "\nBe kind.\n",
            "runs": "set",
            "run_set": str(chosen.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    made = Proposal.objects.get(title="Be kind")
    targets = set(Experiment.objects.get(proposal=made).target_runs.values_list("pk", flat=True))
    assert targets == {r.pk for r in failing}


def test_failures_since_a_date_on_the_propose_page(client, agent, reviewer, proposal):
    client.force_login(reviewer)
    response = client.post(
        f"/agents/{agent.slug}/propose/",
        {
            "title": "Since",
            "system_prompt": agent.stable_version.system_prompt + "\nBe kind.\n",
            "runs": "since",
            "since": "2020-01-01",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Proposal.objects.get(title="Since").metadata["judged_on"] == "failures matching a filter"
