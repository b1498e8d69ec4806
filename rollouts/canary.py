"""Canary analysis: compare the stable and canary arms on live runs in a stage's window.

Each arm is the set of runs tagged with its config version that started inside the stage.
The canary regresses when a one-sided Fisher exact test finds it significantly worse on
success rate, error rate or negative feedback (Bonferroni over the three), or when its error
rate is over REVERIE_CANARY_ERROR_CEILING (a guardrail, checked on every look).

The check runs every minute, and testing the growing sample each time at a fixed α would
halt healthy canaries far more often than α. So the test is sequential with a rule fixed in
advance: looks happen at canary sample sizes m_k = min_sample · 2^k, look k spends
α / 2^(k+1) and is computed on the runs up to the m_k-th canary run only. Re-checking the same
look gives the same answer, and the looks' α sum to at most REVERIE_CANARY_ALPHA for the
whole stage (a union bound), however often the periodic task runs.
"""

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, Exists, F, OuterRef, Q
from django.utils import timezone

from agents.models import Feedback, Run
from dreams.stats import wilson_interval
from rollouts.models import Rollout, RolloutStage


@dataclass
class ArmCounts:
    """The counts the tests need; `labelled` excludes runs whose outcome is still unknown."""

    n: int = 0
    labelled: int = 0
    successes: int = 0
    errors: int = 0
    negative: int = 0


@dataclass
class ArmMetrics:
    version: int | None
    counts: ArmCounts
    success_rate: float | None = None
    success_ci: tuple[float, float] | None = None
    error_rate: float | None = None
    error_ci: tuple[float, float] | None = None
    negative_rate: float | None = None
    negative_ci: tuple[float, float] | None = None
    mean_tokens: float | None = None
    p95_latency_ms: float | None = None


@dataclass
class Comparison:
    """The verdict of one analysis: `regression` and `error_ceiling` halt the rollout."""

    verdict: str  # "insufficient" | "ok" | "regression" | "error_ceiling"
    reason: str = ""
    p_values: dict[str, float] = field(default_factory=dict)
    alpha: float = 0.0
    min_sample: int = 0
    look: int | None = None
    look_size: int | None = None

    @property
    def should_halt(self) -> bool:
        return self.verdict in ("regression", "error_ceiling")


@dataclass
class StageAnalysis:
    stable: ArmMetrics
    canary: ArmMetrics
    comparison: Comparison
    window_start: datetime | None
    window_end: datetime
    look_window_end: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window_start"] = self.window_start.isoformat() if self.window_start else None
        data["window_end"] = self.window_end.isoformat()
        data["look_window_end"] = self.look_window_end.isoformat() if self.look_window_end else None
        data["should_halt"] = self.comparison.should_halt
        return data


def compare_arms(
    *,
    stable: ArmCounts,
    canary: ArmCounts,
    alpha: float | None = None,
    min_sample: int | None = None,
    error_ceiling: float | None = None,
) -> Comparison:
    """Decide whether the canary regressed against the stable arm."""
    alpha = settings.REVERIE_CANARY_ALPHA if alpha is None else alpha
    min_sample = settings.REVERIE_CANARY_MIN_SAMPLE if min_sample is None else min_sample
    ceiling = settings.REVERIE_CANARY_ERROR_CEILING if error_ceiling is None else error_ceiling
    # The ceiling needs only the canary's sample: at 100% the stable arm gets little traffic.
    if canary.labelled >= min_sample and canary.errors / canary.labelled > ceiling:
        return Comparison(
            verdict="error_ceiling",
            reason=f"canary error rate {canary.errors / canary.labelled:.1%} is over the "
            f"ceiling {ceiling:.1%}",
            alpha=alpha,
            min_sample=min_sample,
        )
    if canary.labelled < min_sample or stable.labelled < min_sample:
        return Comparison(
            verdict="insufficient",
            reason=f"needs {min_sample} labelled runs on each arm "
            f"(stable {stable.labelled}, canary {canary.labelled})",
            alpha=alpha,
            min_sample=min_sample,
        )
    # Worse = fewer successes, more errors, more negative feedback: one-sided tests.
    tests = {
        "success": (
            [
                [canary.successes, canary.labelled - canary.successes],
                [stable.successes, stable.labelled - stable.successes],
            ],
            "less",
        ),
        "error": (
            [
                [canary.errors, canary.labelled - canary.errors],
                [stable.errors, stable.labelled - stable.errors],
            ],
            "greater",
        ),
        "negative_feedback": (
            [
                [canary.negative, canary.n - canary.negative],
                [stable.negative, stable.n - stable.negative],
            ],
            "greater",
        ),
    }
    from scipy.stats import fisher_exact  # heavy import, only where a test runs

    per_test_alpha = alpha / len(tests)
    p_values = {
        name: float(fisher_exact(table, alternative=side).pvalue)
        for name, (table, side) in tests.items()
    }
    failed = [name for name, p in p_values.items() if p < per_test_alpha]
    if failed:
        worst = min(failed, key=lambda name: p_values[name])
        label = worst.replace("_", " ")
        return Comparison(
            verdict="regression",
            reason=f"canary {label} rate is significantly worse than stable "
            f"(Fisher exact p={p_values[worst]:.2g} < α/{len(tests)}={per_test_alpha:.2g})",
            p_values=p_values,
            alpha=alpha,
            min_sample=min_sample,
        )
    return Comparison(verdict="ok", p_values=p_values, alpha=alpha, min_sample=min_sample)


def _p95(values: list[int | None]) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    rank = max(1, math.ceil(0.95 * len(ordered)))  # nearest-rank percentile
    return float(ordered[rank - 1])


def _arm_runs(*, agent_id: int, version_id: int, since: datetime | None, until: datetime) -> Any:
    runs = Run.objects.filter(
        agent_id=agent_id, config_version_id=version_id, started_at__lte=until
    )
    if since is not None:
        runs = runs.filter(started_at__gte=since)
    return runs


def _arm_counts(runs: Any) -> tuple[ArmCounts, dict[str, Any]]:
    """The arm's counts (and the raw aggregate, for the mean tokens): one query."""
    negative = Exists(Feedback.objects.filter(run=OuterRef("pk"), rating=Feedback.Rating.NEGATIVE))
    agg = runs.annotate(has_negative=negative).aggregate(
        n=Count("pk"),
        labelled=Count("pk", filter=~Q(status=Run.Status.UNKNOWN)),
        successes=Count("pk", filter=Q(status=Run.Status.SUCCESS)),
        errors=Count("pk", filter=Q(status=Run.Status.ERROR)),
        negative=Count("pk", filter=Q(has_negative=True)),
        mean_tokens=Avg(
            F("input_tokens")
            + F("output_tokens")
            + F("cache_read_tokens")
            + F("cache_write_tokens")
        ),
    )
    counts = ArmCounts(
        n=agg["n"],
        labelled=agg["labelled"],
        successes=agg["successes"],
        errors=agg["errors"],
        negative=agg["negative"],
    )
    return counts, agg


def _arm_metrics(
    *, agent_id: int, version_id: int, number: int | None, since: datetime | None, until: datetime
) -> ArmMetrics:
    runs = _arm_runs(agent_id=agent_id, version_id=version_id, since=since, until=until)
    counts, agg = _arm_counts(runs)
    latencies = list(runs.exclude(latency_ms=None).values_list("latency_ms", flat=True))
    metrics = ArmMetrics(version=number, counts=counts)
    if counts.labelled:
        metrics.success_rate = counts.successes / counts.labelled
        metrics.success_ci = wilson_interval(counts.successes, counts.labelled)
        metrics.error_rate = counts.errors / counts.labelled
        metrics.error_ci = wilson_interval(counts.errors, counts.labelled)
    if counts.n:
        metrics.negative_rate = counts.negative / counts.n
        metrics.negative_ci = wilson_interval(counts.negative, counts.n)
        metrics.mean_tokens = float(agg["mean_tokens"] or 0)
    metrics.p95_latency_ms = _p95(latencies)
    return metrics


def look_for(n: int, min_sample: int) -> tuple[int, int] | None:
    """(k, m_k): the last look reached with `n` canary runs, m_k = min_sample · 2^k; None before."""
    if n < min_sample:
        return None
    k = int(math.floor(math.log2(n / min_sample)))
    while min_sample * 2 ** (k + 1) <= n:  # guard against float rounding
        k += 1
    while k > 0 and min_sample * 2**k > n:
        k -= 1
    return k, min_sample * 2**k


def look_alpha(alpha: float, k: int) -> float:
    """α spent at look k: α/2, α/4, … so all looks together spend at most α."""
    return alpha / 2.0 ** (k + 1)


def sequential_comparison(
    *,
    full_canary: ArmCounts,
    look_stable: ArmCounts | None,
    look_canary: ArmCounts | None,
    alpha: float | None = None,
    min_sample: int | None = None,
    error_ceiling: float | None = None,
) -> Comparison:
    """The stage verdict: the error ceiling on all canary runs, the test at the last look."""
    alpha = settings.REVERIE_CANARY_ALPHA if alpha is None else alpha
    min_sample = settings.REVERIE_CANARY_MIN_SAMPLE if min_sample is None else min_sample
    ceiling = settings.REVERIE_CANARY_ERROR_CEILING if error_ceiling is None else error_ceiling
    guard = compare_arms(
        stable=ArmCounts(),
        canary=full_canary,
        alpha=alpha,
        min_sample=min_sample,
        error_ceiling=ceiling,
    )
    if guard.verdict == "error_ceiling":
        return guard
    look = look_for(full_canary.labelled, min_sample)
    if look is None or look_stable is None or look_canary is None:
        return Comparison(
            verdict="insufficient",
            reason=f"needs {min_sample} labelled canary runs for the first look "
            f"({full_canary.labelled} so far)",
            alpha=alpha,
            min_sample=min_sample,
        )
    k, size = look
    result = compare_arms(
        stable=look_stable,
        canary=look_canary,
        alpha=look_alpha(alpha, k),
        min_sample=min_sample,
        error_ceiling=1.0,  # already checked on all runs above
    )
    result.look, result.look_size = k, size
    if result.verdict == "insufficient":
        result.reason = f"look {k + 1} (first {size} canary runs): {result.reason}"
    return result


def analyse_stage(*, rollout: Rollout, stage: RolloutStage) -> StageAnalysis:
    """Per-arm metrics for `stage`'s window and the sequential verdict."""
    until = stage.ended_at or timezone.now()
    since = stage.started_at
    arms = {
        "stable": (rollout.from_version_id, rollout.from_version.number),
        "canary": (rollout.to_version_id, rollout.to_version.number),
    }
    full = {
        arm: _arm_metrics(
            agent_id=rollout.agent_id, version_id=vid, number=num, since=since, until=until
        )
        for arm, (vid, num) in arms.items()
    }
    min_sample = settings.REVERIE_CANARY_MIN_SAMPLE
    look = look_for(full["canary"].counts.labelled, min_sample)
    look_end = None
    look_counts: dict[str, ArmCounts | None] = {"stable": None, "canary": None}
    if look is not None:
        canary_runs = Run.objects.filter(
            agent_id=rollout.agent_id,
            config_version_id=rollout.to_version_id,
            started_at__lte=until,
        ).exclude(status=Run.Status.UNKNOWN)
        if since is not None:
            canary_runs = canary_runs.filter(started_at__gte=since)
        look_end = (
            canary_runs.order_by("started_at", "id")
            .values_list("started_at", flat=True)[look[1] - 1 : look[1]]
            .get()
        )
        for arm, (vid, _) in arms.items():
            # The look needs counts only (no latencies): one query an arm.
            look_counts[arm] = _arm_counts(
                _arm_runs(agent_id=rollout.agent_id, version_id=vid, since=since, until=look_end)
            )[0]
    comparison = sequential_comparison(
        full_canary=full["canary"].counts,
        look_stable=look_counts["stable"],
        look_canary=look_counts["canary"],
        min_sample=min_sample,
    )
    return StageAnalysis(
        stable=full["stable"],
        canary=full["canary"],
        comparison=comparison,
        window_start=since,
        window_end=until,
        look_window_end=look_end,
    )
