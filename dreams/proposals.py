"""Proposal creation and the proposal state machine (DESIGN.md, *States*).

Every status change goes through `transition_proposal`: row locked, transition checked
against `ALLOWED_TRANSITIONS`, audit row written, all in one transaction.
"""

from typing import Any

from django.db import transaction
from django.utils import timezone

from agents import audit
from agents.actors import Actor, user_of
from agents.models import Agent, ConfigVersion
from dreams import signals
from dreams.models import DreamCycle, FailurePattern, Proposal

S = Proposal.Status
# A reviewer's (or the system's) final word on the change set: what the dream produced is no longer
# needed as input once the proposal reaches one of these.
DECIDED = {S.APPROVED, S.REJECTED, S.SUPERSEDED}

ALLOWED_TRANSITIONS: dict[str, set[str]] = {
    # changes_requested from drafted or approved: a rebase onto a new stable version conflicted.
    S.DRAFTED: {S.REPLAYING, S.READY, S.CHANGES_REQUESTED, S.SUPERSEDED},
    S.REPLAYING: {S.READY, S.DRAFTED, S.SUPERSEDED},
    S.READY: {S.APPROVED, S.REJECTED, S.CHANGES_REQUESTED, S.REPLAYING, S.SUPERSEDED},
    S.CHANGES_REQUESTED: {S.REPLAYING, S.REJECTED, S.SUPERSEDED},
    S.APPROVED: {S.ROLLING_OUT, S.CHANGES_REQUESTED, S.SUPERSEDED},
    S.ROLLING_OUT: {S.ROLLED_OUT, S.ROLLED_BACK, S.HALTED},
    # A halted rollout's proposal can be approved again (the rollout restarts at stage 1),
    # sent back for changes, or replaced by a revision.
    S.HALTED: {S.APPROVED, S.CHANGES_REQUESTED, S.SUPERSEDED},
    S.REJECTED: set(),
    S.ROLLED_OUT: set(),
    S.ROLLED_BACK: set(),
    S.SUPERSEDED: set(),
}


class InvalidTransition(Exception):
    """Raised for a status change the state machine does not allow; views answer 409."""

    def __init__(self, proposal: Proposal, to: str) -> None:
        self.proposal = proposal
        self.current = proposal.status
        self.to = to
        super().__init__(
            f"Proposal #{proposal.pk} is {proposal.get_status_display().lower()}; it cannot become {to}."
        )


def ensure_transition(proposal: Proposal, *, to: str) -> None:
    if to not in ALLOWED_TRANSITIONS[proposal.status]:
        raise InvalidTransition(proposal, to)


def transition_proposal(
    *,
    proposal_id: int,
    to: str,
    actor: Actor = None,
    comment: str = "",
    expected_lock_version: int | None = None,
    action: str | None = None,
) -> Proposal:
    """Move a proposal to `to` under a row lock; a stale `expected_lock_version` is an InvalidTransition."""
    with transaction.atomic():
        proposal = (
            Proposal.objects.select_for_update()
            .select_related("agent__workspace")
            .get(pk=proposal_id)
        )
        if expected_lock_version is not None and proposal.lock_version != expected_lock_version:
            raise InvalidTransition(proposal, to)
        ensure_transition(proposal, to=to)
        before = proposal.status
        proposal.status = to
        proposal.lock_version += 1
        fields = ["status", "lock_version", "updated_at"]
        if to == S.READY:
            proposal.ready_at = timezone.now()
            fields.append("ready_at")
        if to in (S.APPROVED, S.REJECTED, S.CHANGES_REQUESTED):
            proposal.decided_at = timezone.now()
            fields.append("decided_at")
        proposal.save(update_fields=fields)
        if to in DECIDED:
            proposal_id = proposal.pk
            transaction.on_commit(
                lambda: signals.proposal_decided.send(
                    sender=Proposal, proposal_id=proposal_id, status=to
                )
            )
        audit.record(
            workspace=proposal.agent.workspace,
            actor=actor,
            action=action or f"proposal.{to}",
            target=proposal,
            before={"status": before},
            after={"status": to},
            comment=comment,
        )
    return proposal


def create_proposal(
    *,
    agent: Agent,
    base_version: ConfigVersion,
    candidate_version: ConfigVersion,
    title: str,
    rationale: str = "",
    cycle: DreamCycle | None = None,
    patterns: list[FailurePattern] | None = None,
    flags: list[dict[str, str]] | None = None,
    source: str = Proposal.Source.DREAM,
    author: Actor = None,
    revision_of: Proposal | None = None,
    metadata: dict[str, Any] | None = None,
) -> Proposal:
    """Create a drafted proposal (a change set = base version → candidate version)."""
    with transaction.atomic():
        proposal = Proposal.objects.create(
            agent=agent,
            cycle=cycle,
            base_version=base_version,
            candidate_version=candidate_version,
            title=title[:300],
            rationale=rationale,
            flags=flags or [],
            source=source,
            author=user_of(author),
            revision_of=revision_of,
            revision=(revision_of.revision + 1) if revision_of else 1,
            metadata=metadata or {},
        )
        if patterns:
            proposal.patterns.set(patterns)
        audit.record(
            workspace=agent.workspace,
            actor=author,
            action="proposal.create",
            target=proposal,
            after={"candidate_version": candidate_version.number, "source": source},
        )
    return proposal
