"""Experiments: a candidate config against the baseline on target, regression and pinned runs.

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
from agents.access import Principal
from agents.actors import Actor
from agents.models import Agent, ConfigVersion, Run
from config.celery import enqueue_on_commit
from dreams import signals
from dreams.experiments.batches import submit_replay_batch
from dreams.experiments.evidence import compute_stats, early_stop_check, planned_looks
from dreams.experiments.execution import arm_versions, pending_slots, replay_slots_async
from dreams.experiments.sampling import pin_run_sets, sample_regression_runs
from dreams.harness import check_harness
from dreams.llm import BudgetExceeded, ModelError
from dreams.models import Experiment, Proposal, Replay
from dreams.proposals import transition_proposal

log = logging.getLogger(__name__)

E = Experiment.Status


def _slots(experiment: Experiment) -> list[Replay]:
    slots = []
    for run_set, runs in (
        (Replay.RunSet.REGRESSION, experiment.regression_runs.values_list("pk", flat=True)),
        (Replay.RunSet.TARGET, experiment.target_runs.values_list("pk", flat=True)),
        (Replay.RunSet.PINNED, experiment.pinned_runs.values_list("pk", flat=True)),
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
        pin_run_sets(experiment=experiment, taken={*target_ids, *(r.pk for r in regression)})
        Replay.objects.bulk_create(_slots(experiment), ignore_conflicts=True)
        if proposal is not None and proposal.status in (
            Proposal.Status.DRAFTED,
            Proposal.Status.READY,
            Proposal.Status.CHANGES_REQUESTED,
        ):
            transition_proposal(
                proposal_id=proposal.pk, to=Proposal.Status.REPLAYING, action="proposal.replay"
            )
        enqueue_on_commit(run_experiment_task.si(experiment.pk), what=f"experiment {experiment.pk}")
    return experiment


def judging_runs(proposal: Proposal) -> list[Run]:
    """The runs that judge a proposal, by one rule for every way a proposal is made:

    1. the runs that judged it, or the revision it replaces, before (an edit or a rebase is
       compared on the same runs as the text it replaces);
    2. else the runs it names: the cycle's held-out runs (`heldout_run_ids`, never shown to the
       drafter) or the runs a person chose (`target_run_ids`);
    3. else the runs its cycle studied (a hosted dream has no held-out split).
    """
    earlier: Proposal | None = proposal
    while earlier is not None:
        previous = Experiment.objects.filter(proposal=earlier).order_by("-id").first()
        if previous is not None:
            return list(previous.target_runs.order_by("id"))
        earlier = earlier.revision_of
    meta = proposal.metadata or {}
    named = meta.get("heldout_run_ids") or meta.get("target_run_ids")
    if named:
        return list(Run.objects.filter(agent=proposal.agent, pk__in=named).order_by("id"))
    if proposal.cycle:
        return list(proposal.cycle.runs.order_by("id"))
    return []


def start_proposal_experiment(
    proposal: Proposal, *, regression_runs: Iterable[Run] | None = None
) -> Experiment:
    """The one way to start a proposal's experiment: its base against its candidate, on
    `judging_runs(proposal)`; the regression sample is drawn afresh unless one is given."""
    return start_experiment(
        agent=proposal.agent,
        baseline_version=proposal.base_version,
        candidate_version=proposal.candidate_version,
        target_runs=judging_runs(proposal),
        regression_runs=regression_runs,
        proposal=proposal,
    )


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
        if experiment.status == E.FAILED and experiment.stop_reason == "cancelled":
            return  # cancelled: only rerun_experiment opens it again
        Replay.objects.bulk_create(_slots(experiment), ignore_conflicts=True)
        # Failed slots from an earlier attempt are tried again.
        Replay.objects.filter(experiment=experiment, status=Replay.Status.FAILED).update(
            status=Replay.Status.PENDING, error="", claimed_at=None
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
    if settings.REVERIE_HARNESS_CHECK and not experiment.harness_check:
        experiment.harness_check = run_harness_check(experiment=experiment)
        Experiment.objects.filter(pk=experiment_id).update(harness_check=experiment.harness_check)
    if experiment.harness_check and not experiment.harness_check.get("can_judge", True):
        # The harness cannot reproduce the recordings: spend no tokens on replays it can't judge.
        finish_experiment(experiment_id=experiment_id)
        return
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
    enqueue_on_commit(
        group(replay_chunk_task.si(experiment_id, chunk) for chunk in chunks),
        what=f"replay chunks of experiment {experiment_id}",
    )


def run_harness_check(*, experiment: Experiment) -> dict[str, Any]:
    """The harness check of the experiment's runs with its baseline version (no tokens)."""
    runs = [
        *experiment.target_runs.select_related("agent").prefetch_related("feedback"),
        *experiment.regression_runs.select_related("agent").prefetch_related("feedback"),
        *experiment.pinned_runs.select_related("agent").prefetch_related("feedback"),
    ]
    return check_harness(runs=runs, version=experiment.baseline_version)


def replay_chunk(*, experiment_id: int, run_ids: list[int]) -> None:
    """Replay the pending slots of some runs, then check early stop and completion.

    In batch mode the chunk submits its replays' first step as a Message Batch and ends;
    beat's poller (batches.py) takes the steps after it and settles the chunk."""
    experiment = (
        Experiment.objects.select_related("agent", "baseline_version", "candidate_version")
        .filter(pk=experiment_id)
        .first()
    )
    if experiment is None or experiment.status != E.RUNNING:
        return
    slots = pending_slots(experiment_id, run_ids)
    if slots:
        if settings.REVERIE_REPLAY_BATCH_MODE:
            try:
                batch = submit_replay_batch(experiment=experiment, slots=slots)
            except BudgetExceeded:
                within_budget = False
            except ModelError:
                within_budget = True  # the slots failed; a re-run tries them again
            else:
                if batch is not None and batch.status == batch.Status.OPEN:
                    return  # beat's poller goes on from here
                within_budget = True
        else:
            comments = {s.run_id: s.run.negative_comment() for s in slots}
            within_budget = async_to_sync(replay_slots_async)(
                slots, arm_versions(experiment), comments
            )
        if not within_budget:
            fail_experiment(
                experiment_id=experiment_id, error="Token budget exceeded; replays stopped."
            )
            return
    settle_chunk(experiment_id=experiment_id)


def settle_chunk(*, experiment_id: int) -> None:
    """After a chunk's replays: stop early when the evidence allows, finish when none is left."""
    if not Experiment.objects.filter(pk=experiment_id, status=E.RUNNING).exists():
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
        experiment.stop_reason = early_stop["reason"] if stopped and early_stop else ""
        experiment.finished_at = timezone.now()
        replays = Replay.objects.filter(experiment=experiment)
        failed = replays.filter(status=Replay.Status.FAILED)
        experiment.error = (
            f"{failed.count()} replays failed; {rerun_hint(experiment.pk)}."
            if failed.exists()
            else ""
        )
        failed_count, total = failed.count(), replays.count()
        limit = settings.REVERIE_MAX_FAILED_REPLAY_SHARE
        if failed.exists() and not replays.filter(status=Replay.Status.DONE).exists():
            first = failed.order_by("id").values_list("error", flat=True).first()
            experiment.status = E.FAILED
            experiment.error = f"Every replay failed, e.g. {first}"
        elif total and failed_count / total > limit:
            # Numbers from the replays that happened to work are not evidence: not "ready".
            first = failed.order_by("id").values_list("error", flat=True).first()
            experiment.status = E.FAILED
            experiment.error = (
                f"{failed_count} of {total} replays failed ({failed_count / total:.0%}, over the "
                f"{limit:.0%} limit), e.g. {first}; {rerun_hint(experiment.pk)}."
            )
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


# -- recovery: sweep, cancel, re-run -----------------------------------------------------------


def stale_experiments(*, now: Any = None) -> list[int]:
    """Experiments to run again: pending ones whose task never arrived, and running ones with
    slots left whose replays stopped finishing (their worker died or the messages were lost)."""
    from django.db.models import Max

    now = now or timezone.now()
    grace = now - timedelta(seconds=settings.REVERIE_QUEUED_GRACE_SECONDS)
    stalled = now - timedelta(seconds=settings.REVERIE_EXPERIMENT_STALL_SECONDS)
    ids = list(
        Experiment.objects.filter(status=E.PENDING, created_at__lt=grace).values_list(
            "id", flat=True
        )
    )
    running = (
        Experiment.objects.filter(status=E.RUNNING, replays__status=Replay.Status.PENDING)
        .annotate(last_done=Max("replays__finished_at"))
        .distinct()
    )
    for experiment in running:
        last_activity = max(
            filter(None, [experiment.last_done, experiment.started_at]), default=None
        )
        if last_activity is None or last_activity < stalled:
            ids.append(experiment.pk)
    return ids


def cancel_experiment(*, experiment_id: int, actor: Actor = None) -> Experiment:
    """Stop an open experiment: its chunks stop at their next slot; re-running resumes it."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
        if experiment.status not in (E.PENDING, E.RUNNING):
            raise ValueError(f"experiment {experiment_id} is {experiment.status}, not open")
        experiment.status = E.FAILED
        experiment.stop_reason = "cancelled"
        experiment.error = (
            'Cancelled; "Re-run experiment" on the proposal page (or POST '
            f"/api/v1/experiments/{experiment.pk}/rerun) resumes the replays not done."
        )
        experiment.finished_at = timezone.now()
        experiment.save(update_fields=["status", "stop_reason", "error", "finished_at"])
        audit.record(
            workspace=experiment.agent.workspace,
            actor=actor,
            action="experiment.cancel",
            target=experiment,
        )
    return experiment


def rerun_hint(experiment_id: int) -> str:
    """Where a message about failed replays sends the reader: the real control, page and API."""
    return (
        'use "Re-run experiment" on the proposal page (or POST '
        f"/api/v1/experiments/{experiment_id}/rerun) to retry them"
    )


# An experiment that has not finished a replay for this long is stuck (its task was lost).
STUCK_AFTER = timedelta(minutes=30)


class ExperimentNotRerun(ValueError):
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


def can_cancel(experiment: Experiment) -> bool:
    """What `cancel_experiment` accepts (the pages show its button only then)."""
    return experiment.status in (E.PENDING, E.RUNNING)


def can_rerun(experiment: Experiment) -> bool:
    """What `rerun_experiment` accepts: failed or cancelled, or stuck."""
    return experiment.status == E.FAILED or is_stuck(experiment)


def rerun_experiment(*, experiment_id: int, actor: Actor = None) -> Experiment:
    """Queue a failed, cancelled or stuck experiment again; only the slots not done are replayed."""
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
                "a failed or cancelled experiment, or one with no progress for "
                f"{int(STUCK_AFTER.total_seconds() // 60)} minutes, can be re-run."
            )
        before = experiment.status
        experiment.status = E.PENDING
        experiment.stop_reason = experiment.error = ""
        experiment.finished_at = None
        experiment.save(update_fields=["status", "stop_reason", "error", "finished_at"])
        audit.record(
            workspace=experiment.agent.workspace,
            actor=actor,
            action="experiment.rerun",
            target=experiment,
            before={"status": before},
            after={"status": "rerun"},
        )
        enqueue_on_commit(run_experiment_task.si(experiment.pk), what=f"experiment {experiment.pk}")
    return experiment


def get_experiment_for(principal: Principal, pk: int) -> Experiment:
    """The experiment, scoped to the caller's workspace (404 otherwise)."""
    from django.http import Http404

    experiment = (
        Experiment.objects.filter(agent__workspace=principal.workspace, pk=pk)
        .select_related("agent")
        .first()
    )
    if experiment is None:
        raise Http404("No such experiment in this workspace.")
    return experiment
