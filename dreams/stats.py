"""Paired statistics of an experiment (SciPy): Wilson intervals, exact McNemar, deltas, fidelity.

A run's outcome in an arm is the majority of its verifiable replicates (a tie is a fail).
Fixes are fail → pass, regressions pass → fail, both only on runs whose arms are verifiable
and whose baseline replicates agree (a run flaky on the baseline is never counted as a fix).
"""

import math
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from scipy.stats import binomtest, norm

PASS, FAIL, UNVERIFIABLE = "pass", "fail", "unverifiable"


def wilson_interval(passed: int, n: int, *, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when n is 0 (no data, no interval).

    The one interval of the codebase: replay arms and rollout canary arms both use it."""
    if n == 0:
        return None
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = passed / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(fixes: int, regressions: int) -> float | None:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs (None if none)."""
    if fixes + regressions == 0:
        return None
    return float(binomtest(fixes, fixes + regressions, 0.5, alternative="two-sided").pvalue)


def regression_p(fixes: int, regressions: int) -> float:
    """One-sided exact p that regressions outnumber fixes by chance (1.0 when no pairs)."""
    if fixes + regressions == 0:
        return 1.0
    return float(binomtest(regressions, fixes + regressions, 0.5, alternative="greater").pvalue)


@dataclass
class ArmReplays:
    verdicts: list[str] = field(default_factory=list)
    off_recording: list[bool] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    latency_ms: list[int] = field(default_factory=list)
    # Per replay: whether a simulated user wrote any of its user turns, and its tokens.
    simulated: list[bool] = field(default_factory=list)
    user_tokens: list[int] = field(default_factory=list)
    errors: int = 0

    @property
    def verifiable(self) -> list[str]:
        return [v for v in self.verdicts if v in (PASS, FAIL)]

    @property
    def outcome(self) -> str | None:
        graded = self.verifiable
        if not graded:
            return None
        passes = graded.count(PASS)
        return PASS if passes * 2 > len(graded) else FAIL

    @property
    def flaky(self) -> bool:
        return len(set(self.verifiable)) > 1

    @property
    def all_pass(self) -> bool:
        return bool(self.verdicts) and all(v == PASS for v in self.verdicts)


@dataclass
class RunPair:
    run_id: int
    run_set: str
    recorded_pass: bool | None
    baseline: ArmReplays = field(default_factory=ArmReplays)
    candidate: ArmReplays = field(default_factory=ArmReplays)


def _arm_block(pairs: list[RunPair], arm: str) -> dict[str, Any]:
    outcomes = [getattr(p, arm).outcome for p in pairs]
    graded = [o for o in outcomes if o is not None]
    passed = graded.count(PASS)
    n = len(graded)
    interval = wilson_interval(passed, n)
    return {
        "passed": passed,
        "n": n,
        "rate": passed / n if n else 0.0,
        "ci": [round(interval[0], 4), round(interval[1], 4)] if interval else None,
    }


def _mean_delta(pairs: list[RunPair], attr: str) -> float:
    deltas = [
        mean(getattr(p.candidate, attr)) - mean(getattr(p.baseline, attr))
        for p in pairs
        if getattr(p.candidate, attr) and getattr(p.baseline, attr)
    ]
    return round(mean(deltas), 6) if deltas else 0.0


def paired_counts(pairs: list[RunPair]) -> dict[str, int]:
    counts = {"fixes": 0, "regressions": 0, "unchanged_pass": 0, "still_failing": 0, "flaky": 0}
    for pair in pairs:
        if pair.baseline.flaky or pair.candidate.flaky:
            counts["flaky"] += 1
        before, after = pair.baseline.outcome, pair.candidate.outcome
        if before is None or after is None:
            continue
        if before == after:
            counts["unchanged_pass" if before == PASS else "still_failing"] += 1
        elif pair.baseline.flaky:
            continue  # a baseline that disagrees with itself proves nothing either way
        elif after == PASS:
            counts["fixes"] += 1
        else:
            counts["regressions"] += 1
    return counts


def block(pairs: list[RunPair]) -> dict[str, Any]:
    counts = paired_counts(pairs)
    n = len(pairs)
    return {
        "n": n,
        "baseline": _arm_block(pairs, "baseline"),
        "candidate": _arm_block(pairs, "candidate"),
        **counts,
        "mcnemar_p": mcnemar_exact(counts["fixes"], counts["regressions"]),
        "off_recording_share": (
            sum(1 for p in pairs if any(p.candidate.off_recording)) / n if n else 0.0
        ),
        "unverifiable_share": (
            sum(
                1
                for p in pairs
                if UNVERIFIABLE in p.candidate.verdicts or UNVERIFIABLE in p.baseline.verdicts
            )
            / n
            if n
            else 0.0
        ),
        "simulated_user_share": simulated_user_share(pairs),
        "errors": sum(p.baseline.errors + p.candidate.errors for p in pairs),
        "tokens_delta_mean": _mean_delta(pairs, "tokens"),
        "cost_delta_mean": _mean_delta(pairs, "cost"),
        "latency_delta_ms_mean": _mean_delta(pairs, "latency_ms"),
    }


def fidelity(pairs: list[RunPair]) -> float | None:
    """Share of baseline replays whose verdict agrees with the recorded outcome."""
    agree = total = 0
    for pair in pairs:
        if pair.recorded_pass is None:
            continue
        for verdict in pair.baseline.verdicts:
            total += 1
            agree += (verdict == PASS) == pair.recorded_pass and verdict != UNVERIFIABLE
    return agree / total if total else None


def simulated_user_share(pairs: list[RunPair]) -> float:
    """Share of replays (both arms, every replicate) in which a simulated user wrote a turn."""
    flags = [f for p in pairs for arm in (p.baseline, p.candidate) for f in arm.simulated]
    return sum(flags) / len(flags) if flags else 0.0


def simulated_user_check(pairs: list[RunPair], *, threshold: float) -> dict[str, Any]:
    """Can the simulator be trusted? Baseline replays that needed a simulated user, against
    their recorded outcomes (the baseline is the recorded config, so they should agree), and
    the simulated user's tokens as a share of all replay tokens."""
    n = agree = 0
    for pair in pairs:
        if pair.recorded_pass is None:
            continue
        for verdict, simulated in zip(
            pair.baseline.verdicts, pair.baseline.simulated, strict=False
        ):
            if simulated:
                n += 1
                agree += verdict != UNVERIFIABLE and (verdict == PASS) == pair.recorded_pass
    user = sum(t for p in pairs for arm in (p.baseline, p.candidate) for t in arm.user_tokens)
    total = user + sum(t for p in pairs for arm in (p.baseline, p.candidate) for t in arm.tokens)
    agreement = agree / n if n else None
    return {
        "share": simulated_user_share(pairs),
        "baseline_n": n,
        "baseline_agree": agree,
        "baseline_agreement": agreement,
        "trusted": None if agreement is None else agreement >= threshold,
        "tokens": user,
        "tokens_share": user / total if total else 0.0,
    }


def pass_hat_k(pairs: list[RunPair], arm: str) -> float:
    """pass^k: share of runs where every replicate passed (τ-bench)."""
    arms = [getattr(p, arm) for p in pairs if getattr(p, arm).verdicts]
    return sum(1 for a in arms if a.all_pass) / len(arms) if arms else 0.0


def verdict_of(
    overall: dict[str, Any],
    *,
    fidelity_value: float | None,
    threshold: float,
    alpha: float,
    stopped_for_regression: bool,
) -> str:
    if overall["n"] == 0 or fidelity_value is None:
        return "insufficient"
    if fidelity_value < threshold:
        return "noise"
    if stopped_for_regression:
        return "regresses"
    fixes, regressions = overall["fixes"], overall["regressions"]
    p = overall["mcnemar_p"]
    if p is not None and p < alpha:
        return "improves" if fixes > regressions else "regresses"
    discordant = fixes + regressions
    if discordant and 2 * 0.5**discordant >= alpha:
        return "insufficient"  # too few changed runs for any result to be significant
    return "no_change"


def experiment_stats(
    pairs: list[RunPair],
    *,
    patterns: dict[str, set[int]],
    threshold: float,
    alpha: float,
    early_stop: dict[str, Any],
) -> dict[str, Any]:
    overall = block(pairs)
    fid = fidelity(pairs)
    return {
        "fidelity": fid,
        "verdict": verdict_of(
            overall,
            fidelity_value=fid,
            threshold=threshold,
            alpha=alpha,
            stopped_for_regression=bool(early_stop.get("stopped"))
            and early_stop.get("kind", "regression") == "regression",
        ),
        "overall": overall,
        "target": block([p for p in pairs if p.run_set == "target"]),
        "regression": block([p for p in pairs if p.run_set == "regression"]),
        "patterns": {
            key: block([p for p in pairs if p.run_id in members])
            for key, members in sorted(patterns.items())
        },
        "early_stop": early_stop,
        "simulated_user": simulated_user_check(pairs, threshold=threshold),
        "pass_hat_k": {
            "baseline": pass_hat_k(pairs, "baseline"),
            "candidate": pass_hat_k(pairs, "candidate"),
        },
    }
