"""Statistics against reference values computed independently here (math only, no SciPy)."""

import math

import pytest

from dreams import stats
from dreams.stats import ArmReplays, RunPair

Z95 = 1.959963984540054


def reference_mcnemar(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def reference_wilson(x: int, n: int) -> tuple[float, float]:
    p = x / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("b", "c"), [(10, 2), (7, 0), (3, 3), (1, 12), (25, 14)])
def test_exact_mcnemar_matches_the_binomial_reference(b, c):
    assert stats.mcnemar_exact(b, c) == pytest.approx(reference_mcnemar(b, c), rel=1e-12)


def test_mcnemar_known_table():
    # 10 fixes vs 2 regressions: p = 2 * (1 + 12 + 66) / 4096
    assert stats.mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert stats.mcnemar_exact(0, 0) is None


@pytest.mark.parametrize(("x", "n"), [(8, 10), (0, 12), (12, 12), (37, 91)])
def test_wilson_interval_matches_the_formula(x, n):
    lo, hi = stats.wilson_interval(x, n)
    ref_lo, ref_hi = reference_wilson(x, n)
    assert lo == pytest.approx(max(0.0, ref_lo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, ref_hi), abs=1e-12)


def pair(run_id, baseline, candidate, *, run_set="target", recorded=None):
    return RunPair(
        run_id=run_id,
        run_set=run_set,
        recorded_pass=recorded,
        baseline=ArmReplays(
            verdicts=list(baseline),
            tokens=[100] * len(baseline),
            cost=[0.01] * len(baseline),
            latency_ms=[1000] * len(baseline),
            off_recording=[False] * len(baseline),
        ),
        candidate=ArmReplays(
            verdicts=list(candidate),
            tokens=[130] * len(candidate),
            cost=[0.02] * len(candidate),
            latency_ms=[900] * len(candidate),
            off_recording=[True] * len(candidate),
        ),
    )


def test_block_counts_fixes_regressions_and_deltas():
    pairs = [
        pair(1, ["fail"], ["pass"]),
        pair(2, ["fail"], ["pass"]),
        pair(3, ["pass"], ["fail"]),
        pair(4, ["pass"], ["pass"]),
        pair(5, ["fail"], ["fail"]),
        pair(6, ["fail"], ["unverifiable"]),
    ]
    block = stats.block(pairs)

    assert (
        block["fixes"],
        block["regressions"],
        block["unchanged_pass"],
        block["still_failing"],
    ) == (2, 1, 1, 1)
    # Both rates are over the 5 runs graded in both arms (run 6 has no candidate grade).
    assert block["baseline"]["passed"] == 2 and block["baseline"]["n"] == 5
    assert block["candidate"]["passed"] == 3 and block["candidate"]["n"] == 5
    assert block["mcnemar_p"] == pytest.approx(reference_mcnemar(2, 1))
    assert block["unverifiable_share"] == pytest.approx(1 / 6)
    assert block["tokens_delta_mean"] == pytest.approx(30)
    assert block["latency_delta_ms_mean"] == pytest.approx(-100)
    assert block["cost_delta_mean"] == pytest.approx(0.01)


def test_a_run_flaky_on_the_baseline_is_not_a_fix():
    pairs = [
        pair(1, ["fail", "pass", "fail"], ["pass", "pass", "pass"]),
        pair(2, ["fail"] * 3, ["pass"] * 3),
    ]
    block = stats.block(pairs)

    assert block["fixes"] == 1 and block["flaky"] == 1
    assert stats.pass_hat_k(pairs, "candidate") == 1.0
    assert stats.pass_hat_k(pairs, "baseline") == 0.0


def test_low_fidelity_makes_the_verdict_noise():
    pairs = [pair(i, ["pass"], ["pass"], recorded=(i % 2 == 0)) for i in range(10)]
    result = stats.experiment_stats(
        pairs, patterns={}, threshold=0.9, alpha=0.05, early_stop={"stopped": False, "reason": ""}
    )

    assert result["fidelity"] == pytest.approx(0.5)
    assert result["verdict"] == "noise"


def test_verdicts_improves_too_few_and_per_pattern_blocks():
    many = [pair(i, ["fail"], ["pass"], recorded=False) for i in range(8)]
    few = many[:3]
    kwargs = {"threshold": 0.9, "alpha": 0.05, "early_stop": {"stopped": False, "reason": ""}}

    improves = stats.experiment_stats(many, patterns={"7": {0, 1}}, **kwargs)
    too_few = stats.experiment_stats(few, patterns={}, **kwargs)

    assert improves["verdict"] == "improves"
    assert improves["patterns"]["7"]["fixes"] == 2 and improves["patterns"]["7"]["n"] == 2
    # 3 fixes can never reach p < 0.05: no (significant) change, and the reason says why.
    assert too_few["verdict"] == "no_change"
    assert "too few changed runs" in too_few["verdict_reason"]


def test_regression_p_is_one_sided():
    assert stats.regression_p(0, 5) == pytest.approx(1 / 32)
    assert stats.regression_p(5, 0) == pytest.approx(1.0)


def test_no_runs_give_no_interval_and_pages_show_a_dash():
    # The replay stats said 0–0 and the canary 0–1 for n = 0; the one interval says neither.
    from django.template import Context, Template

    from rollouts import canary

    assert stats.wilson_interval(0, 0) is None
    assert canary.wilson_interval is stats.wilson_interval
    assert stats._arm_block([], "baseline")["ci"] is None
    assert Template("{% load reverie %}{{ ci|ci }}").render(Context({"ci": None})) == "—"


def test_no_graded_target_replay_is_not_measurable_never_a_win():
    # The demo case: every target replay stopped at a write tool; the regression sample passed.
    target = [
        pair(i, ["unverifiable"], ["unverifiable"], recorded=False, run_set="target")
        for i in range(20)
    ]
    regression = [
        pair(100 + i, ["pass"], ["pass"], recorded=True, run_set="regression") for i in range(40)
    ]
    result = stats.experiment_stats(
        target + regression,
        patterns={},
        threshold=0.9,
        alpha=0.05,
        early_stop={"stopped": False, "reason": ""},
    )

    assert result["verdict"] == stats.NOT_MEASURABLE
    assert result["target"]["candidate"]["ci"] is None  # no interval for n = 0
    assert result["overall"]["unverifiable"] == 20
    assert stats.NOT_MEASURABLE in stats.NEEDS_ACKNOWLEDGEMENT


def test_legacy_verdicts_read_as_the_one_vocabulary():
    assert stats.normalize_verdict("insufficient") == stats.NOT_MEASURABLE
    assert stats.normalize_verdict("harness_unfit") == stats.NOT_MEASURABLE
    assert stats.normalize_verdict(None) == ""
    assert set(stats.verdict_aliases(stats.NOT_MEASURABLE)) == {
        "not_measurable",
        "insufficient",
        "harness_unfit",
    }


def test_classify_is_the_one_run_classification():
    flaky = pair(1, ["fail", "pass", "fail"], ["pass", "pass", "pass"])
    fixed = pair(2, ["fail"], ["pass"])
    unverifiable = pair(3, ["unverifiable"], ["pass"])

    assert stats.classify(flaky.baseline, flaky.candidate) == stats.FLAKY
    assert stats.classify(fixed.baseline, fixed.candidate) == stats.FIXED
    assert stats.classify(unverifiable.baseline, unverifiable.candidate) == stats.UNVERIFIABLE
    counts = stats.paired_counts([flaky, fixed, unverifiable])
    assert (counts["fixes"], counts["flaky"], counts["unverifiable"]) == (1, 1, 1)
