"""Experiments: a candidate config against the baseline on target and regression runs.

`start_experiment` stores the run sets and one `Replay` slot per (run, arm, replicate) and
enqueues `dreams.run_experiment` after commit. That task fans out Celery chunks (regression
runs first); each chunk replays its runs concurrently (AsyncAnthropic, at most
`Agent.replay_concurrency` at once) or through the Message Batches API, grades them, and
checks the early-stop rule. Re-running an experiment replays only slots not yet done.

Early stop (fixed in advance): after every chunk, on the regression pairs done so far, stop when
regressions outnumber fixes with a one-sided exact binomial p below
REVERIE_EARLY_STOP_ALPHA / L, L being the number of planned looks (regression chunks): a
Bonferroni correction over the looks, so peeking does not inflate the false-stop rate.
"""

import asyncio
import logging
import math
import random
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from agents.models import Agent, ConfigVersion, Feedback, Run
from agents.transcripts import iter_tool_calls
from dreams import signals, stats
from dreams.grading import Grade, agrade, grade, negative_comment
from dreams.llm import BudgetExceeded, ModelError, get_gateway
from dreams.models import Experiment, PatternRun, Proposal, Replay
from dreams.proposals import transition_proposal
from dreams.replay import ReplayResult, ReplaySession, areplay

log = logging.getLogger(__name__)

E = Experiment.Status


def _profile(run: Run) -> str:
    return ">".join(c["name"] for c in iter_tool_calls(run.messages or [])) or "no-tools"


def sample_regression_runs(
    *, agent: Agent, exclude_ids: Iterable[int], size: int, seed: int
) -> list[Run]:
    """A stratified sample of passing runs: strata = tool-usage profile × older/newer half."""
    runs = list(
        Run.objects.filter(agent=agent, status=Run.Status.SUCCESS)
        .exclude(pk__in=list(exclude_ids))
        .only("id", "messages", "started_at")
        .order_by("started_at", "id")
    )
    if size <= 0 or not runs:
        return []
    if len(runs) <= size:
        return runs
    half = len(runs) // 2
    strata: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for index, run in enumerate(runs):
        strata[(_profile(run), 0 if index < half else 1)].append(run)
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    # Largest-remainder allocation, proportional to stratum size, at least one per stratum.
    keys = sorted(strata)
    quotas = {k: size * len(strata[k]) / len(runs) for k in keys}
    alloc = {k: min(len(strata[k]), max(1, math.floor(q))) for k, q in quotas.items()}
    by_remainder = sorted(keys, key=lambda k: (quotas[k] - math.floor(quotas[k]), k), reverse=True)
    while sum(alloc.values()) < size:
        grown = False
        for key in by_remainder:
            if sum(alloc.values()) >= size:
                break
            if alloc[key] < len(strata[key]):
                alloc[key] += 1
                grown = True
        if not grown:
            break
    while sum(alloc.values()) > size:
        key = max(keys, key=lambda k: (alloc[k], k))
        alloc[key] -= 1
    sample: list[Run] = []
    for key in keys:
        sample.extend(rng.sample(strata[key], alloc[key]))
    return sample


def _slots(experiment: Experiment) -> list[Replay]:
    slots = []
    for run_set, runs in (
        (Replay.RunSet.REGRESSION, experiment.regression_runs.values_list("pk", flat=True)),
        (Replay.RunSet.TARGET, experiment.target_runs.values_list("pk", flat=True)),
    ):
        for run_id in runs:
            for arm in (Replay.Arm.BASELINE, Replay.Arm.CANDIDATE):
                for replicate in range(experiment.replicates):
                    slots.append(
                        Replay(
                            experiment=experiment,
                            run_id=run_id,
                            arm=arm,
                            replicate=replicate,
                            run_set=run_set,
                        )
                    )
    return slots


def start_experiment(
    *,
    agent: Agent,
    baseline_version: ConfigVersion,
    candidate_version: ConfigVersion,
    target_runs: Iterable[Run],
    regression_runs: Iterable[Run] | None = None,
    proposal: Proposal | None = None,
    replicates: int | None = None,
) -> Experiment:
    """Create the experiment and its replay slots; replays start after commit.

    A proposal that is drafted, ready or has changes requested moves to `replaying` here.
    """
    from dreams.tasks import run_experiment_task

    target = list(target_runs)
    with transaction.atomic():
        experiment = Experiment.objects.create(
            agent=agent,
            proposal=proposal,
            baseline_version=baseline_version,
            candidate_version=candidate_version,
            replicates=replicates or settings.REVERIE_REPLICATES,
        )
        experiment.target_runs.set(target)
        # A run is either a target or a regression check, never both.
        target_ids = {r.pk for r in target}
        if regression_runs is None:
            regression = sample_regression_runs(
                agent=agent,
                exclude_ids=target_ids,
                size=settings.REVERIE_REGRESSION_SAMPLE_SIZE,
                seed=experiment.pk,
            )
        else:
            regression = [r for r in regression_runs if r.pk not in target_ids]
        experiment.regression_runs.set(regression)
        Replay.objects.bulk_create(_slots(experiment), ignore_conflicts=True)
        if proposal is not None and proposal.status in (
            Proposal.Status.DRAFTED,
            Proposal.Status.READY,
            Proposal.Status.CHANGES_REQUESTED,
        ):
            transition_proposal(
                proposal_id=proposal.pk, to=Proposal.Status.REPLAYING, action="proposal.replay"
            )
        run_experiment_task.delay_on_commit(experiment.pk)
    return experiment


def planned_looks(experiment: Experiment) -> int:
    regression = experiment.regression_runs.count()
    return max(1, math.ceil(regression / settings.REVERIE_REPLAY_CHUNK_SIZE))


def run_experiment(*, experiment_id: int) -> None:
    """Claim the experiment and fan out chunk tasks for runs with slots not done (idempotent)."""
    from celery import group

    from dreams.tasks import replay_chunk_task

    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().filter(pk=experiment_id).first()
        if experiment is None:
            log.warning("experiment %s does not exist; nothing to run", experiment_id)
            return
        if experiment.status in (E.COMPLETED, E.STOPPED_EARLY):
            return
        Replay.objects.bulk_create(_slots(experiment), ignore_conflicts=True)
        # Failed slots from an earlier attempt are tried again.
        Replay.objects.filter(experiment=experiment, status=Replay.Status.FAILED).update(
            status=Replay.Status.PENDING, error=""
        )
        experiment.status = E.RUNNING
        experiment.error = ""
        experiment.started_at = experiment.started_at or timezone.now()
        experiment.stats = {
            **(experiment.stats or {}),
            "plan": {
                "looks": planned_looks(experiment),
                "alpha": settings.REVERIE_EARLY_STOP_ALPHA,
                "chunk_size": settings.REVERIE_REPLAY_CHUNK_SIZE,
            },
        }
        experiment.save(update_fields=["status", "error", "started_at", "stats"])
    pending = list(
        Replay.objects.filter(experiment_id=experiment_id, status=Replay.Status.PENDING)
        .order_by("run_set", "run_id")  # "regression" sorts before "target": regression first
        .values_list("run_id", flat=True)
    )
    run_ids = list(dict.fromkeys(pending))
    if not run_ids:
        finish_experiment(experiment_id=experiment_id)
        return
    size = settings.REVERIE_REPLAY_CHUNK_SIZE
    chunks = [run_ids[i : i + size] for i in range(0, len(run_ids), size)]
    transaction.on_commit(
        lambda: group(replay_chunk_task.s(experiment_id, chunk) for chunk in chunks).apply_async()
    )


def _pending_slots(experiment_id: int, run_ids: list[int]) -> list[Replay]:
    return list(
        Replay.objects.filter(
            experiment_id=experiment_id, run_id__in=run_ids, status=Replay.Status.PENDING
        )
        .select_related("run__agent", "experiment")
        .prefetch_related(
            Prefetch("run__feedback", queryset=Feedback.objects.order_by("-created_at"))
        )
        .order_by("run_id", "arm", "replicate")
    )


def _save_slot(slot: Replay, result: ReplayResult | None, graded: Grade | None, error: str) -> None:
    now = timezone.now()
    if result is not None:
        slot.messages = result.messages
        slot.tool_calls = result.tool_calls
        slot.steps = result.steps
        slot.stop_reason = result.stop_reason
        slot.divergence_step = result.divergence_step
        slot.divergence_kind = result.divergence_kind
        slot.off_recording = result.off_recording
        slot.unverifiable = result.unverifiable
        slot.input_tokens = result.usage.get("input_tokens", 0)
        slot.output_tokens = result.usage.get("output_tokens", 0)
        slot.cache_read_tokens = result.usage.get("cache_read_input_tokens", 0)
        slot.cache_write_tokens = result.usage.get("cache_creation_input_tokens", 0)
        slot.cost_usd = result.cost_usd
        slot.latency_ms = result.latency_ms
    if graded is not None and not error:
        slot.verdict, slot.reason, slot.grader = graded.verdict, graded.reason, graded.grader
        slot.status = Replay.Status.DONE
    else:
        slot.status = Replay.Status.FAILED
    slot.error = error[:2000]
    slot.finished_at = now
    slot.save()


def _versions(experiment: Experiment) -> dict[str, ConfigVersion]:
    return {
        Replay.Arm.BASELINE: experiment.baseline_version,
        Replay.Arm.CANDIDATE: experiment.candidate_version,
    }


async def _replay_slots_async(
    slots: list[Replay], versions: dict[str, ConfigVersion], comments: dict[int, str]
) -> bool:
    """Replay and grade slots concurrently; returns False when the budget ran out."""
    gateway = get_gateway()
    agent = slots[0].run.agent
    semaphore = asyncio.Semaphore(max(1, agent.replay_concurrency))
    budget_hit = asyncio.Event()

    async def one(slot: Replay) -> None:
        try:
            await replay_and_grade(slot)
        except Exception as exc:  # one broken replay must not sink the others
            log.exception("replay %s failed", slot.pk)
            await sync_to_async(_save_slot)(slot, None, None, f"{type(exc).__name__}: {exc}")

    async def replay_and_grade(slot: Replay) -> None:
        async with semaphore:
            if budget_hit.is_set():
                return
            result = await areplay(
                slot.run,
                versions[slot.arm],
                gateway=gateway,
                experiment=slot.experiment,
                replay_row=slot,
            )
            graded, error = None, result.error
            if not error:
                try:
                    graded = await agrade(
                        slot.run,
                        result,
                        gateway=gateway,
                        comment=comments[slot.run_id],
                        experiment=slot.experiment,
                        replay_row=slot,
                    )
                except ModelError as exc:
                    error = f"judge: {type(exc).__name__}: {exc}"
            if "BudgetExceeded" in error:
                budget_hit.set()
        # Saved outside the semaphore: waiting for the database must not hold a model slot.
        await sync_to_async(_save_slot)(slot, result, graded, error)

    try:
        await asyncio.gather(*(one(s) for s in slots))
    finally:
        await gateway.aclose()
    return not budget_hit.is_set()


def _replay_slots_batched(slots: list[Replay], versions: dict[str, ConfigVersion]) -> bool:
    """Replay slots step by step, each step of every open replay in one Message Batch."""
    gateway = get_gateway()
    agent = slots[0].run.agent
    sessions = {
        str(s.pk): ReplaySession(run=s.run, version=versions[s.arm], agent=agent) for s in slots
    }
    by_id = {str(s.pk): s for s in slots}
    from dreams.llm import CallContext

    while True:
        open_ids = [sid for sid, session in sessions.items() if not session.done]
        if not open_ids:
            break
        try:
            answers = gateway.run_batch(
                agent=agent,
                purpose="replay",
                requests={sid: sessions[sid].request() for sid in open_ids},
                contexts={
                    sid: CallContext(agent, "replay", None, by_id[sid].experiment, by_id[sid])
                    for sid in open_ids
                },
                cache_prefix=True,
            )
        except ModelError as exc:
            for sid in open_ids:
                sessions[sid].fail(exc)
            if isinstance(exc, BudgetExceeded):
                for sid in open_ids:
                    _save_slot(by_id[sid], sessions[sid].result, None, sessions[sid].result.error)
                return False
            continue
        for sid in open_ids:
            answer = answers[sid]
            if isinstance(answer, ModelError):
                sessions[sid].fail(answer)
            else:
                sessions[sid].feed(answer)
    for sid, session in sessions.items():
        slot, result = by_id[sid], session.result
        graded, error = None, result.error
        if not error:
            try:
                graded = grade(
                    slot.run, result, gateway=gateway, experiment=slot.experiment, replay_row=slot
                )
            except ModelError as exc:
                error = f"judge: {type(exc).__name__}: {exc}"
        _save_slot(slot, result, graded, error)
    return True


def replay_chunk(*, experiment_id: int, run_ids: list[int]) -> None:
    """Replay the pending slots of some runs, then check early stop and completion."""
    experiment = (
        Experiment.objects.select_related("baseline_version", "candidate_version")
        .filter(pk=experiment_id)
        .first()
    )
    if experiment is None or experiment.status != E.RUNNING:
        return
    slots = _pending_slots(experiment_id, run_ids)
    if slots:
        versions = _versions(experiment)
        if settings.REVERIE_REPLAY_BATCH_MODE:
            within_budget = _replay_slots_batched(slots, versions)
        else:
            comments = {s.run_id: negative_comment(s.run) for s in slots}
            within_budget = async_to_sync(_replay_slots_async)(slots, versions, comments)
        if not within_budget:
            fail_experiment(
                experiment_id=experiment_id, error="Token budget exceeded; replays stopped."
            )
            return
    stop = early_stop_check(experiment_id=experiment_id)
    if stop["stopped"]:
        finish_experiment(experiment_id=experiment_id, early_stop=stop)
    elif not Replay.objects.filter(
        experiment_id=experiment_id, status=Replay.Status.PENDING
    ).exists():
        finish_experiment(experiment_id=experiment_id)


def _pairs(experiment: Experiment) -> list[stats.RunPair]:
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
    return list(pairs.values())


def early_stop_check(*, experiment_id: int) -> dict[str, Any]:
    """The sequential rules, fixed before the first replay (see the module docstring)."""
    experiment = Experiment.objects.get(pk=experiment_id)
    plan = (experiment.stats or {}).get("plan") or {}
    looks = int(plan.get("looks") or planned_looks(experiment))
    alpha = float(plan.get("alpha") or settings.REVERIE_EARLY_STOP_ALPHA)
    pairs = [p for p in _pairs(experiment) if p.baseline.verdicts and p.candidate.verdicts]
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
    total = target_total + experiment.regression_runs.count()
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
    if experiment.proposal_id:
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
    result = stats.experiment_stats(
        _pairs(experiment),
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
    result["judge_agreement"] = judge_agreement(experiment)
    result["unverifiable_warning"] = (
        result["overall"]["unverifiable_share"] > settings.REVERIE_UNVERIFIABLE_WARNING_SHARE
    )
    result["replicates"] = experiment.replicates
    result["plan"] = (experiment.stats or {}).get("plan", {})
    return result


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


def finish_experiment(*, experiment_id: int, early_stop: dict[str, Any] | None = None) -> None:
    """Store the statistics, close the experiment, move its proposal to ready, then signal."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        if experiment.status != E.RUNNING:
            return
        stopped = bool(early_stop and early_stop.get("stopped"))
        experiment.stats = compute_stats(experiment, early_stop=early_stop)
        experiment.fidelity = experiment.stats["fidelity"]
        experiment.status = E.STOPPED_EARLY if stopped else E.COMPLETED
        experiment.stop_reason = early_stop["reason"] if stopped else ""
        experiment.finished_at = timezone.now()
        replays = Replay.objects.filter(experiment=experiment)
        failed = replays.filter(status=Replay.Status.FAILED)
        experiment.error = (
            f"{failed.count()} replays failed; re-run the experiment to retry them."
            if failed.exists()
            else ""
        )
        if failed.exists() and not replays.filter(status=Replay.Status.DONE).exists():
            first = failed.order_by("id").values_list("error", flat=True).first()
            experiment.status = E.FAILED
            experiment.error = f"Every replay failed, e.g. {first}"
        experiment.save(
            update_fields=["stats", "fidelity", "status", "stop_reason", "finished_at", "error"]
        )
        proposal = experiment.proposal
        if experiment.status == E.FAILED:
            proposal = None  # nothing to review; the proposal stays replaying for a re-run
        if proposal is not None:
            overall = experiment.stats["overall"]
            confidence = 1 - (overall["mcnemar_p"] if overall["mcnemar_p"] is not None else 1)
            Proposal.objects.filter(pk=proposal.pk).update(
                expected_value=(overall["fixes"] - overall["regressions"]) * confidence
            )
            if proposal.status == Proposal.Status.REPLAYING:
                transition_proposal(
                    proposal_id=proposal.pk,
                    to=Proposal.Status.READY,
                    action="proposal.replayed",
                    comment=experiment.stop_reason,
                )
                transaction.on_commit(
                    lambda: signals.proposal_ready.send(sender=Experiment, proposal_id=proposal.pk)
                )
        transaction.on_commit(
            lambda: signals.experiment_finished.send(sender=Experiment, experiment_id=experiment_id)
        )


def fail_experiment(*, experiment_id: int, error: str) -> None:
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        if experiment.status != E.RUNNING:
            return
        experiment.status = E.FAILED
        experiment.error = error
        experiment.stats = {**compute_stats(experiment), "plan": experiment.stats.get("plan", {})}
        experiment.finished_at = timezone.now()
        experiment.save(update_fields=["status", "error", "stats", "finished_at"])
