"""The evidence of an experiment: paired outcomes from its replays, the stopping rules, the
statistics stored on `Experiment.stats`, and the judge's agreement with human feedback.

Early stop (fixed in advance): after every chunk, on the regression pairs done so far, stop when
regressions outnumber fixes with a one-sided exact binomial p below
REVERIE_EARLY_STOP_ALPHA / L, L being the number of planned looks (regression chunks): a
Bonferroni correction over the looks, so peeking does not inflate the false-stop rate.
Futility: stop once even fixing every remaining run could not make the McNemar p significant
(only when significance was reachable at the start).
"""

import math
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.conf import settings

from agents.models import Feedback, Run
from dreams import stats
from dreams.models import Experiment, PatternRun, Replay


def planned_looks(experiment: Experiment) -> int:
    regression = experiment.regression_runs.count()
    return max(1, math.ceil(regression / settings.REVERIE_REPLAY_CHUNK_SIZE))


def paired_outcomes(experiment: Experiment) -> list[stats.RunPair]:
    pairs: dict[int, stats.RunPair] = {}
    rows = (
        Replay.objects.filter(experiment=experiment)
        .exclude(status=Replay.Status.PENDING)
        .select_related("run")
        .only(
            "run_id",
            "run__status",
            "arm",
            "run_set",
            "status",
            "verdict",
            "off_recording",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_usd",
            "latency_ms",
            "simulated_turns",
            "simulated_user_tokens",
        )
    )
    for row in rows:
        pair = pairs.get(row.run_id)
        if pair is None:
            recorded = row.run.status
            pair = pairs[row.run_id] = stats.RunPair(
                run_id=row.run_id,
                run_set=row.run_set,
                recorded_pass=(
                    True
                    if recorded == Run.Status.SUCCESS
                    else False
                    if recorded in (Run.Status.FAILURE, Run.Status.ERROR)
                    else None
                ),
            )
        arm = pair.baseline if row.arm == Replay.Arm.BASELINE else pair.candidate
        if row.status == Replay.Status.FAILED:
            arm.errors += 1
            continue
        arm.verdicts.append(row.verdict)
        arm.off_recording.append(row.off_recording)
        arm.tokens.append(
            row.input_tokens + row.output_tokens + row.cache_read_tokens + row.cache_write_tokens
        )
        arm.cost.append(float(row.cost_usd or Decimal(0)))
        arm.latency_ms.append(row.latency_ms or 0)
        arm.simulated.append(bool(row.simulated_turns))
        arm.user_tokens.append(row.simulated_user_tokens or 0)
    return list(pairs.values())


def early_stop_check(*, experiment_id: int) -> dict[str, Any]:
    """The sequential rules, fixed before the first replay (see the module docstring)."""
    experiment = Experiment.objects.get(pk=experiment_id)
    plan = (experiment.stats or {}).get("plan") or {}
    looks = int(plan.get("looks") or planned_looks(experiment))
    alpha = float(plan.get("alpha") or settings.REVERIE_EARLY_STOP_ALPHA)
    pairs = [p for p in paired_outcomes(experiment) if p.baseline.verdicts and p.candidate.verdicts]
    regression_pairs = [p for p in pairs if p.run_set == Replay.RunSet.REGRESSION]
    counts = stats.paired_counts(regression_pairs)
    fixes, regressions = counts["fixes"], counts["regressions"]
    p = stats.regression_p(fixes, regressions)
    boundary = alpha / looks
    if regressions > fixes and p < boundary:
        total = experiment.regression_runs.count()
        return {
            "stopped": True,
            "kind": "regression",
            "reason": (
                f"Regression set: {regressions} regressions vs {fixes} fixes after "
                f"{len(regression_pairs)} of {total} runs; one-sided exact p={p:.4g} < "
                f"{alpha:g}/{looks} (Bonferroni over {looks} planned looks)."
            ),
            "p": p,
            "boundary": boundary,
        }
    # Futility: stop once no outcome of the remaining runs could make an improvement
    # significant (only when one was reachable when the experiment started).
    target_total = experiment.target_runs.count()
    total = target_total + experiment.regression_runs.count() + experiment.pinned_runs.count()
    overall = stats.paired_counts(pairs)
    remaining = total - len(pairs)
    best = stats.mcnemar_exact(overall["fixes"] + remaining, overall["regressions"])
    reachable_at_start = (
        stats.mcnemar_exact(target_total, 0) or 1.0
    ) < settings.REVERIE_STATS_ALPHA
    futile = best is None or best >= settings.REVERIE_STATS_ALPHA
    if pairs and remaining > 0 and reachable_at_start and futile:
        return {
            "stopped": True,
            "kind": "futility",
            "reason": (
                f"Futility: {overall['fixes']} fixes and {overall['regressions']} regressions "
                f"after {len(pairs)} of {total} runs; even if all {remaining} remaining runs "
                f"were fixed, McNemar p would be {best if best is not None else 1:.3g} ≥ "
                f"{settings.REVERIE_STATS_ALPHA:g}."
            ),
            "p": p,
            "boundary": boundary,
        }
    return {"stopped": False, "kind": "", "reason": "", "p": p, "boundary": boundary}


def _pattern_members(experiment: Experiment) -> dict[str, set[int]]:
    run_ids = set(experiment.target_runs.values_list("pk", flat=True)) | set(
        experiment.regression_runs.values_list("pk", flat=True)
    )
    memberships = PatternRun.objects.filter(run_id__in=run_ids)
    if experiment.proposal:
        pattern_ids = list(experiment.proposal.patterns.values_list("pk", flat=True))
        if pattern_ids:
            memberships = memberships.filter(pattern_id__in=pattern_ids)
    members: dict[str, set[int]] = defaultdict(set)
    for pattern_id, run_id in memberships.values_list("pattern_id", "run_id"):
        members[str(pattern_id)].add(run_id)
    return dict(members)


def compute_stats(
    experiment: Experiment, *, early_stop: dict[str, Any] | None = None
) -> dict[str, Any]:
    pairs = paired_outcomes(experiment)
    result = stats.experiment_stats(
        pairs,
        patterns=_pattern_members(experiment),
        threshold=settings.REVERIE_FIDELITY_THRESHOLD,
        alpha=settings.REVERIE_STATS_ALPHA,
        early_stop={
            "stopped": bool(early_stop and early_stop.get("stopped")),
            "kind": (early_stop or {}).get("kind", ""),
            "reason": (early_stop or {}).get("reason", ""),
        },
    )
    result["model_backend"] = settings.REVERIE_MODEL_BACKEND  # the UI says "simulated model"
    harness = experiment.harness_check or {}
    if harness:
        result["harness"] = {
            k: harness.get(k) for k in ("fidelity", "threshold", "can_judge", "checked", "summary")
        }
        if not harness.get("can_judge", True):
            result["verdict"] = stats.NOT_MEASURABLE
            result["verdict_reason"] = "Not measurable: the harness cannot judge this agent."
    result["run_sets"] = run_set_results(experiment, pairs)
    result["judge_agreement"] = judge_agreement(experiment)
    result["unverifiable_warning"] = (
        result["overall"]["unverifiable_share"] > settings.REVERIE_UNVERIFIABLE_WARNING_SHARE
    )
    result["replicates"] = experiment.replicates
    result["plan"] = (experiment.stats or {}).get("plan", {})
    return result


def run_set_results(experiment: Experiment, pairs: list[stats.RunPair]) -> list[dict[str, Any]]:
    """Per pinned run set: the paired block over its runs, whichever role they played here."""
    results = []
    for entry in experiment.run_sets or []:
        members = set(entry.get("run_ids") or [])
        results.append(
            {
                "id": entry.get("id"),
                "name": entry.get("name", ""),
                **stats.block([p for p in pairs if p.run_id in members]),
            }
        )
    return results


def judge_agreement(experiment: Experiment) -> dict[str, Any]:
    """How often the model judge agreed with human feedback, on baseline replays that
    reproduced the recording (so the feedback is about the same behaviour)."""
    rows = (
        Replay.objects.filter(
            experiment=experiment,
            arm=Replay.Arm.BASELINE,
            status=Replay.Status.DONE,
            grader__in=["rubric", "feedback"],
            divergence_kind="",
            run__feedback__source=Feedback.Source.HUMAN,
        )
        .values_list("pk", "verdict", "run__feedback__rating")
        .distinct()
    )
    n = agree = 0
    for _, verdict, rating in rows:
        n += 1
        agree += (verdict == "pass") == (rating == Feedback.Rating.POSITIVE)
    return {"n": n, "agreement": agree / n if n else None}


def latest_verdict(*, proposal_id: int) -> tuple[str, str]:
    """(verdict, why) of the proposal's latest experiment, in the one vocabulary ("" if none)."""
    latest = (
        Experiment.objects.filter(proposal_id=proposal_id)
        .order_by("-id")
        .values_list("stats", flat=True)
        .first()
    )
    data = latest if isinstance(latest, dict) else {}
    return stats.normalize_verdict(data.get("verdict")), str(data.get("verdict_reason") or "")
