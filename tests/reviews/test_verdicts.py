"""Honest verdicts: one vocabulary in queue, page and API; risky approvals need an acknowledgement;
the replay list classifies runs as the statistics do; skipped replays are not "pending"."""

import pytest
from rest_framework.test import APIClient

from agents.models import AuditEvent, Run
from dreams.models import Experiment, Proposal, Replay
from tests.factories import ReplayFactory, RunFactory, reviewable_proposal

pytestmark = pytest.mark.django_db


def session(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _set_verdict(proposal: Proposal, verdict: str, **extra) -> Experiment:
    experiment = Experiment.objects.filter(proposal=proposal).latest("id")
    experiment.stats = {**experiment.stats, "verdict": verdict, **extra}
    experiment.save(update_fields=["stats"])
    return experiment


@pytest.fixture
def measurable(agent):
    return reviewable_proposal(agent=agent, runs=1, title="Measurable change")


@pytest.fixture
def unmeasurable(agent):
    proposal = reviewable_proposal(agent=agent, runs=1, title="Unmeasurable change")
    _set_verdict(proposal, "not_measurable", verdict_reason="No target replay reached a grade.")
    return proposal


def test_queue_has_a_verdict_column_and_filter(client, reviewer, measurable, unmeasurable):
    # A stored legacy value reads as the one vocabulary.
    legacy = reviewable_proposal(agent=measurable.agent, runs=1, title="Legacy insufficient")
    _set_verdict(legacy, "insufficient")
    client.force_login(reviewer)

    page = client.get("/").content.decode()
    assert ">Verdict</th>" in page
    assert 'data-verdict="not_measurable">Not measurable</span>' in page

    filtered = client.get("/?verdict=not_measurable").content.decode()
    assert "Unmeasurable change" in filtered and "Legacy insufficient" in filtered
    assert "Measurable change" not in filtered
    assert '<option value="not_measurable" selected>' in filtered


def test_api_filters_by_verdict_and_reports_the_vocabulary(reviewer, measurable, unmeasurable):
    client = session(reviewer)
    rows = client.get("/api/v1/proposals?verdict=not_measurable").json()["results"]
    assert [r["id"] for r in rows] == [unmeasurable.pk]
    assert rows[0]["verdict"] == "not_measurable"
    bad = client.get("/api/v1/proposals?verdict=insufficient")
    assert bad.status_code == 400 and "verdict" in bad.json()["error"]["fields"]


def test_approving_an_unmeasurable_proposal_needs_an_acknowledgement_page(
    client, reviewer, unmeasurable
):
    client.force_login(reviewer)
    page = client.get(f"/proposals/{unmeasurable.pk}/").content.decode()
    assert 'name="acknowledge_verdict"' in page and "No target replay reached a grade" in page

    refused = client.post(f"/proposals/{unmeasurable.pk}/decide/", {"action": "approve"})
    assert refused.status_code == 400
    assert "Acknowledge this to approve anyway" in refused.content.decode()
    assert Proposal.objects.get(pk=unmeasurable.pk).status == "ready"

    done = client.post(
        f"/proposals/{unmeasurable.pk}/decide/", {"action": "approve", "acknowledge_verdict": "1"}
    )
    assert done.status_code == 302
    assert Proposal.objects.get(pk=unmeasurable.pk).status == "approved"
    event = AuditEvent.objects.get(action="proposal.verdict_acknowledged")
    assert event.actor == reviewer and event.after["verdict"] == "not_measurable"


def test_approving_a_regressing_proposal_by_api_needs_acknowledge_verdict(reviewer, measurable):
    _set_verdict(measurable, "regresses")
    url = f"/api/v1/proposals/{measurable.pk}/decisions"
    client = session(reviewer)

    refused = client.post(url, {"action": "approve"}, format="json")
    assert refused.status_code == 400
    assert "acknowledge_verdict" in refused.json()["error"]["fields"]

    done = client.post(url, {"action": "approve", "acknowledge_verdict": True}, format="json")
    assert done.status_code == 200 and done.json()["status"] == "approved"
    assert AuditEvent.objects.filter(
        action="proposal.verdict_acknowledged", target_id=str(measurable.pk)
    ).exists()


def test_an_improving_proposal_needs_no_acknowledgement(client, reviewer, measurable):
    client.force_login(reviewer)
    assert (
        'name="acknowledge_verdict"'
        not in client.get(f"/proposals/{measurable.pk}/").content.decode()
    )
    client.post(f"/proposals/{measurable.pk}/decide/", {"action": "approve"})
    assert Proposal.objects.get(pk=measurable.pk).status == "approved"
    assert not AuditEvent.objects.filter(action="proposal.verdict_acknowledged").exists()


def test_a_run_flaky_on_the_baseline_is_flaky_in_the_list_not_fixed(client, reviewer, measurable):
    experiment = Experiment.objects.filter(proposal=measurable).latest("id")
    run = RunFactory(agent=measurable.agent, status=Run.Status.FAILURE, external_id="flaky-run")
    for replicate, verdict in enumerate(["fail", "pass", "fail"]):
        ReplayFactory(
            experiment=experiment,
            run=run,
            arm=Replay.Arm.BASELINE,
            replicate=replicate,
            verdict=verdict,
        )
    for replicate in range(3):
        ReplayFactory(experiment=experiment, run=run, replicate=replicate, verdict="pass")
    client.force_login(reviewer)

    fixed = client.get(f"/proposals/{measurable.pk}/?outcome=fixed").content.decode()
    flaky = client.get(f"/proposals/{measurable.pk}/?outcome=flaky").content.decode()
    assert "flaky-run" not in fixed
    assert "flaky-run" in flaky
    api_rows = session(reviewer).get(f"/api/v1/proposals/{measurable.pk}").json()["replays"]
    assert {r["external_id"]: r["outcome"] for r in api_rows}["flaky-run"] == "flaky"


def test_replays_left_pending_by_a_finished_experiment_are_skipped(client, reviewer, measurable):
    experiment = Experiment.objects.filter(proposal=measurable).latest("id")
    run = RunFactory(agent=measurable.agent, external_id="never-replayed")
    ReplayFactory(experiment=experiment, run=run, status=Replay.Status.PENDING, verdict="")
    client.force_login(reviewer)

    page = client.get(f"/proposals/{measurable.pk}/").content.decode()
    assert 'data-outcome="skipped"' in page and 'data-outcome="pending"' not in page

    Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.RUNNING)
    running = client.get(f"/proposals/{measurable.pk}/").content.decode()
    assert 'data-outcome="pending"' in running


def test_a_set_with_no_graded_runs_shows_no_rate_and_no_interval(client, reviewer, unmeasurable):
    experiment = Experiment.objects.filter(proposal=unmeasurable).latest("id")
    empty = {"passed": 0, "n": 0, "rate": 0.0, "ci": None}
    target = {**experiment.stats["target"], "baseline": empty, "candidate": empty}
    _set_verdict(unmeasurable, "not_measurable", target=target)
    client.force_login(reviewer)

    page = client.get(f"/proposals/{unmeasurable.pk}/").content.decode()
    assert "no graded runs" in page
    assert "0–0%" not in page
    queue = client.get("/").content.decode()
    assert "n=0 of" in queue
