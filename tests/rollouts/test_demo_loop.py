"""The loop closes on the embedded default: simulated traffic through the config endpoint and
the runs API, beat's schedule running in-process (eager tasks, as `manage.py rundemo` does), and a
bad canary halts by itself; a good one reaches its minimums and its stage can be approved."""

import random
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings

from agents import traffic
from agents.management.commands.simulate_traffic import in_process_client, local_ingest_key
from agents.models import Run
from agents.routing_api import clear_caches
from config.celery import app as celery_app
from config.celery import start_embedded_beat
from rollouts import services
from rollouts.models import Rollout
from tests.rollouts.fixtures import approved_proposal

pytestmark = pytest.mark.django_db(transaction=True)


def simulator(agent, *, margin: float, seed: int) -> traffic.Simulator:
    return traffic.Simulator(
        client=in_process_client(key=local_ingest_key(agent.slug)),
        agent=agent.slug,
        outcomes=traffic.Outcomes(success=0.85, margin=margin),
        rng=random.Random(seed),
    )


def send(sim: traffic.Simulator, runs: int) -> None:
    traffic.run(sim, rate=100, total=runs, wait=False, out=lambda line: None)


@pytest.fixture
def rollout(agent, owner, settings):
    settings.REVERIE_CONFIG_ROUTING_CACHE_SECONDS = 0  # see routing changes at once
    clear_caches()
    proposal = approved_proposal(agent, actor=owner)
    yield services.start_rollout(
        proposal_id=proposal.pk,
        actor=owner,
        stages=[50, 100],
        min_runs=django_settings.REVERIE_CANARY_MIN_SAMPLE,
        min_duration=timedelta(0),
    )
    clear_caches()


@pytest.fixture
def beat_every_second():
    """Beat's schedule as configured, with the canary check due every second."""
    schedule = dict(celery_app.conf.beat_schedule)
    name = next(n for n, e in schedule.items() if e["task"].endswith("check_rollouts"))
    celery_app.conf.beat_schedule = {**schedule, name: {**schedule[name], "schedule": 1.0}}
    beat = start_embedded_beat()
    yield beat
    beat.stop()
    celery_app.conf.beat_schedule = schedule


def test_a_bad_canary_halts_by_itself_with_beat_in_process(agent, rollout, beat_every_second):
    from django_celery_beat.schedulers import DatabaseScheduler

    # The database schedule `celery beat` runs (dream sweepers included), not a shelve file.
    assert isinstance(beat_every_second.service.scheduler, DatabaseScheduler)
    sim = simulator(agent, margin=-0.5, seed=11)

    send(sim, 240)  # about 120 canary runs, ~20% of them errors (ceiling 10%)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rollout.refresh_from_db()
        if rollout.status != Rollout.Status.RUNNING:
            break
        time.sleep(0.5)

    assert rollout.status == Rollout.Status.HALTED
    assert rollout.halted_automatically
    agent.refresh_from_db()
    assert agent.canary_version_id is None and agent.canary_percent == 0
    before = Run.objects.filter(agent=agent).count()
    send(sim, 60)
    after = Run.objects.filter(agent=agent).order_by("-id")[:60]
    assert Run.objects.filter(agent=agent).count() == before + 60
    assert {r.config_version_id for r in after} == {agent.stable_version_id}


def test_a_good_canary_reaches_its_minimums_and_the_stage_advances(agent, owner, rollout):
    sim = simulator(agent, margin=0.1, seed=5)
    stage = rollout.stages.get(index=0)
    assert not services.stage_readiness(rollout=rollout, stage=stage).ready

    send(sim, 160)

    assert services.stage_readiness(rollout=rollout, stage=stage).ready
    advanced = services.approve_stage(rollout_id=rollout.pk, actor=owner)
    assert advanced.status == Rollout.Status.RUNNING and advanced.current_stage == 1
    agent.refresh_from_db()
    assert agent.canary_percent == 100
