"""Experiments: a candidate config against the baseline on target and regression runs.

`start_experiment` stores the run sets and one `Replay` slot per (run, arm, replicate) and
enqueues `dreams.run_experiment` after commit. That task fans out Celery chunks (regression
runs first); each chunk replays its runs (execution.py), then checks the stopping rules
(evidence.py). The last chunk stores the statistics, moves the proposal to `ready` and sends
the signals. Re-running an experiment replays only slots not yet done.
"""

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import audit
from agents.models import Agent, ConfigVersion, Run
from dreams import signals
from dreams.experiments.evidence import compute_stats, early_stop_check, planned_looks
from dreams.experiments.execution import (
    arm_versions,
    pending_slots,
    replay_slots_async,
    replay_slots_batched,
)
from dreams.experiments.sampling import sample_regression_runs
from dreams.grading import negative_comment
from dreams.models import Experiment, Proposal, Replay
from dreams.proposals import transition_proposal

log = logging.getLogger(__name__)

E = Experiment.Status


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


def replay_chunk(*, experiment_id: int, run_ids: list[int]) -> None:
    """Replay the pending slots of some runs, then check early stop and completion."""
    experiment = (
        Experiment.objects.select_related("baseline_version", "candidate_version")
        .filter(pk=experiment_id)
        .first()
    )
    if experiment is None or experiment.status != E.RUNNING:
        return
    slots = pending_slots(experiment_id, run_ids)
    if slots:
        versions = arm_versions(experiment)
        if settings.REVERIE_REPLAY_BATCH_MODE:
            within_budget = replay_slots_batched(slots, versions)
        else:
            comments = {s.run_id: negative_comment(s.run) for s in slots}
            within_budget = async_to_sync(replay_slots_async)(slots, versions, comments)
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


# An experiment that has not finished a replay for this long is stuck (its task was lost).
STUCK_AFTER = timedelta(minutes=30)


class ExperimentNotRerun(Exception):
    """The experiment finished normally or is still making progress."""


def is_stuck(experiment: Experiment, *, now: Any = None) -> bool:
    """Pending or running with no replay finished (nor a start) within STUCK_AFTER."""
    if experiment.status not in (E.PENDING, E.RUNNING):
        return False
    last = (
        Replay.objects.filter(experiment=experiment, finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    moment = last or experiment.started_at or experiment.created_at
    return (now or timezone.now()) - moment > STUCK_AFTER


def rerun_experiment(*, experiment_id: int, actor: Any = None) -> Experiment:
    """Re-enqueue a failed or stuck experiment; done replays are kept, the rest run again."""
    from dreams.tasks import run_experiment_task

    with transaction.atomic():
        experiment = (
            Experiment.objects.select_for_update(of=("self",))
            .select_related("agent__workspace")
            .get(pk=experiment_id)
        )
        if experiment.status != E.FAILED and not is_stuck(experiment):
            raise ExperimentNotRerun(
                f"Experiment {experiment.pk} is {experiment.get_status_display().lower()}; only "
                "a failed experiment, or one with no progress for "
                f"{int(STUCK_AFTER.total_seconds() // 60)} minutes, can be re-run."
            )
        before = experiment.status
        # run_experiment claims it again; RUNNING is what it resumes from.
        experiment.status = E.RUNNING if before == E.FAILED else experiment.status
        experiment.finished_at = None
        experiment.save(update_fields=["status", "finished_at"])
        audit.record(
            workspace=experiment.agent.workspace,
            actor=actor,
            action="experiment.rerun",
            target=experiment,
            before={"status": before},
            after={"status": "rerun"},
        )
        run_experiment_task.delay_on_commit(experiment.pk)
    return experiment
