"""Batch mode polls from beat: submitting a replay batch ends the chunk task, beat's
`dreams.poll_replay_batches` takes the steps after it, and REVERIE_BATCH_MAX_WAIT_SECONDS
still cancels a batch that does not end (tests/fake_anthropic.py's loopback Message Batches)."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from dreams.experiments import replay_chunk, run_experiment, start_experiment
from dreams.experiments.batches import poll_replay_batch
from dreams.models import Experiment, ModelCall, Replay, ReplayBatch
from dreams.tasks import poll_replay_batches
from tests.dreams.test_experiments import WINDOW, candidate_with
from tests.factories import runs_tagged

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(demo_agent, fake_gateway_settings, settings, django_capture_on_commit_callbacks):
    settings.REVERIE_HARNESS_CHECK = False
    settings.REVERIE_REPLAY_BATCH_MODE = True
    with django_capture_on_commit_callbacks(execute=False):
        experiment = start_experiment(
            agent=demo_agent,
            baseline_version=demo_agent.stable_version,
            candidate_version=candidate_with(demo_agent, WINDOW),
            target_runs=runs_tagged(demo_agent, "past_window", 2),
            regression_runs=runs_tagged(demo_agent, "ok", 2),
        )
        run_experiment(experiment_id=experiment.pk)
    run_ids = sorted(
        set(Replay.objects.filter(experiment=experiment).values_list("run", flat=True))
    )
    return experiment, run_ids


def paths(fake, method, suffix=""):
    return [r for r in fake.requests if r.method == method and r.path.endswith(suffix)]


def test_submitting_the_batch_ends_the_chunk_and_beat_finishes_it(running, fake_gateway_settings):
    fake = fake_gateway_settings
    fake.batch_polls = 2  # each batch answers `in_progress` once
    experiment, run_ids = running

    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)

    batch = ReplayBatch.objects.get(experiment=experiment)
    assert batch.status == "open" and batch.step == 0
    assert len(paths(fake, "POST", "/v1/messages/batches")) == 1
    assert not paths(fake, "GET", "/results")  # the task did not wait for it
    assert not Replay.objects.filter(experiment=experiment).exclude(status="pending").exists()
    assert Replay.objects.filter(experiment=experiment, claimed_at__isnull=True).count() == 0

    assert poll_replay_batch(batch_id=batch.pk) == "open"  # still in progress: nothing read
    assert not paths(fake, "GET", "/results")
    for _ in range(20):
        if poll_replay_batch(batch_id=batch.pk) != "open":
            break
    batch.refresh_from_db()
    experiment.refresh_from_db()
    assert batch.status == "done" and batch.step >= 1  # several steps, one batch each
    assert experiment.status == Experiment.Status.COMPLETED, experiment.error
    assert experiment.stats["target"]["fixes"] == 2
    replay_calls = ModelCall.objects.filter(experiment=experiment, purpose="replay")
    assert replay_calls.count() == sum(
        len(r.body["requests"]) for r in paths(fake, "POST", "/v1/messages/batches")
    )


def test_a_redelivered_chunk_does_not_submit_the_batch_again(running, fake_gateway_settings):
    experiment, run_ids = running

    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)
    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)

    assert ReplayBatch.objects.filter(experiment=experiment).count() == 1
    assert len(paths(fake_gateway_settings, "POST", "/v1/messages/batches")) == 1


def test_a_batch_that_does_not_end_in_time_is_cancelled_and_its_replays_fail(
    running, fake_gateway_settings, settings
):
    fake_gateway_settings.batch_polls = 10**6  # never ends
    settings.REVERIE_BATCH_MAX_WAIT_SECONDS = 600
    experiment, run_ids = running
    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)
    batch = ReplayBatch.objects.get(experiment=experiment)

    assert (
        poll_replay_batch(batch_id=batch.pk, now=timezone.now() + timedelta(seconds=60)) == "open"
    )
    later = timezone.now() + timedelta(seconds=601)
    assert poll_replay_batch(batch_id=batch.pk, now=later) == "cancelled"

    assert len(paths(fake_gateway_settings, "POST", "/cancel")) == 1
    slots = Replay.objects.filter(experiment=experiment)
    assert not slots.exclude(status="failed").exists()
    assert all("did not end within 600s" in s.error for s in slots)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.FAILED  # every replay failed: re-run it


def test_a_cancelled_experiment_cancels_its_open_batch_and_frees_the_slots(
    running, fake_gateway_settings
):
    fake_gateway_settings.batch_polls = 10**6
    experiment, run_ids = running
    replay_chunk(experiment_id=experiment.pk, run_ids=run_ids)
    batch = ReplayBatch.objects.get(experiment=experiment)
    Experiment.objects.filter(pk=experiment.pk).update(status="failed", stop_reason="cancelled")

    poll_replay_batches.apply()

    batch.refresh_from_db()
    assert batch.status == "cancelled"
    assert len(paths(fake_gateway_settings, "POST", "/cancel")) == 1
    assert not Replay.objects.filter(experiment=experiment, claimed_at__isnull=False).exists()


def test_the_batch_poller_is_in_the_beat_schedule():
    entry = django_settings.CELERY_BEAT_SCHEDULE["dreams.poll_replay_batches"]
    assert entry["task"] == "dreams.poll_replay_batches"
    assert entry["schedule"] == max(django_settings.REVERIE_BATCH_POLL_SECONDS, 1.0)
