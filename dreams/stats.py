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

# The one verdict vocabulary of an experiment: stats, queue, proposal page and API all use it.
IMPROVES, REGRESSES, NO_CHANGE = "improves", "regresses", "no_change"
NOT_MEASURABLE, NOISE = "not_measurable", "noise"
VERDICTS = {
    IMPROVES: "Improves",
    REGRESSES: "Regresses",
    NO_CHANGE: "No change",
    NOT_MEASURABLE: "Not measurable",
    NOISE: "Noise",
}
VERDICT_HELP = {
    IMPROVES: "Significantly more runs fixed than broken.",
    REGRESSES: "Significantly more runs broken than fixed, or stopped early for regressions.",
    NO_CHANGE: "No significant difference between baseline and candidate.",
    NOT_MEASURABLE: "No target replay reached a grade: the effect of this change is unknown.",
    NOISE: (
        "Replay fidelity (of the replays, or of the simulated user that continued them) is too "
        "low to tell a real change from replay noise."
    ),
}
# Approving one of these needs an explicit acknowledgement, kept in the audit log.
NEEDS_ACKNOWLEDGEMENT = frozenset({NOT_MEASURABLE, REGRESSES, NOISE})
# Values stored by earlier versions, read as today's vocabulary.
_LEGACY_VERDICTS = {"insufficient": NOT_MEASURABLE, "harness_unfit": NOT_MEASURABLE}

# The one classification of a replayed run (every list and every count uses `classify`).
FIXED, REGRESSED, FLAKY = "fixed", "regressed", "flaky"
UNCHANGED_PASS, STILL_FAILING = "unchanged_pass", "still_failing"


def normalize_verdict(value: Any) -> str:
    """A stored verdict in today's vocabulary ("" when there is none yet)."""
    text = str(value or "")
    text = _LEGACY_VERDICTS.get(text, text)
    return text if text in VERDICTS else ""


def verdict_aliases(verdict: str) -> list[str]:
    """Stored values that read as `verdict` (for filtering on stored stats)."""
    return [verdict, *(old for old, new in _LEGACY_VERDICTS.items() if new == verdict)]


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
    """Pass rate of one arm over the runs graded in BOTH arms, so the two rates compare the
    same runs (a run only one arm could grade would set 40/60 against 40/40)."""
    graded = [
        getattr(p, arm).outcome
        for p in pairs
        if p.baseline.outcome is not None and p.candidate.outcome is not None
    ]
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


def classify(baseline: ArmReplays, candidate: ArmReplays) -> str:
    """fixed | regressed | flaky | unverifiable | unchanged_pass | still_failing for one run.

    Outcomes are majorities of verifiable replicates; a change of outcome on a run whose
    baseline disagrees with itself proves nothing either way, so it is `flaky`, not a fix."""
    before, after = baseline.outcome, candidate.outcome
    if before is None or after is None:
        return UNVERIFIABLE
    if before == after:
        return UNCHANGED_PASS if before == PASS else STILL_FAILING
    if baseline.flaky:
        return FLAKY
    return FIXED if after == PASS else REGRESSED


_COUNT_KEYS = {
    FIXED: "fixes",
    REGRESSED: "regressions",
    UNCHANGED_PASS: "unchanged_pass",
    STILL_FAILING: "still_failing",
    FLAKY: "flaky",
    UNVERIFIABLE: "unverifiable",
}


def paired_counts(pairs: list[RunPair]) -> dict[str, int]:
    """Runs per class of `classify` (keys: fixes, regressions, …, flaky, unverifiable)."""
    counts = dict.fromkeys(_COUNT_KEYS.values(), 0)
    for pair in pairs:
        counts[_COUNT_KEYS[classify(pair.baseline, pair.candidate)]] += 1
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
    target: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """(verdict, why): one of VERDICTS and a sentence a reviewer can check against the table."""
    scope = target or overall
    if overall["n"] == 0 or min(scope["baseline"]["n"], scope["candidate"]["n"]) == 0:
        return NOT_MEASURABLE, "No target replay reached a grade (pass or fail)."
    if fidelity_value is None:
        return NOT_MEASURABLE, "No baseline replay could be compared with its recording."
    if fidelity_value < threshold:
        return NOISE, (
            f"Baseline replays agree with the recordings {fidelity_value:.0%} of the time "
            f"(threshold {threshold:.0%})."
        )
    if stopped_for_regression:
        return REGRESSES, "Stopped early: regressions outnumbered fixes on the regression sample."
    fixes, regressions = overall["fixes"], overall["regressions"]
    p = overall["mcnemar_p"]
    counted = f"{fixes} fixed, {regressions} regressed"
    if p is not None and p < alpha:
        return (IMPROVES if fixes > regressions else REGRESSES), f"{counted}; McNemar p={p:.3g}."
    discordant = fixes + regressions
    if discordant and 2 * 0.5**discordant >= alpha:
        return NO_CHANGE, f"{counted}: too few changed runs for any result to be significant."
    return NO_CHANGE, f"{counted}; McNemar p={p if p is not None else 1:.3g} ≥ {alpha:g}."


def _untouched_by_simulated_user(pairs: list[RunPair]) -> list[RunPair]:
    """Runs none of whose replays (either arm, any replicate) needed a simulated user."""
    return [p for p in pairs if not any(p.baseline.simulated) and not any(p.candidate.simulated)]


def simulated_user_verdict(
    verdict: str,
    why: str,
    pairs: list[RunPair],
    check: dict[str, Any],
    *,
    threshold: float,
    alpha: float,
) -> tuple[str, str]:
    """The verdict once the simulated user's own check is in (see `simulated_user_check`).

    When the simulator cannot be trusted (baseline replays it continued disagree with their
    recorded outcomes beyond the fidelity threshold), simulated turns are no evidence: the
    verdict is recomputed on the runs no simulated user touched. It stands only if those runs
    alone give the same improves / regresses / no_change; otherwise it is `noise`, and the
    reason says the simulated user cannot be trusted for this agent."""
    if check.get("trusted") is not False or verdict in (NOT_MEASURABLE, NOISE):
        return verdict, why
    distrust = (
        f"The simulated user cannot be trusted for this agent: the baseline replays it "
        f"continued agree with their recorded outcomes only {check['baseline_agreement']:.0%} "
        f"of the time ({check['baseline_agree']} of {check['baseline_n']}; threshold "
        f"{threshold:.0%})"
    )
    real = _untouched_by_simulated_user(pairs)
    if real:
        targets = [p for p in real if p.run_set == "target"]
        alone, alone_why = verdict_of(
            block(real),
            fidelity_value=fidelity(real),
            threshold=threshold,
            alpha=alpha,
            stopped_for_regression=False,
            target=block(targets) if any(p.run_set == "target" for p in pairs) else None,
        )
        if alone == verdict:
            return verdict, (
                f"{alone_why} Counted on the {len(real)} runs no simulated user continued. "
                f"{distrust}, so the {len(pairs) - len(real)} runs it continued are left out."
            )
    return NOISE, (
        f"{distrust}, and the {len(real)} runs it did not continue do not show "
        f"'{VERDICTS[verdict]}' on their own."
    )


def experiment_stats(
    pairs: list[RunPair],
    *,
    patterns: dict[str, set[int]],
    threshold: float,
    alpha: float,
    early_stop: dict[str, Any],
) -> dict[str, Any]:
    overall = block(pairs)
    target = block([p for p in pairs if p.run_set == "target"])
    fid = fidelity(pairs)
    verdict, why = verdict_of(
        overall,
        fidelity_value=fid,
        threshold=threshold,
        alpha=alpha,
        stopped_for_regression=bool(early_stop.get("stopped"))
        and early_stop.get("kind", "regression") == "regression",
        target=target if any(p.run_set == "target" for p in pairs) else None,
    )
    simulated = simulated_user_check(pairs, threshold=threshold)
    before = verdict
    verdict, why = simulated_user_verdict(
        verdict, why, pairs, simulated, threshold=threshold, alpha=alpha
    )
    # The verdict the replays would have given had the simulated user been trusted.
    simulated["verdict_without_check"] = before if verdict != before else ""
    simulated["verdict_without_check_label"] = VERDICTS[before] if verdict != before else ""
    simulated["verdict_on_untouched_runs"] = (
        simulated["trusted"] is False
        and verdict == before
        and verdict not in (NOT_MEASURABLE, NOISE)
    )
    return {
        "fidelity": fid,
        "verdict": verdict,
        "verdict_reason": why,
        "overall": overall,
        "target": target,
        "regression": block([p for p in pairs if p.run_set == "regression"]),
        "patterns": {
            key: block([p for p in pairs if p.run_id in members])
            for key, members in sorted(patterns.items())
        },
        "early_stop": early_stop,
        "simulated_user": simulated,
        "pass_hat_k": {
            "baseline": pass_hat_k(pairs, "baseline"),
            "candidate": pass_hat_k(pairs, "candidate"),
        },
    }
