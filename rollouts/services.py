"""Rollout services: start, approve each stage, halt (by hand or by the canary), roll back.

Every service is one transaction that locks the rollout row and then the agent row (always
in that order, so two services never deadlock), changes the agent's routing in the same
transaction, moves statuses only through `rollouts/states.py`, writes the audit log, and sends
webhooks after commit.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import audit
from agents.actors import Actor, Person, user_of
from agents.models import Agent, Run
from dreams.models import Proposal
from dreams.proposals import transition_proposal
from rollouts.canary import StageAnalysis, analyse_stage
from rollouts.events import notify_rollout_event
from rollouts.models import DEFAULT_STAGES, Rollout, RolloutStage
from rollouts.states import (
    InvalidRolloutState,
    RolloutError,
    transition_rollout,
    transition_stage,
    transition_stages,
)

R = Rollout.Status
St = RolloutStage.Status


class StageNotReady(RolloutError):
    code = "stage_not_ready"

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("The stage cannot advance yet: " + "; ".join(reasons) + ".")


def stage_percents(agent: Agent, stages: list[int] | None = None) -> list[int]:
    """The stage percents to use: given, else the agent's, else 5 → 25 → 100; validated."""
    percents = list(stages or agent.rollout_stages or DEFAULT_STAGES)
    if not all(isinstance(p, int) and 1 <= p <= 100 for p in percents):
        raise RolloutError("Stage percents must be whole numbers from 1 to 100.")
    if any(b <= a for a, b in zip(percents, percents[1:], strict=False)):
        raise RolloutError("Stage percents must increase.")
    return percents


@dataclass
class Readiness:
    canary_runs: int
    elapsed: timedelta
    reasons: list[str]

    @property
    def ready(self) -> bool:
        return not self.reasons


def minimum_stage_runs() -> int:
    """The fewest canary runs a stage may ask for: the canary analysis's minimum sample, so no
    stage can advance before the automatic halt has had its first look."""
    return settings.REVERIE_CANARY_MIN_SAMPLE


def validate_min_runs(min_runs: int) -> None:
    """A stage's minimum runs below the canary's minimum sample is refused (RolloutError)."""
    floor = minimum_stage_runs()
    if min_runs < floor:
        raise RolloutError(
            f"A stage's minimum runs ({min_runs}) must be at least the canary's minimum sample "
            f"({floor}, REVERIE_CANARY_MIN_SAMPLE): with fewer, a stage could advance before the "
            "canary analysis has looked at it."
        )


def stage_readiness(
    *, rollout: Rollout, stage: RolloutStage, now: datetime | None = None
) -> Readiness:
    """Whether `stage` met its minimum canary runs and minimum duration, and if not, why."""
    now = now or timezone.now()
    started = stage.started_at or now
    canary_runs = Run.objects.filter(
        agent_id=rollout.agent_id, config_version_id=rollout.to_version_id, started_at__gte=started
    ).count()
    elapsed = now - started
    reasons = []
    # Stages stored before the floor existed (or under a lower setting) still wait for it.
    needed = max(stage.min_runs, minimum_stage_runs())
    if canary_runs < needed:
        reasons.append(f"{canary_runs} of {needed} canary runs so far")
    if elapsed < stage.min_duration:
        left = stage.min_duration - elapsed
        minutes = int(left.total_seconds() // 60)
        seconds = int(left.total_seconds() % 60)
        reasons.append(f"{minutes} min {seconds} s left of the minimum duration")
    return Readiness(canary_runs=canary_runs, elapsed=elapsed, reasons=reasons)


def _user(actor: Actor) -> "Person | None":
    """The actor as a user for a foreign key; None for API keys and the system."""
    return user_of(actor)


def _label(actor: Actor) -> str:
    label: str = audit.actor_fields(actor)["actor_label"]
    return label


def _lock(rollout_id: int) -> tuple[Rollout, Agent]:
    rollout = Rollout.objects.select_for_update().get(pk=rollout_id)
    agent = (
        Agent.objects.select_for_update(of=("self",))
        .select_related("workspace")
        .get(pk=rollout.agent_id)
    )
    rollout.agent = agent
    return rollout, agent


def _current_stage(rollout: Rollout) -> RolloutStage:
    return RolloutStage.objects.select_for_update().get(
        rollout=rollout, index=rollout.current_stage
    )


def _routing(agent: Agent) -> dict[str, Any]:
    return {
        "stable_version": agent.stable_version.number if agent.stable_version else None,
        "canary_version": agent.canary_version.number if agent.canary_version else None,
        "canary_percent": agent.canary_percent,
    }


def start_rollout(
    *,
    proposal_id: int,
    actor: Actor,
    stages: list[int] | None = None,
    min_runs: int | None = None,
    min_duration: timedelta | None = None,
) -> Rollout:
    """Start rolling out an approved proposal; starting is the approval of its first stage."""
    min_runs = settings.REVERIE_ROLLOUT_MIN_RUNS if min_runs is None else min_runs
    validate_min_runs(min_runs)
    if min_duration is None:
        min_duration = timedelta(minutes=settings.REVERIE_ROLLOUT_MIN_MINUTES)
    now = timezone.now()
    with transaction.atomic():
        proposal = Proposal.objects.select_related("candidate_version").get(pk=proposal_id)
        agent = (
            Agent.objects.select_for_update(of=("self",))
            .select_related("workspace", "stable_version")
            .get(pk=proposal.agent_id)
        )
        if agent.stable_version is None:
            raise RolloutError("The agent has no stable version to roll out from.")
        if agent.stable_version_id == proposal.candidate_version_id:
            raise RolloutError("The candidate is already the stable version.")
        if agent.stable_version_id != proposal.base_version_id:
            # Rolling it out would silently revert whatever changed in stable since the draft.
            raise RolloutError(
                f"The stable version is now v{agent.stable_version.number}, not the proposal's "
                "base; the proposal needs a new revision on top of the current stable version."
            )
        if Rollout.objects.filter(agent=agent, status__in=Rollout.ACTIVE).exists():
            raise RolloutError("This agent already has a rollout in progress.")
        percents = stage_percents(agent, stages)
        # Moves approved → rolling_out under the proposal's row lock, or raises InvalidTransition.
        transition_proposal(proposal_id=proposal.pk, to=Proposal.Status.ROLLING_OUT, actor=actor)
        try:
            with transaction.atomic():
                rollout = Rollout.objects.create(
                    agent=agent,
                    proposal=proposal,
                    from_version=agent.stable_version,
                    to_version=proposal.candidate_version,
                    status=R.RUNNING,
                    created_by=_user(actor),
                    created_by_label=_label(actor),
                )
        except IntegrityError as exc:  # the partial unique constraint, under a race
            raise RolloutError("This agent already has a rollout in progress.") from exc
        RolloutStage.objects.bulk_create(
            [
                RolloutStage(
                    rollout=rollout,
                    index=index,
                    percent=percent,
                    min_runs=min_runs,
                    min_duration=min_duration,
                    status=St.RUNNING if index == 0 else St.PENDING,
                    started_at=now if index == 0 else None,
                    approved_at=now if index == 0 else None,
                    approved_by=_user(actor) if index == 0 else None,
                    approved_by_label=_label(actor) if index == 0 else "",
                )
                for index, percent in enumerate(percents)
            ]
        )
        before = _routing(agent)
        agent.canary_version = proposal.candidate_version
        agent.canary_percent = percents[0]
        agent.save(update_fields=["canary_version", "canary_percent", "updated_at"])
        audit.record(
            workspace=agent.workspace,
            actor=actor,
            action="rollout.start",
            target=rollout,
            before=before,
            after={**_routing(agent), "stages": percents},
        )
        notify_rollout_event(rollout=rollout, event="rollout.started")
    return rollout


def _halt(
    *,
    rollout: Rollout,
    agent: Agent,
    actor: Actor,
    reason: str,
    automatic: bool,
    status: str,
    analysis: StageAnalysis | None,
) -> None:
    """Return traffic to stable and end the rollout; the caller holds both row locks."""
    now = timezone.now()
    stage = _current_stage(rollout)
    transition_stage(
        stage,
        to=St.HALTED,
        ended_at=now,
        verdict=reason[:200],
        metrics=analysis.as_dict() if analysis is not None else stage.metrics,
    )
    transition_stages(
        RolloutStage.objects.filter(rollout=rollout, index__gt=stage.index), to=St.SKIPPED
    )
    before = _routing(agent)
    if agent.canary_version_id == rollout.to_version_id:
        agent.canary_version = None
        agent.canary_percent = 0
        agent.save(update_fields=["canary_version", "canary_percent", "updated_at"])
    transition_rollout(
        rollout, to=status, halt_reason=reason, halted_automatically=automatic, ended_at=now
    )
    # Halted and rolled back are distinct outcomes: a halted proposal may be approved again.
    transition_proposal(
        proposal_id=rollout.proposal_id,
        to=Proposal.Status.HALTED if status == R.HALTED else Proposal.Status.ROLLED_BACK,
        actor=actor,
        comment=reason,
        action="proposal.halt" if status == R.HALTED else "proposal.roll_back",
    )
    audit.record(
        workspace=agent.workspace,
        actor=actor,
        action="rollout.halt" if status == R.HALTED else "rollout.roll_back",
        target=rollout,
        before=before,
        after={**_routing(agent), "automatic": automatic, "stage": stage.number},
        comment=reason,
    )
    notify_rollout_event(
        rollout=rollout,
        event="rollout.halted" if status == R.HALTED else "rollout.rolled_back",
        detail={"reason": reason, "automatic": automatic, "stage": stage.number},
    )


def approve_stage(*, rollout_id: int, actor: Actor, now: datetime | None = None) -> Rollout:
    """Advance to the next stage (or complete on the last one) once the minimums are met.

    The canary analysis runs again under the lock: a regression found at approval time halts
    the rollout instead of advancing it, so an approval never outruns the automatic halt.
    """
    with transaction.atomic():
        rollout, agent = _lock(rollout_id)
        if not rollout.is_active:
            raise InvalidRolloutState(f"The rollout is {rollout.get_status_display().lower()}.")
        stage = _current_stage(rollout)
        readiness = stage_readiness(rollout=rollout, stage=stage, now=now)
        if not readiness.ready:
            raise StageNotReady(readiness.reasons)
        analysis = analyse_stage(rollout=rollout, stage=stage)
        if _halt_if_regressed(rollout=rollout, agent=agent, analysis=analysis):
            return rollout
        moment = timezone.now()
        transition_stage(
            stage, to=St.PASSED, ended_at=moment, verdict="passed", metrics=analysis.as_dict()
        )
        before = _routing(agent)
        next_stage = RolloutStage.objects.filter(rollout=rollout, index=stage.index + 1).first()
        if next_stage is None:
            agent.stable_version_id = rollout.to_version_id
            agent.canary_version = None
            agent.canary_percent = 0
            agent.save(
                update_fields=["stable_version", "canary_version", "canary_percent", "updated_at"]
            )
            transition_rollout(rollout, to=R.COMPLETED, ended_at=moment)
            transition_proposal(
                proposal_id=rollout.proposal_id, to=Proposal.Status.ROLLED_OUT, actor=actor
            )
            action, event = "rollout.complete", "rollout.completed"
        else:
            transition_stage(
                next_stage,
                to=St.RUNNING,
                started_at=moment,
                approved_at=moment,
                approved_by=_user(actor),
                approved_by_label=_label(actor),
            )
            agent.canary_percent = next_stage.percent
            agent.save(update_fields=["canary_percent", "updated_at"])
            transition_rollout(rollout, to=R.RUNNING, current_stage=next_stage.index)
            action, event = "rollout.stage_approve", "rollout.stage_started"
        audit.record(
            workspace=agent.workspace,
            actor=actor,
            action=action,
            target=rollout,
            before=before,
            after={**_routing(agent), "passed_stage": stage.number},
        )
        notify_rollout_event(rollout=rollout, event=event, detail={"passed_stage": stage.number})
    return rollout


def complete_rollout(*, rollout_id: int, actor: Actor) -> Rollout:
    """Approve the final stage: the candidate becomes the stable version."""
    rollout = Rollout.objects.get(pk=rollout_id)
    if rollout.stages.filter(index__gt=rollout.current_stage).exists():
        raise InvalidRolloutState("Only the final stage's approval completes a rollout.")
    return approve_stage(rollout_id=rollout_id, actor=actor)


def halt_rollout(*, rollout_id: int, actor: Actor, reason: str, automatic: bool = False) -> Rollout:
    """Stop the rollout now and send all traffic back to the stable version."""
    with transaction.atomic():
        rollout, agent = _lock(rollout_id)
        if not rollout.is_active:
            raise InvalidRolloutState(f"The rollout is {rollout.get_status_display().lower()}.")
        _halt(
            rollout=rollout,
            agent=agent,
            actor=actor,
            reason=reason or "halted by hand",
            automatic=automatic,
            status=R.HALTED,
            analysis=None,
        )
    return rollout


def roll_back(*, rollout_id: int, actor: Actor, reason: str = "") -> Rollout:
    """Undo a rollout: an active one stops at once; a completed one restores the old stable."""
    reason = reason or "rolled back by hand"
    with transaction.atomic():
        rollout, agent = _lock(rollout_id)
        if rollout.is_active:
            _halt(
                rollout=rollout,
                agent=agent,
                actor=actor,
                reason=reason,
                automatic=False,
                status=R.ROLLED_BACK,
                analysis=None,
            )
            return rollout
        if rollout.status != R.COMPLETED:
            raise InvalidRolloutState(
                f"The rollout is {rollout.get_status_display().lower()}; traffic is already on stable."
            )
        if agent.stable_version_id != rollout.to_version_id:
            raise InvalidRolloutState("The stable version changed since; roll that back first.")
        if Rollout.objects.filter(agent=agent, status__in=Rollout.ACTIVE).exists():
            raise InvalidRolloutState("Another rollout is in progress on this agent.")
        before = _routing(agent)
        agent.stable_version_id = rollout.from_version_id
        agent.save(update_fields=["stable_version", "updated_at"])
        transition_rollout(rollout, to=R.ROLLED_BACK, halt_reason=reason, ended_at=timezone.now())
        audit.record(
            workspace=agent.workspace,
            actor=actor,
            action="rollout.roll_back",
            target=rollout,
            before=before,
            after=_routing(agent),
            comment=reason,
        )
        notify_rollout_event(
            rollout=rollout, event="rollout.rolled_back", detail={"reason": reason}
        )
    return rollout


def _halt_if_regressed(*, rollout: Rollout, agent: Agent, analysis: StageAnalysis) -> bool:
    """The automatic halt (caller holds the locks): True when the canary regressed."""
    if not analysis.comparison.should_halt:
        return False
    _halt(
        rollout=rollout,
        agent=agent,
        actor=None,
        reason=analysis.comparison.reason,
        automatic=True,
        status=R.HALTED,
        analysis=analysis,
    )
    return True


def evaluate_rollout(*, rollout_id: int) -> StageAnalysis | None:
    """The periodic canary check: halt on a regression, flag a stage ready for approval."""
    with transaction.atomic():
        rollout, agent = _lock(rollout_id)
        if not rollout.is_active:
            return None
        stage = _current_stage(rollout)
        analysis = analyse_stage(rollout=rollout, stage=stage)
        if _halt_if_regressed(rollout=rollout, agent=agent, analysis=analysis):
            return analysis
        stage.metrics = analysis.as_dict()
        stage.save(update_fields=["metrics"])
        if rollout.status == R.RUNNING and stage_readiness(rollout=rollout, stage=stage).ready:
            transition_rollout(rollout, to=R.AWAITING_APPROVAL)
            audit.record(
                workspace=agent.workspace,
                actor=None,
                action="rollout.stage_ready",
                target=rollout,
                after={"stage": stage.number},
            )
            notify_rollout_event(
                rollout=rollout, event="rollout.stage_ready", detail={"stage": stage.number}
            )
    return analysis


def active_rollout_ids() -> list[int]:
    return list(Rollout.objects.filter(status__in=Rollout.ACTIVE).values_list("pk", flat=True))
