"""Replay slots are claimed in the database before their model calls: a redelivered chunk
(acks_late redelivery, a resumed experiment) never replays and pays for a slot twice, and a
claim whose worker died is taken over."""

from datetime import timedelta

import pytest
from django.utils import timezone

from dreams.experiments import replay_chunk, run_experiment, start_experiment
from dreams.experiments.execution import claim_slot
from dreams.models import Experiment, ModelCall, Replay
from tests.dreams.test_experiments import WINDOW, candidate_with
from tests.factories import runs_tagged

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(demo_agent, fake_gateway_settings, settings, django_capture_on_commit_callbacks):
    """A running experiment of 2 target + 2 regression runs whose chunks have not run yet."""
    settings.REVERIE_HARNESS_CHECK = False
    with django_capture_on_commit_callbacks(execute=False):
        experiment = start_experiment(
            agent=demo_agent,
            baseline_version=demo_agent.stable_version,
            candidate_version=candidate_with(demo_agent, WINDOW),
            target_runs=runs_tagged(demo_agent, "past_window", 2),
            regression_runs=runs_tagged(demo_agent, "ok", 2),
        )
        run_experiment(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING
    run_ids = sorted(
        set(Replay.objects.filter(experiment=experiment).values_list("run", flat=True))
    )
    return experiment, run_ids


def replay_calls(experiment):
    return ModelCall.objects.filter(experiment=experiment, purpose="replay").count()


def test_the_same_chunk_delivered_twice_makes_its_model_calls_once(running):
    experiment, run_ids = running

    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)
    calls = replay_calls(experiment)
    experiment.refresh_from_db()
    if experiment.status == Experiment.Status.COMPLETED:
        # The redelivery of a finished chunk: nothing left to do.
        Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.RUNNING)
    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)

    assert calls >= 8  # 4 runs × 2 arms, at least one step each
    assert replay_calls(experiment) == calls


def test_a_chunk_redelivered_while_the_first_delivery_holds_its_slots_replays_nothing(running):
    experiment, run_ids = running
    slots = list(Replay.objects.filter(experiment=experiment))
    # The first delivery claimed every slot and is inside its model calls.
    assert all(claim_slot(slot) for slot in slots)

    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)

    assert replay_calls(experiment) == 0
    assert Replay.objects.filter(experiment=experiment, status="pending").count() == len(slots)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING  # the holder finishes it, not this one


def test_a_stale_claim_is_taken_over_and_replayed_once(running, settings):
    experiment, run_ids = running
    slots = list(Replay.objects.filter(experiment=experiment))
    assert all(claim_slot(slot) for slot in slots)
    # Its worker died: the claims grow older than REVERIE_REPLAY_CLAIM_SECONDS.
    lapsed = timezone.now() - timedelta(seconds=settings.REVERIE_REPLAY_CLAIM_SECONDS + 1)
    Replay.objects.filter(experiment=experiment).update(claimed_at=lapsed)

    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.COMPLETED, experiment.error
    assert not Replay.objects.filter(experiment=experiment, status="pending").exists()
    assert ModelCall.objects.filter(experiment=experiment, purpose="replay").values(
        "replay"
    ).distinct().count() == len(slots)


def test_a_slot_is_claimed_once_and_not_for_a_cancelled_experiment(running):
    experiment, _ = running
    first, second = Replay.objects.filter(experiment=experiment)[:2]

    assert claim_slot(first) is True
    assert claim_slot(Replay.objects.get(pk=first.pk)) is False  # a second worker
    Experiment.objects.filter(pk=experiment.pk).update(
        status=Experiment.Status.FAILED, stop_reason="cancelled"
    )
    assert claim_slot(second) is False
