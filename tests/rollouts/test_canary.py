"""Canary analysis: Wilson intervals, the regression test's error rates, and automatic halt."""

import random
from datetime import timedelta

import numpy as np
import pytest

from agents.models import AuditEvent
from dreams.stats import wilson_interval
from rollouts import services
from rollouts.canary import (
    ArmCounts,
    analyse_stage,
    compare_arms,
    look_alpha,
    look_for,
    sequential_comparison,
)
from rollouts.models import Rollout
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs

SEEDS = [11, 23, 37, 41, 59]


def test_wilson_interval_matches_the_published_value():
    # Newcombe (1998), method 3: 8/10 → 0.4902–0.9433; 0/10 → 0–0.2775.
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert [round(x, 4) for x in wilson_interval(0, 10)] == [0.0, 0.2775]
    assert wilson_interval(0, 0) is None


def _draw(rng: np.random.Generator, n: int, p_success: float) -> ArmCounts:
    successes = int(rng.binomial(n, p_success))
    return ArmCounts(
        n=n, labelled=n, successes=successes, errors=0, negative=int(rng.binomial(n, 0.05))
    )


def test_the_test_rarely_halts_when_both_arms_share_the_same_rate():
    rng = np.random.default_rng(2026)
    halts = sum(
        compare_arms(
            stable=_draw(rng, 2000, 0.9), canary=_draw(rng, 200, 0.9), alpha=0.01, min_sample=50
        ).should_halt
        for _ in range(400)
    )
    # α = 0.01 overall (Bonferroni over three one-sided tests); 12/400 is 4 sd above 1%.
    assert halts / 400 <= 0.03


def test_the_test_catches_a_real_drop_in_success_rate():
    rng = np.random.default_rng(7)
    halts = sum(
        compare_arms(
            stable=_draw(rng, 2000, 0.9), canary=_draw(rng, 200, 0.75), alpha=0.01, min_sample=50
        ).verdict
        == "regression"
        for _ in range(200)
    )
    assert halts / 200 >= 0.95


def test_nothing_is_decided_before_the_minimum_sample():
    comparison = compare_arms(
        stable=ArmCounts(n=500, labelled=500, successes=450),
        canary=ArmCounts(n=20, labelled=20, successes=0),
        alpha=0.01,
        min_sample=50,
    )
    assert comparison.verdict == "insufficient" and not comparison.should_halt


@pytest.fixture
def live_rollout(db, agent, owner, settings):
    settings.REVERIE_CANARY_ALPHA = 0.01
    settings.REVERIE_CANARY_MIN_SAMPLE = 50
    settings.REVERIE_CANARY_ERROR_CEILING = 0.10
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=50, min_duration=timedelta(minutes=10)
    )
    age_stage(rollout, minutes=15)
    return rollout


@pytest.mark.django_db
@pytest.mark.parametrize("seed", SEEDS)
def test_auto_halt_fires_on_a_real_regression(live_rollout, agent, seed):
    rng = random.Random(seed)
    seed_runs(
        agent=agent, version=live_rollout.from_version, n=600, success=0.9, rng=rng, negative=0.05
    )
    seed_runs(
        agent=agent, version=live_rollout.to_version, n=150, success=0.7, rng=rng, negative=0.05
    )
    analysis = services.evaluate_rollout(rollout_id=live_rollout.pk)
    assert analysis.comparison.verdict == "regression"
    assert analysis.canary.success_rate < analysis.stable.success_rate
    rollout = Rollout.objects.get(pk=live_rollout.pk)
    agent.refresh_from_db()
    assert rollout.status == Rollout.Status.HALTED and rollout.halted_automatically
    assert "success rate" in rollout.halt_reason
    assert agent.canary_version_id is None and agent.canary_percent == 0
    event = AuditEvent.objects.get(action="rollout.halt")
    assert event.actor is None and event.actor_label == "system" and event.after["automatic"]
    stage = rollout.stages.get(index=0)
    assert stage.metrics["comparison"]["verdict"] == "regression"


@pytest.mark.django_db
@pytest.mark.parametrize("seed", SEEDS)
def test_auto_halt_does_not_fire_when_the_rates_are_the_same(live_rollout, agent, seed):
    rng = random.Random(seed)
    seed_runs(
        agent=agent, version=live_rollout.from_version, n=600, success=0.9, rng=rng, negative=0.05
    )
    seed_runs(
        agent=agent, version=live_rollout.to_version, n=150, success=0.9, rng=rng, negative=0.05
    )
    analysis = services.evaluate_rollout(rollout_id=live_rollout.pk)
    assert analysis.comparison.verdict == "ok", analysis.comparison.p_values
    rollout = Rollout.objects.get(pk=live_rollout.pk)
    assert rollout.status == Rollout.Status.AWAITING_APPROVAL
    agent.refresh_from_db()
    assert agent.canary_percent == 5


@pytest.mark.django_db
def test_a_canary_over_the_error_ceiling_halts_even_without_a_stable_sample(live_rollout, agent):
    rng = random.Random(5)
    seed_runs(agent=agent, version=live_rollout.to_version, n=100, success=0.9, error=0.25, rng=rng)
    analysis = services.evaluate_rollout(rollout_id=live_rollout.pk)
    assert analysis.comparison.verdict == "error_ceiling"
    assert Rollout.objects.get(pk=live_rollout.pk).status == Rollout.Status.HALTED


@pytest.mark.django_db
def test_more_negative_feedback_on_the_canary_halts(live_rollout, agent):
    rng = random.Random(8)
    seed_runs(
        agent=agent, version=live_rollout.from_version, n=600, success=0.9, negative=0.05, rng=rng
    )
    seed_runs(
        agent=agent, version=live_rollout.to_version, n=150, success=0.9, negative=0.25, rng=rng
    )
    analysis = services.evaluate_rollout(rollout_id=live_rollout.pk)
    assert analysis.comparison.verdict == "regression"
    assert "negative feedback" in analysis.comparison.reason


@pytest.mark.django_db
def test_metrics_only_count_runs_inside_the_stage_window(live_rollout, agent):
    stage = live_rollout.stages.get(index=0)
    rng = random.Random(9)
    seed_runs(
        agent=agent,
        version=live_rollout.to_version,
        n=30,
        success=0.0,
        rng=rng,
        started_at=stage.started_at - timedelta(hours=1),
    )
    seed_runs(agent=agent, version=live_rollout.to_version, n=40, success=1.0, rng=rng)
    analysis = analyse_stage(rollout=live_rollout, stage=stage)
    assert analysis.canary.counts.n == 40 and analysis.canary.success_rate == 1.0
    assert analysis.canary.p95_latency_ms is not None and analysis.canary.mean_tokens > 0


@pytest.mark.django_db
def test_approving_a_stage_that_has_regressed_halts_instead(live_rollout, agent, owner):
    rng = random.Random(4)
    seed_runs(agent=agent, version=live_rollout.from_version, n=600, success=0.9, rng=rng)
    seed_runs(agent=agent, version=live_rollout.to_version, n=150, success=0.6, rng=rng)
    rollout = services.approve_stage(rollout_id=live_rollout.pk, actor=owner)
    agent.refresh_from_db()
    assert rollout.status == Rollout.Status.HALTED and agent.canary_percent == 0


def _stage_halts(rng: np.random.Generator, *, p_stable: float, p_canary: float) -> bool:
    """One simulated 5% stage: the periodic check runs every 25 canary runs up to 800."""
    canary = rng.random(800) < p_canary
    stable = rng.random(800 * 19) < p_stable

    def counts(outcomes: np.ndarray) -> ArmCounts:
        n = len(outcomes)
        return ArmCounts(n=n, labelled=n, successes=int(outcomes.sum()))

    for seen in range(25, 801, 25):
        look = look_for(seen, 50)
        look_counts = (None, None) if look is None else (stable[: 19 * look[1]], canary[: look[1]])
        comparison = sequential_comparison(
            full_canary=counts(canary[:seen]),
            look_stable=None if look is None else counts(look_counts[0]),
            look_canary=None if look is None else counts(look_counts[1]),
            alpha=0.01,
            min_sample=50,
            error_ceiling=0.10,
        )
        if comparison.should_halt:
            return True
    return False


def test_looks_double_the_sample_and_spend_alpha_in_halves():
    assert look_for(49, 50) is None
    assert [look_for(n, 50) for n in (50, 99, 100, 399, 400)] == [
        (0, 50),
        (0, 50),
        (1, 100),
        (2, 200),
        (3, 400),
    ]
    assert sum(look_alpha(0.01, k) for k in range(30)) <= 0.01


def test_checking_every_few_runs_keeps_the_false_halt_rate_under_alpha():
    rng = np.random.default_rng(99)
    halts = sum(_stage_halts(rng, p_stable=0.9, p_canary=0.9) for _ in range(150))
    # 32 checks per stage; the sequential rule bounds the stage's false-halt rate by α = 1%.
    assert halts / 150 <= 0.03


def test_a_real_regression_is_caught_within_the_stage():
    rng = np.random.default_rng(100)
    halts = sum(_stage_halts(rng, p_stable=0.9, p_canary=0.8) for _ in range(60))
    assert halts / 60 >= 0.95
