"""No lost background work: a broker outage, a lost message or a dead worker leaves a row in the
database that beat's sweepers find and resume; cycles and experiments can be cancelled and re-run.

The broker outage is real: Celery publishes to a Redis port where nothing listens."""

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.models import Agent
from config.celery import app as celery_app
from dreams import cycles
from dreams.experiments import stale_experiments, start_experiment
from dreams.models import DreamCycle, Experiment, Replay
from dreams.tasks import resume_stale_cycles, resume_stale_experiments

pytestmark = pytest.mark.django_db

NOBODY_LISTENS = "redis://127.0.0.1:1/0"


@pytest.fixture
def broker_down() -> Any:
    """Tasks go to a real broker URL that refuses connections, as when Redis is down."""
    conf = celery_app.conf
    saved = (conf.task_always_eager, conf.broker_url)
    conf.task_always_eager = False
    conf.broker_url = NOBODY_LISTENS
    # Fresh pools, so the next publish connects to the URL above; the old ones come back after.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    yield
    conf.task_always_eager, conf.broker_url = saved
    # Fresh pools on next use. The outage pools are not closed: kombu keeps pools per broker
    # URL process-wide, so closing one would hand the next outage test a closed pool (and it
    # holds no connection: every attempt was refused).
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def broker_back() -> None:
    """The broker answers again: eager tasks, and pools not left closed by the outage."""
    celery_app.conf.task_always_eager = True
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def seeded(db: Any) -> Agent:
    call_command("seed_demo", runs=60, no_dream=True, stdout=io.StringIO())
    return Agent.objects.select_related("stable_version").get(slug="refunds-desk")


@pytest.fixture
def reviewer_api(seeded: Agent) -> Any:
    from rest_framework.test import APIClient

    from agents import services

    _, raw = services.create_api_key(workspace=seeded.workspace, name="recovery", scope="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def later(seconds: int = 3600) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


def test_dream_now_with_the_broker_down_queues_a_cycle_that_beat_resumes(
    seeded, reviewer_api, broker_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = reviewer_api.post(f"/api/v1/agents/{seeded.slug}/dreams")

    assert response.status_code == 202, response.content
    cycle = DreamCycle.objects.get(pk=response.json()["id"])
    assert cycle.status == DreamCycle.Status.QUEUED
    assert cycles.stale_cycles(now=later()) == [cycle.pk]

    # The broker is back; beat's sweeper sends the cycle again and a worker runs it.
    broker_back()
    DreamCycle.objects.filter(pk=cycle.pk).update(created_at=timezone.now() - timedelta(hours=1))
    resume_stale_cycles.apply()
    cycle.refresh_from_db()
    assert cycle.status == DreamCycle.Status.SUCCEEDED, cycle.error


def test_a_fresh_queued_cycle_is_not_sent_twice(seeded):
    cycle = cycles.start_cycle(agent=seeded, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)

    assert cycle.pk not in cycles.stale_cycles()
    assert cycle.pk in cycles.stale_cycles(now=later())


def test_a_cycle_can_be_cancelled_and_rerun_through_the_api(
    seeded, reviewer_api, django_capture_on_commit_callbacks
):
    cycle = cycles.start_cycle(agent=seeded, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)

    cancelled = reviewer_api.post(f"/api/v1/dreams/{cycle.pk}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    cycle.refresh_from_db()
    assert cycle.status == DreamCycle.Status.CANCELLED
    assert reviewer_api.post(f"/api/v1/dreams/{cycle.pk}/cancel").status_code == 409

    with django_capture_on_commit_callbacks(execute=True):
        rerun = reviewer_api.post(f"/api/v1/dreams/{cycle.pk}/rerun")
    assert rerun.status_code == 202, rerun.content
    fresh = DreamCycle.objects.get(pk=rerun.json()["id"])
    assert fresh.pk != cycle.pk
    assert fresh.status == DreamCycle.Status.SUCCEEDED, fresh.error
    assert fresh.runs.count() > 0  # the cancelled cycle's runs were selectable again


def _experiment(agent: Agent, callbacks: Any, *, execute: bool) -> Experiment:
    from agents import services

    stable = agent.stable_version
    candidate = services.create_config_version(
        agent=agent,
        system_prompt=stable.system_prompt + "\nAlways check the refund window first.\n",
        memory_documents=stable.memory_documents,
        tools=stable.tools,
        model=stable.model,
        parent=stable,
    )
    with callbacks(execute=execute):
        experiment = start_experiment(
            agent=agent,
            baseline_version=stable,
            candidate_version=candidate,
            target_runs=list(agent.runs.filter(status="failure")[:4]),
            regression_runs=list(agent.runs.filter(status="success")[:4]),
        )
    experiment.refresh_from_db()
    return experiment


def test_an_experiment_whose_message_was_lost_is_resumed_by_beat(
    seeded, django_capture_on_commit_callbacks
):
    experiment = _experiment(seeded, django_capture_on_commit_callbacks, execute=False)
    assert experiment.status == Experiment.Status.PENDING
    assert stale_experiments() == []
    Experiment.objects.filter(pk=experiment.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        resume_stale_experiments.apply()

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.COMPLETED, experiment.error
    assert not experiment.replays.filter(status=Replay.Status.PENDING).exists()


def test_an_experiment_whose_worker_died_is_resumed_by_beat(
    seeded, django_capture_on_commit_callbacks
):
    experiment = _experiment(seeded, django_capture_on_commit_callbacks, execute=False)
    # A worker claimed it and died before replaying anything.
    Experiment.objects.filter(pk=experiment.pk).update(
        status=Experiment.Status.RUNNING, started_at=timezone.now() - timedelta(hours=2)
    )
    assert stale_experiments() == [experiment.pk]

    with django_capture_on_commit_callbacks(execute=True):
        resume_stale_experiments.apply()

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.COMPLETED, experiment.error


def test_an_experiment_can_be_cancelled_and_rerun_through_the_api(
    seeded, reviewer_api, django_capture_on_commit_callbacks
):
    experiment = _experiment(seeded, django_capture_on_commit_callbacks, execute=False)

    cancelled = reviewer_api.post(f"/api/v1/experiments/{experiment.pk}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["stop_reason"] == "cancelled"
    assert stale_experiments(now=later()) == []  # a cancelled experiment is not resumed

    with django_capture_on_commit_callbacks(execute=True):
        rerun = reviewer_api.post(f"/api/v1/experiments/{experiment.pk}/rerun")
    assert rerun.status_code == 202, rerun.content
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.COMPLETED, experiment.error
    assert reviewer_api.post(f"/api/v1/experiments/{experiment.pk}/rerun").status_code == 409
