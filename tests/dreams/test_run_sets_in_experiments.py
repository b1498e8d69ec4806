"""Pinned run sets: replayed in every experiment beside the stratified sample, with per-set
results on the experiment, the proposal API and the proposal page; a hand-written proposal
can be judged on a run set."""

import pytest
from rest_framework.test import APIClient

from agents import run_sets
from agents.models import Membership, RunSet
from dreams.models import Experiment, Proposal, Replay
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

RULE = "\nBefore issuing any refund, always check the refund window with check_refund_policy.\n"


@pytest.fixture
def member(demo_agent):
    user = UserFactory(username="pat-reviewer")
    MembershipFactory(user=user, workspace=demo_agent.workspace, role=Membership.Role.REVIEWER)
    client = APIClient()
    client.force_authenticate(user)
    client.user = user
    return client


@pytest.fixture
def golden(demo_agent):
    runs = list(demo_agent.runs.filter(status="success").order_by("-started_at")[:4])
    return run_sets.create_run_set(
        agent=demo_agent,
        actor=None,
        name="Golden regressions",
        pinned=True,
        external_ids=[r.external_id for r in runs],
    )


def _propose(member, agent, **extra):
    return member.post(
        f"/api/v1/agents/{agent.slug}/proposals",
        {
            "title": "Check the window first",
            "documents": {"system_prompt": agent.stable_version.system_prompt + RULE},
            **extra,
        },
        format="json",
    )


def test_a_pinned_set_is_replayed_in_every_experiment_with_per_set_results(
    demo_agent, member, golden, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _propose(member, demo_agent)
    assert response.status_code == 201, response.json()
    experiment = Experiment.objects.get(proposal_id=response.json()["id"])
    members = set(golden.runs().values_list("pk", flat=True))
    replayed = set(experiment.replays.values_list("run_id", flat=True))
    assert members <= replayed  # every pinned run is replayed, whatever else was sampled
    pinned_only = members - set(experiment.regression_runs.values_list("pk", flat=True))
    assert set(experiment.pinned_runs.values_list("pk", flat=True)) == pinned_only
    if pinned_only:
        assert experiment.replays.filter(run_set=Replay.RunSet.PINNED).exists()
    assert experiment.run_sets == [
        {"id": golden.pk, "name": "Golden regressions", "run_ids": sorted(members)}
    ]
    [result] = experiment.stats["run_sets"]
    assert result["name"] == "Golden regressions" and result["n"] == len(members)

    body = member.get(f"/api/v1/proposals/{response.json()['id']}").json()
    assert body["stats"]["run_sets"][0]["n"] == len(members)
    member.force_authenticate(None)
    from django.test import Client

    browser = Client()
    browser.force_login(member.user)
    page = browser.get(f"/proposals/{response.json()['id']}/").content.decode()
    assert "Run set: Golden regressions" in page


def test_an_unpinned_set_is_not_replayed(demo_agent, member, golden):
    run_sets.update_run_set(run_set=golden, actor=None, changes={"pinned": False})
    response = _propose(member, demo_agent)
    experiment = Experiment.objects.get(proposal_id=response.json()["id"])
    assert experiment.run_sets == [] and not experiment.pinned_runs.exists()


def test_a_hand_written_proposal_can_be_judged_on_a_run_set(demo_agent, member):
    failures = list(demo_agent.runs.filter(status="failure").order_by("id")[:3])
    escalations = run_sets.create_run_set(
        agent=demo_agent,
        actor=None,
        name="Escalations",
        external_ids=[r.external_id for r in failures],
    )
    response = _propose(member, demo_agent, runs={"run_set": escalations.pk})
    assert response.status_code == 201, response.json()
    proposal = Proposal.objects.get(pk=response.json()["id"])
    experiment = Experiment.objects.get(proposal=proposal)
    assert set(experiment.target_runs.values_list("pk", flat=True)) == {r.pk for r in failures}
    assert proposal.metadata["judged_on"] == "run set Escalations"

    missing = _propose(member, demo_agent, runs={"run_set": 999999})
    assert missing.status_code == 400 and "runs.run_set" in missing.json()["error"]["fields"]
    assert RunSet.objects.count() == 1
