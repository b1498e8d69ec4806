"""A stage's minimum runs is at least the canary's minimum sample: refused when configured
lower, and enforced at approval, so a 100%-error canary can never be approved past its stage."""

import random
from datetime import timedelta

import pytest

from rollouts import services
from rollouts.models import Rollout, RolloutStage
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs


@pytest.fixture
def stage_floor():
    """The real floor (overrides the package's stage-mechanics fixture)."""


def test_a_stage_minimum_below_the_canary_sample_is_refused_at_start(agent, owner, settings):
    settings.REVERIE_CANARY_MIN_SAMPLE = 50
    proposal = approved_proposal(agent, actor=owner)

    with pytest.raises(services.RolloutError, match=r"minimum runs \(20\) must be at least"):
        services.start_rollout(
            proposal_id=proposal.pk, actor=owner, min_runs=20, min_duration=timedelta(0)
        )

    assert not Rollout.objects.exists()
    proposal.refresh_from_db()
    assert proposal.status == "approved"


def test_a_default_stage_minimum_below_the_canary_sample_stops_start_up():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERIE_", "DATABASE_"))}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parent.parent.parent,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings", "REVERIE_ROLLOUT_MIN_RUNS": "20"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "REVERIE_ROLLOUT_MIN_RUNS must be >= 50" in result.stderr


def test_a_100_percent_error_canary_is_never_approved_under_the_sample(agent, owner, settings):
    settings.REVERIE_CANARY_MIN_SAMPLE = 50
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=50, min_duration=timedelta(0)
    )
    # A stage stored with a lower minimum (configured before the floor, or a lower setting).
    RolloutStage.objects.filter(rollout=rollout).update(min_runs=5)
    age_stage(rollout)
    rng = random.Random(7)
    seed_runs(agent=agent, version=rollout.to_version, n=20, success=0.0, error=1.0, rng=rng)
    seed_runs(agent=agent, version=rollout.from_version, n=200, success=0.9, rng=rng)

    with pytest.raises(services.StageNotReady, match="20 of 50 canary runs"):
        services.approve_stage(rollout_id=rollout.pk, actor=owner)

    rollout.refresh_from_db()
    assert rollout.current_stage == 0 and rollout.status == Rollout.Status.RUNNING
