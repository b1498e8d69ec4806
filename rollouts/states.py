"""The rollout and stage state machines as data (DESIGN.md, *States*), like `dreams/proposals.py`.

Every status change of a Rollout or a RolloutStage goes through `transition_rollout` or
`transition_stages`: checked against the table, written by a conditional update on the old
status, so a change that lost a race raises instead of overwriting. Rollout services hold the
row locks; the audit log and webhooks stay with them (`rollouts/services.py`).
"""

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from agents.states import stored_status, write_status
from rollouts.models import Rollout, RolloutStage

R = Rollout.Status
St = RolloutStage.Status

ROLLOUT_TRANSITIONS: dict[str, set[str]] = {
    # running → running: a stage approved before the periodic check flagged it; the next starts.
    R.RUNNING: {R.RUNNING, R.AWAITING_APPROVAL, R.COMPLETED, R.HALTED, R.ROLLED_BACK},
    R.AWAITING_APPROVAL: {R.RUNNING, R.COMPLETED, R.HALTED, R.ROLLED_BACK},
    # A completed rollout can still be undone: the old stable version comes back.
    R.COMPLETED: {R.ROLLED_BACK},
    # A halted one never runs again; a new approval starts a new rollout at stage 1.
    R.HALTED: set(),
    R.ROLLED_BACK: set(),
}

STAGE_TRANSITIONS: dict[str, set[str]] = {
    St.PENDING: {St.RUNNING, St.SKIPPED},
    St.RUNNING: {St.PASSED, St.HALTED},
    St.PASSED: set(),
    St.HALTED: set(),
    St.SKIPPED: set(),
}


class RolloutError(Exception):
    """A rollout action that cannot happen now; views answer 409 with the message."""

    code = "rollout_conflict"


class InvalidRolloutState(RolloutError):
    code = "invalid_rollout_state"


class InvalidTransition(InvalidRolloutState):
    """A status change the rollout or stage table does not allow (or that lost a race)."""

    def __init__(self, obj: Rollout | RolloutStage, to: str, *, current: str | None = None) -> None:
        self.obj = obj
        self.current = current if current is not None else obj.status
        self.to = to
        what = f"Rollout #{obj.pk}" if isinstance(obj, Rollout) else f"Rollout stage #{obj.pk}"
        super().__init__(f"{what} is {self.current}; it cannot become {to}.")


def ensure_rollout_transition(rollout: Rollout, *, to: str) -> None:
    if to not in ROLLOUT_TRANSITIONS[rollout.status]:
        raise InvalidTransition(rollout, to)


def ensure_stage_transition(stage: RolloutStage, *, to: str) -> None:
    if to not in STAGE_TRANSITIONS[stage.status]:
        raise InvalidTransition(stage, to)


def transition_rollout(rollout: Rollout, *, to: str, **fields: Any) -> Rollout:
    """Move `rollout` to `to`, writing `fields` with it, only if its stored status is unchanged."""
    ensure_rollout_transition(rollout, to=to)
    if not write_status(rollout, {**fields, "status": to, "updated_at": timezone.now()}):
        raise InvalidTransition(rollout, to, current=stored_status(rollout))
    return rollout


def transition_stage(stage: RolloutStage, *, to: str, **fields: Any) -> RolloutStage:
    """Move one stage to `to`, writing `fields` with it, only if its stored status is unchanged."""
    ensure_stage_transition(stage, to=to)
    if not write_status(stage, {**fields, "status": to}):
        raise InvalidTransition(stage, to, current=stored_status(stage))
    return stage


def transition_stages(stages: QuerySet[RolloutStage], *, to: str) -> int:
    """Move every stage of `stages` to `to` in one update; raises if any of them may not."""
    sources = [status for status, targets in STAGE_TRANSITIONS.items() if to in targets]
    stuck = stages.exclude(status__in=sources).first()
    if stuck is not None:
        raise InvalidTransition(stuck, to)
    return stages.filter(status__in=sources).update(status=to)
