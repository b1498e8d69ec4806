"""Dream cycles: start one (at most one active per agent, held by the database), run its stages.

Stages run in order — select, group, diagnose, draft, guard, replay, report — and each one checks
what is already in the database before doing anything, so running a crashed cycle again
finishes it without duplicate patterns or proposals. A worker holds a lease on the cycle
(stored on the row) so two workers never run the same cycle at once.
"""

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import audit
from agents.actors import Actor, user_of
from agents.models import Agent, Run
from agents.states import stored_status, write_status
from config.celery import enqueue_on_commit
from dreams import diagnosis, drafting, guards, patterns, reports, signals, spend
from dreams.experiments import start_proposal_experiment
from dreams.llm import ModelUnavailable
from dreams.models import DreamCycle, Proposal
from dreams.proposals import transition_proposal

logger = logging.getLogger(__name__)

STAGES = ("select", "group", "diagnose", "draft", "guard", "replay", "report")


class CycleNotStarted(Exception):
    """No cycle was started: the agent is paused, dreaming is off, or a cycle is active."""

    def __init__(self, message: str, *, active: DreamCycle | None = None) -> None:
        super().__init__(message)
        self.active = active


class CycleBusy(Exception):
    """Another worker holds the cycle's lease."""


# -- states --------------------------------------------------------------------------------

C = DreamCycle.Status

# A cycle is queued, then claimed by a worker; a queued one can also be cancelled by hand or
# fail before any worker ran it (a hosted dream Anthropic refused). Resuming a crashed cycle
# keeps it running; a re-run is a new cycle.
CYCLE_TRANSITIONS: dict[str, set[str]] = {
    C.QUEUED: {C.RUNNING, C.FAILED, C.CANCELLED},
    C.RUNNING: {C.SUCCEEDED, C.FAILED, C.CANCELLED},
    C.SUCCEEDED: set(),
    C.FAILED: set(),
    C.CANCELLED: set(),
}


class InvalidCycleTransition(Exception):
    """A cycle status change the table does not allow, or one that lost a race."""

    def __init__(self, cycle: DreamCycle, to: str, *, current: str | None = None) -> None:
        self.cycle = cycle
        self.current = current if current is not None else cycle.status
        self.to = to
        super().__init__(f"Dream cycle {cycle.pk} is {self.current}; it cannot become {to}.")


def ensure_cycle_transition(cycle: DreamCycle, *, to: str) -> None:
    if to not in CYCLE_TRANSITIONS[cycle.status]:
        raise InvalidCycleTransition(cycle, to)


def transition_cycle(cycle: DreamCycle, *, to: str, **fields: Any) -> DreamCycle:
    """Move `cycle` to `to`, writing `fields` with it, only if its stored status is still the one
    in memory (a conditional update): of two workers finishing one cycle, the second raises."""
    ensure_cycle_transition(cycle, to=to)
    if not write_status(cycle, {**fields, "status": to}):
        raise InvalidCycleTransition(cycle, to, current=stored_status(cycle))
    return cycle


# -- start ---------------------------------------------------------------------------------


def start_cycle(
    *, agent: Agent, trigger: str, actor: Actor = None, enqueue: bool = True
) -> DreamCycle:
    """Queue a cycle; the partial unique constraint makes concurrent starts yield one cycle."""
    from dreams.tasks import run_dream_cycle

    try:
        with transaction.atomic():
            locked = Agent.objects.select_for_update().select_related("workspace").get(pk=agent.pk)
            if locked.is_paused:
                raise CycleNotStarted("The agent is paused; a paused agent never dreams.")
            if not locked.dreaming_enabled and trigger not in (
                DreamCycle.Trigger.MANUAL,
                DreamCycle.Trigger.API,
            ):
                raise CycleNotStarted("Dreaming is disabled for this agent.")
            cycle = DreamCycle.objects.create(
                agent=locked,
                trigger=trigger,
                created_by=user_of(actor),
            )
            audit.record(
                workspace=locked.workspace,
                actor=actor,
                action="dream_cycle.start",
                target=cycle,
                after={"trigger": trigger},
            )
    except IntegrityError as exc:
        active = DreamCycle.objects.filter(agent=agent, status__in=DreamCycle.ACTIVE).first()
        raise CycleNotStarted(
            f"Cycle {active.pk if active else '?'} is already active for this agent.",
            active=active,
        ) from exc
    if enqueue:
        enqueue_on_commit(run_dream_cycle.si(cycle.pk), what=f"dream cycle {cycle.pk}")
    return cycle


def rerun_cycle(*, cycle: DreamCycle, actor: Actor = None) -> DreamCycle:
    """A new cycle for the agent of a finished one (failed or cancelled runs are selectable)."""
    if cycle.is_active:
        raise CycleNotStarted(f"Cycle {cycle.pk} is still {cycle.status}.", active=cycle)
    trigger = (
        DreamCycle.Trigger.MANUAL
        if getattr(actor, "is_authenticated", False)
        else (DreamCycle.Trigger.API)
    )
    return start_cycle(agent=cycle.agent, trigger=trigger, actor=actor)


# -- lease ---------------------------------------------------------------------------------


def _lease_seconds() -> int:
    return settings.REVERIE_DREAM_LEASE_SECONDS


def _take_lease(*, cycle_id: int, owner: str) -> DreamCycle | None:
    """Claim the cycle for this worker (queued → running, or a running one whose lease lapsed)."""
    now = timezone.now()
    with transaction.atomic():
        cycle = DreamCycle.objects.select_for_update().select_related("agent").get(pk=cycle_id)
        if not cycle.is_active:
            return None
        lease = (cycle.report or {}).get("lease") or {}
        until = lease.get("until")
        if (
            lease.get("owner") not in (None, owner)
            and until
            and until > now.isoformat()
            and cycle.status == C.RUNNING
        ):
            raise CycleBusy(f"cycle {cycle_id} is being run by {lease['owner']}")
        report = dict(cycle.report or {})
        report["lease"] = {
            "owner": owner,
            "until": (now + timedelta(seconds=_lease_seconds())).isoformat(),
        }
        if cycle.status == C.QUEUED:
            transition_cycle(cycle, to=C.RUNNING, started_at=now, report=report)
        else:  # resuming a running cycle whose lease lapsed
            cycle.report = report
            cycle.save(update_fields=["report"])
    return cycle


def _enter_stage(*, cycle: DreamCycle, stage: str, owner: str) -> None:
    """Record the stage and renew the lease."""
    now = timezone.now()
    with transaction.atomic():
        locked = DreamCycle.objects.select_for_update().get(pk=cycle.pk)
        report = dict(locked.report or {})
        if (report.get("lease") or {}).get("owner") != owner:
            raise CycleBusy(f"cycle {cycle.pk} lease was taken over")
        report["lease"] = {
            "owner": owner,
            "until": (now + timedelta(seconds=_lease_seconds())).isoformat(),
        }
        locked.report = report
        locked.stage = stage
        locked.progress_done = STAGES.index(stage)
        locked.progress_total = len(STAGES)
        locked.save(update_fields=["report", "stage", "progress_done", "progress_total"])
    cycle.report, cycle.stage = locked.report, stage


# -- finish --------------------------------------------------------------------------------


def _finish(
    *, cycle: DreamCycle, status: str, error: str = "", stop_reason: str = "", actor: Actor = None
) -> None:
    with transaction.atomic():
        locked = (
            DreamCycle.objects.select_for_update()
            .select_related("agent__workspace")
            .get(pk=cycle.pk)
        )
        if not locked.is_active:
            return
        spend.refresh_cycle_usage(cycle=locked)
        locked.error = error
        locked.finished_at = timezone.now()
        # The report describes the cycle as it ends, so it carries the status it is moving to.
        report = {**reports.build_cycle_report(locked), "status": status}
        if stop_reason:
            report["stop_reason"] = stop_reason
        report["progress"] = (locked.report or {}).get("progress", {})
        done = {"stage": "done", "progress_done": len(STAGES), "progress_total": len(STAGES)}
        transition_cycle(
            locked,
            to=status,
            error=error,
            finished_at=locked.finished_at,
            report=report,
            **(done if status == C.SUCCEEDED else {}),
        )
        audit.record(
            workspace=locked.agent.workspace,
            actor=actor,
            action=f"dream_cycle.{status}",
            target=locked,
            after={"status": status, "stop_reason": stop_reason},
            comment=error,
        )
        cycle_id = locked.pk
        transaction.on_commit(
            lambda: signals.cycle_finished.send(sender=DreamCycle, cycle_id=cycle_id)
        )
    cycle.refresh_from_db()


def cancel_cycle(
    *, cycle: DreamCycle, actor: Actor = None, reason: str = "Cancelled."
) -> DreamCycle:
    """Cancel a queued or running cycle (a finished one stays as it is)."""
    _finish(cycle=cycle, status=C.CANCELLED, error=reason, stop_reason="cancelled", actor=actor)
    cycle.refresh_from_db()  # also when it had finished already
    return cycle


# -- stages --------------------------------------------------------------------------------


def guard_cycle(*, cycle: DreamCycle) -> int:
    """Stage *guard*: compute each new proposal's flags once."""
    done = 0
    agent = cycle.agent
    for proposal in Proposal.objects.filter(cycle=cycle).select_related(
        "base_version", "candidate_version"
    ):
        if (proposal.metadata or {}).get("guarded"):
            continue
        read_runs = list(
            Run.objects.filter(
                pk__in=proposal.metadata.get("drafting_run_ids", [])
            ).prefetch_related("feedback")
        )
        flags = guards.flags_for_change(
            agent=agent,
            base=proposal.base_version,
            candidate=proposal.candidate_version,
            runs=read_runs,
        )
        with transaction.atomic():
            locked = Proposal.objects.select_for_update().get(pk=proposal.pk)
            if locked.metadata.get("guarded"):
                continue
            known = {f.get("code") for f in locked.flags}
            locked.flags = [*locked.flags, *[f for f in flags if f["code"] not in known]]
            locked.metadata = {**locked.metadata, "guarded": True}
            locked.save(update_fields=["flags", "metadata", "updated_at"])
        done += 1
    return done


def replay_cycle(*, cycle: DreamCycle) -> int:
    """Stage *replay*: one experiment per drafted proposal, on its held-out runs."""
    started = 0
    for proposal in Proposal.objects.filter(cycle=cycle, status=Proposal.Status.DRAFTED):
        if not proposal.metadata.get("heldout_run_ids"):
            continue
        with transaction.atomic():
            locked = Proposal.objects.select_for_update().get(pk=proposal.pk)
            if locked.status != Proposal.Status.DRAFTED or locked.experiments.exists():
                continue
            start_proposal_experiment(locked)
            # start_experiment moves a drafted proposal to `replaying`; make sure it did.
            if Proposal.objects.filter(pk=locked.pk, status=Proposal.Status.DRAFTED).exists():
                transition_proposal(
                    proposal_id=locked.pk, to=Proposal.Status.REPLAYING, action="proposal.replay"
                )
        started += 1
    return started


STAGE_FUNCTIONS = {
    "select": patterns.select_runs,
    "group": patterns.group_runs,
    "diagnose": diagnosis.diagnose_cycle,
    "draft": drafting.draft_cycle,
    "guard": guard_cycle,
    "replay": replay_cycle,
}


def run_cycle(*, cycle_id: int) -> DreamCycle | None:
    """Run (or resume) every stage of a cycle; safe to call twice or after a crash."""
    owner = uuid.uuid4().hex[:12]
    try:
        cycle = _take_lease(cycle_id=cycle_id, owner=owner)
    except DreamCycle.DoesNotExist:
        logger.warning("dream cycle %s does not exist", cycle_id)
        return None
    if cycle is None:
        return DreamCycle.objects.filter(pk=cycle_id).first()
    agent = cycle.agent
    if agent.is_paused:
        _finish(
            cycle=cycle,
            status=C.CANCELLED,
            error="The agent was paused.",
            stop_reason="paused",
        )
        return cycle
    try:
        for stage, function in STAGE_FUNCTIONS.items():
            _enter_stage(cycle=cycle, stage=stage, owner=owner)
            function(cycle=cycle)
        _enter_stage(cycle=cycle, stage="report", owner=owner)
        _finish(cycle=cycle, status=C.SUCCEEDED)
    except spend.CapReached as exc:
        _finish(cycle=cycle, status=C.CANCELLED, error=exc.message, stop_reason=exc.code)
    except CycleBusy:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise  # the task retries; the next run resumes from the database
        logger.exception("dream cycle %s failed", cycle_id)
        _finish(cycle=cycle, status=C.FAILED, error=f"{type(exc).__name__}: {exc}")
    return cycle


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, ModelUnavailable)


def stale_cycles(*, now: Any = None) -> list[int]:
    """Cycles to run again: queued ones whose task never arrived (the broker was down or lost
    it) and running ones whose lease lapsed (their worker died)."""
    now = now or timezone.now()
    queued_before = now - timedelta(seconds=settings.REVERIE_QUEUED_GRACE_SECONDS)
    ids = list(
        DreamCycle.objects.filter(status=C.QUEUED, created_at__lt=queued_before).values_list(
            "id", flat=True
        )
    )
    now = now.isoformat()
    for cycle in DreamCycle.objects.filter(status=C.RUNNING).only("id", "report"):
        until = ((cycle.report or {}).get("lease") or {}).get("until")
        if not until or until < now:
            ids.append(cycle.pk)
    return ids
