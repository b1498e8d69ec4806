"""Review decisions: approve, reject, request changes, edit, assign.

Each verb locks the proposal row, checks the caller's version of the page
(`lock_version`), writes its Decision and the audit row in the same transaction, and
changes status only through `dreams.proposals.transition_proposal`.
"""

import re
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents import audit
from agents.actors import Actor, Person
from agents.models import Membership, Run
from agents.services import create_config_version
from dreams import stats
from dreams.experiments import start_proposal_experiment
from dreams.experiments.evidence import latest_verdict
from dreams.guards import flags_for_change
from dreams.managed.selectors import managed_link_for
from dreams.models import Experiment, Proposal
from dreams.proposals import InvalidTransition, create_proposal, transition_proposal
from dreams.rebase import is_stale
from dreams.tasks import apply_memory
from reviews.models import Decision

S = Proposal.Status
LINE_KEY = re.compile(r"[LRH]\d{1,6}")


class DecisionRefused(Exception):
    """The decision breaks a review rule (missing comment, self-approval, flag needs admin)."""

    def __init__(self, message: str, *, code: str = "refused") -> None:
        self.code = code
        super().__init__(message)


class StaleProposal(InvalidTransition):
    """Someone decided or edited since the caller loaded the page."""


def _role(*, proposal: Proposal, user: Person) -> str | None:
    return (
        Membership.objects.filter(workspace_id=proposal.agent.workspace_id, user=user)
        .values_list("role", flat=True)
        .first()
    )


def _lock(*, proposal_id: int, expected_lock_version: int | None, to: str) -> Proposal:
    proposal = (
        Proposal.objects.select_for_update(of=("self",))
        .select_related("agent__workspace")
        .get(pk=proposal_id)
    )
    if expected_lock_version is not None and proposal.lock_version != expected_lock_version:
        raise StaleProposal(proposal, to)
    return proposal


def _check_reviewer(*, proposal: Proposal, reviewer: Person) -> str:
    role = _role(proposal=proposal, user=reviewer)
    if role not in (Membership.Role.REVIEWER, Membership.Role.ADMIN):
        raise DecisionRefused("Only reviewers and admins can decide on proposals.", code="role")
    if proposal.flags and role != Membership.Role.ADMIN:
        raise DecisionRefused(
            "This proposal is flagged; only a workspace admin can decide on it.", code="flagged"
        )
    return role


def _bump(proposal: Proposal) -> None:
    Proposal.objects.filter(pk=proposal.pk).update(lock_version=F("lock_version") + 1)
    proposal.lock_version += 1


def approvals_needed(*, proposal: Proposal) -> int:
    return max(1, proposal.agent.required_approvals)


def approve_proposal(
    *,
    proposal_id: int,
    reviewer: Person,
    comment: str = "",
    expected_lock_version: int | None = None,
    acknowledge_verdict: bool = False,
) -> Proposal:
    """Record an approval; the last required one moves the proposal to `approved`.

    A proposal whose evidence is not measurable, regresses or is noise is approved only with
    `acknowledge_verdict`, and the acknowledgement is written to the audit log."""
    with transaction.atomic():
        proposal = _lock(
            proposal_id=proposal_id, expected_lock_version=expected_lock_version, to=S.APPROVED
        )
        _check_reviewer(proposal=proposal, reviewer=reviewer)
        if proposal.status not in (S.READY, S.HALTED):
            raise InvalidTransition(proposal, S.APPROVED)
        if is_stale(proposal):
            stable = proposal.agent.stable_version
            assert stable is not None  # noqa: S101 - a stale proposal's agent has a stable version
            raise DecisionRefused(
                f"The stable version is now v{stable.number}, not this "
                "proposal's base; rebase it onto the stable version before approving.",
                code="stale_base",
            )
        needed = approvals_needed(proposal=proposal)
        if needed >= 2 and proposal.author_id == reviewer.pk:
            raise DecisionRefused(
                "You edited this proposal; with two approvals required, another reviewer must approve it.",
                code="self_approval",
            )
        approvals = proposal.decisions.current_approvals()
        if approvals.filter(reviewer=reviewer).exists():
            raise DecisionRefused("You have already approved this proposal.", code="duplicate")
        verdict, why = latest_verdict(proposal_id=proposal.pk)
        if verdict in stats.NEEDS_ACKNOWLEDGEMENT:
            if not acknowledge_verdict:
                raise DecisionRefused(
                    f"The evidence says “{stats.VERDICTS[verdict].lower()}”: "
                    f"{stats.VERDICT_HELP[verdict]} Acknowledge this to approve anyway.",
                    code="verdict_unacknowledged",
                )
            audit.record(
                workspace=proposal.agent.workspace,
                actor=reviewer,
                action="proposal.verdict_acknowledged",
                target=proposal,
                after={"verdict": verdict, "reason": why},
                comment=comment,
            )
        # One decision per reviewer: an approval from before a halt is given anew.
        Decision.objects.update_or_create(
            proposal=proposal,
            reviewer=reviewer,
            defaults={
                "kind": Decision.Kind.APPROVE,
                "comment": comment,
                "lock_version": proposal.lock_version,
                "created_at": timezone.now(),
            },
        )
        count = approvals.count()
        if count >= needed:
            proposal = transition_proposal(
                proposal_id=proposal.pk,
                to=S.APPROVED,
                actor=reviewer,
                comment=comment,
                action="proposal.approve",
            )
            if proposal.source == Proposal.Source.HOSTED_DREAM and managed_link_for(proposal.agent):
                # For a Managed Agent the rollout is the write into its live memory store.
                apply_memory.delay_on_commit(proposal.pk, reviewer.pk)
        else:
            _bump(proposal)
            audit.record(
                workspace=proposal.agent.workspace,
                actor=reviewer,
                action="proposal.approval",
                target=proposal,
                after={"approvals": count, "required": needed},
                comment=comment,
            )
    return proposal


def _decide_with_comment(
    *,
    proposal_id: int,
    reviewer: Person,
    comment: str,
    expected_lock_version: int | None,
    to: str,
    kind: str,
    action: str,
) -> Proposal:
    comment = comment.strip()
    if not comment:
        raise DecisionRefused(
            "A comment is required: tell the author what is wrong.", code="comment_required"
        )
    with transaction.atomic():
        proposal = _lock(
            proposal_id=proposal_id, expected_lock_version=expected_lock_version, to=to
        )
        _check_reviewer(proposal=proposal, reviewer=reviewer)
        Decision.objects.create(
            proposal=proposal,
            reviewer=reviewer,
            kind=kind,
            comment=comment,
            lock_version=proposal.lock_version,
        )
        proposal = transition_proposal(
            proposal_id=proposal.pk, to=to, actor=reviewer, comment=comment, action=action
        )
    return proposal


def reject_proposal(
    *, proposal_id: int, reviewer: Person, comment: str, expected_lock_version: int | None = None
) -> Proposal:
    """Reject for good; a comment is required."""
    return _decide_with_comment(
        proposal_id=proposal_id,
        reviewer=reviewer,
        comment=comment,
        expected_lock_version=expected_lock_version,
        to=S.REJECTED,
        kind=Decision.Kind.REJECT,
        action="proposal.reject",
    )


def request_changes(
    *, proposal_id: int, reviewer: Person, comment: str, expected_lock_version: int | None = None
) -> Proposal:
    """Send the proposal back with a required comment; an edit then makes a new revision."""
    return _decide_with_comment(
        proposal_id=proposal_id,
        reviewer=reviewer,
        comment=comment,
        expected_lock_version=expected_lock_version,
        to=S.CHANGES_REQUESTED,
        kind=Decision.Kind.REQUEST_CHANGES,
        action="proposal.request_changes",
    )


EDITABLE = (S.DRAFTED, S.READY, S.CHANGES_REQUESTED)


def edit_proposal(
    *,
    proposal_id: int,
    editor: Person,
    system_prompt: str,
    memory_documents: dict[str, str],
    note: str = "",
    expected_lock_version: int | None = None,
) -> Proposal:
    """Save edited candidate text as a new revision (new config version, new experiment).

    The old revision becomes `superseded` and stays readable; its approvals do not carry over.
    """
    with transaction.atomic():
        old = _lock(
            proposal_id=proposal_id, expected_lock_version=expected_lock_version, to=S.SUPERSEDED
        )
        role = _role(proposal=old, user=editor)
        if role not in (Membership.Role.REVIEWER, Membership.Role.ADMIN):
            raise DecisionRefused("Only reviewers and admins can edit proposals.", code="role")
        if old.status not in EDITABLE:
            raise InvalidTransition(old, S.SUPERSEDED)
        candidate = old.candidate_version
        if (
            system_prompt == candidate.system_prompt
            and memory_documents == candidate.memory_documents
        ):
            raise DecisionRefused("Nothing changed: edit the text before saving.", code="no_change")
        version = create_config_version(
            agent=old.agent,
            system_prompt=system_prompt,
            memory_documents=memory_documents,
            tools=candidate.tools,
            model=candidate.model,
            parent=old.base_version,
            source=candidate.Source.HUMAN,
            author=editor,
            note=note or f"Edit of proposal #{old.pk}",
        )
        new = create_proposal(
            agent=old.agent,
            base_version=old.base_version,
            candidate_version=version,
            title=old.title,
            rationale=old.rationale,
            cycle=old.cycle,
            patterns=list(old.patterns.all()),
            # An edit is guarded like a dream's draft: the person may touch protected text too.
            flags=flags_for_change(
                agent=old.agent,
                base=old.base_version,
                candidate=version,
                runs=list(Run.objects.filter(failure_patterns__in=old.patterns.all()).distinct()),
            ),
            source=Proposal.Source.HUMAN,
            author=editor,
            revision_of=old,
            metadata={**old.metadata, "edit_note": note},
        )
        if old.assignee_id:
            Proposal.objects.filter(pk=new.pk).update(assignee_id=old.assignee_id)
        transition_proposal(
            proposal_id=old.pk,
            to=S.SUPERSEDED,
            actor=editor,
            comment=note,
            action="proposal.edit",
        )
        # The edited text is replayed on the same runs (and regression sample) as the revision
        # it replaces.
        previous = Experiment.objects.filter(proposal=old).order_by("-id").first()
        regression = list(previous.regression_runs.all()) if previous else None
        start_proposal_experiment(new, regression_runs=regression or None)
    new.refresh_from_db()
    return new


def assign_proposal(*, proposal_id: int, actor: Person, assignee: Person | None) -> Proposal:
    """Give the proposal to one reviewer (or nobody); the assignee must be able to review."""
    with transaction.atomic():
        proposal = _lock(proposal_id=proposal_id, expected_lock_version=None, to="assign")
        if _role(proposal=proposal, user=actor) not in (
            Membership.Role.REVIEWER,
            Membership.Role.ADMIN,
        ):
            raise DecisionRefused("Only reviewers and admins can assign proposals.", code="role")
        if assignee is not None and _role(proposal=proposal, user=assignee) not in (
            Membership.Role.REVIEWER,
            Membership.Role.ADMIN,
        ):
            raise DecisionRefused(
                "The assignee must be a reviewer in this workspace.", code="assignee"
            )
        before = {"assignee": proposal.assignee.get_username() if proposal.assignee else None}
        proposal.assignee = assignee
        proposal.save(update_fields=["assignee", "updated_at"])
        audit.record(
            workspace=proposal.agent.workspace,
            actor=actor,
            action="proposal.assign",
            target=proposal,
            before=before,
            after={"assignee": assignee.get_username() if assignee else None},
        )
    return proposal


def comment_on_proposal(
    *,
    proposal_id: int,
    author: Person,
    body: str,
    document: str = "",
    line: str = "",
    quote: str = "",
    reply_to_id: int | None = None,
) -> Any:
    """Add a comment (any member who can review): free, on a diff line or hunk, or a reply."""
    from reviews.models import ReviewComment

    body = body.strip()
    if not body:
        raise DecisionRefused("Write something before posting.", code="empty")
    if bool(document) != bool(line) or (line and not LINE_KEY.fullmatch(line)):
        raise DecisionRefused("A diff comment needs a document and a line.", code="anchor")
    with transaction.atomic():
        proposal = Proposal.objects.select_related("agent__workspace").get(pk=proposal_id)
        if _role(proposal=proposal, user=author) not in (
            Membership.Role.REVIEWER,
            Membership.Role.ADMIN,
        ):
            raise DecisionRefused("Only reviewers and admins can comment.", code="role")
        parent = None
        if reply_to_id is not None:
            parent = ReviewComment.objects.filter(
                pk=reply_to_id, proposal=proposal, reply_to__isnull=True
            ).first()
            if parent is None:
                raise DecisionRefused("That thread is not on this proposal.", code="anchor")
            document, line, quote = parent.document, parent.line, ""
        comment = ReviewComment.objects.create(
            proposal=proposal,
            author=author,
            body=body,
            document=document[:300],
            line=line,
            quote=quote[:1000],
            reply_to=parent,
        )
        if parent is not None and parent.resolved_at:
            # A reply reopens a resolved thread, as on a pull request.
            ReviewComment.objects.filter(pk=parent.pk).update(resolved_at=None, resolved_by=None)
        audit.record(
            workspace=proposal.agent.workspace,
            actor=author,
            action="proposal.comment",
            target=proposal,
            after={"document": document, "line": line} if line else None,
            comment=body,
        )
    return comment


def save_replays_as_run_set(
    *, proposal: Proposal, actor: Actor, name: str, outcome: str = "", pinned: bool = False
) -> Any:
    """A run set of the runs the proposal's latest experiment replayed (all, or one outcome
    such as `regressed`), so they can be pinned for every later experiment."""
    from agents.models import RunSet
    from agents.run_sets import RunSetInvalid, create_run_set
    from reviews.replays import OUTCOMES, filter_replay_rows, replay_rows

    if outcome and outcome not in {key for key, _ in OUTCOMES}:
        raise RunSetInvalid({"outcome": [f"must be one of {', '.join(k for k, _ in OUTCOMES)}"]})
    experiment = Experiment.objects.filter(proposal=proposal).order_by("-id").first()
    if experiment is None:
        raise RunSetInvalid({"proposal": ["no experiment has replayed this proposal yet"]})
    rows = filter_replay_rows(replay_rows(experiment=experiment), outcome)
    if not rows:
        raise RunSetInvalid({"outcome": ["no replayed runs with this outcome"]})
    return create_run_set(
        agent=proposal.agent,
        actor=actor,
        name=name,
        pinned=pinned,
        external_ids=[row.external_id for row in rows],
        origin=RunSet.Origin.PROPOSAL,
        origin_detail={"proposal": proposal.pk, "experiment": experiment.pk, "outcome": outcome},
    )


def resolve_thread(*, comment_id: int, actor: Person, resolved: bool = True) -> Any:
    """Resolve (or reopen) a diff comment thread; reviewers and admins only."""
    from reviews.models import ReviewComment

    with transaction.atomic():
        root = (
            ReviewComment.objects.select_for_update()
            .select_related("proposal__agent__workspace")
            .get(pk=comment_id)
        )
        if root.reply_to_id is not None:
            raise DecisionRefused("Resolve the thread from its first comment.", code="anchor")
        proposal = root.proposal
        if _role(proposal=proposal, user=actor) not in (
            Membership.Role.REVIEWER,
            Membership.Role.ADMIN,
        ):
            raise DecisionRefused("Only reviewers and admins can resolve threads.", code="role")
        root.resolved_at = timezone.now() if resolved else None
        root.resolved_by = actor if resolved else None
        root.save(update_fields=["resolved_at", "resolved_by"])
        audit.record(
            workspace=proposal.agent.workspace,
            actor=actor,
            action="proposal.thread_resolve" if resolved else "proposal.thread_reopen",
            target=proposal,
            after={"comment": root.pk, "document": root.document, "line": root.line},
        )
    return root
