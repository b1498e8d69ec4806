"""Stale bases: re-apply a proposal's edits to the agent's new stable version.

A proposal is *stale* when it is open and built on a version that is no longer stable.
Rebasing is a three-way merge per document (old base → candidate, old base → new stable):
a clean merge becomes a new revision on the new stable version and replays again (earlier
approvals belong to the old revision, so they reset); a conflict sends the proposal to
changes requested with the conflicting hunks stored for the page and the API, where the
author resolves them in place (`resolve_rebase_conflict`) and the result replays again.
"""

from typing import Any

from django.db import transaction
from django.db.models import F, Q
from merge3 import Merge3

from agents.actors import Actor
from agents.models import SYSTEM_PROMPT_DOCUMENT, ConfigVersion
from agents.services import create_config_version
from dreams.experiments import judging_runs, start_proposal_experiment
from dreams.guards import flags_for_change
from dreams.models import Proposal
from dreams.proposals import InvalidTransition, create_proposal, transition_proposal

S = Proposal.Status
# Open proposals that can still be decided or rolled out: these go stale when stable moves.
STALE_STATUSES = (S.DRAFTED, S.REPLAYING, S.READY, S.CHANGES_REQUESTED, S.APPROVED)
REBASABLE = (S.DRAFTED, S.READY, S.CHANGES_REQUESTED, S.APPROVED)


class RebaseRefused(Exception):
    """Nothing to rebase (not stale, not open, still replaying)."""

    def __init__(self, message: str, *, code: str = "not_stale") -> None:
        self.code = code
        super().__init__(message)


def stale_filter() -> Q:
    """The queryset form of `is_stale` (for the queue and the API list)."""
    return (
        Q(status__in=STALE_STATUSES)
        & ~Q(source=Proposal.Source.HOSTED_DREAM)
        & Q(agent__stable_version__isnull=False)
        & ~Q(base_version=F("agent__stable_version"))
    )


def is_stale(proposal: Proposal) -> bool:
    """Open and built on a version that is no longer the agent's stable one.

    A hosted dream's base is a snapshot of the live memory store, not the stable version, and
    its write is guarded by the store's own content preconditions, so it is never stale here.
    """
    stable_id = proposal.agent.stable_version_id
    return (
        proposal.status in STALE_STATUSES
        and proposal.source != Proposal.Source.HOSTED_DREAM
        and stable_id is not None
        and proposal.base_version_id != stable_id
    )


def merge_text(*, base: str, ours: str, theirs: str) -> tuple[str, list[dict[str, str]]]:
    """Three-way merge of one document; returns the merged text and its conflicts."""
    merger = Merge3(
        base.splitlines(keepends=True),
        ours.splitlines(keepends=True),
        theirs.splitlines(keepends=True),
    )
    merged: list[str] = []
    conflicts: list[dict[str, str]] = []
    for group in merger.merge_groups():
        if group[0] == "conflict":
            _, old, mine, stable = group
            conflicts.append(
                {"base": "".join(old), "proposal": "".join(mine), "stable": "".join(stable)}
            )
            merged += ["<<<<<<< proposal\n", *mine, "=======\n", *stable, ">>>>>>> stable\n"]
        else:
            merged += list(group[1])
    return "".join(merged), conflicts


def merge_documents(
    *, base: dict[str, str], ours: dict[str, str], theirs: dict[str, str]
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Merge every document; a document added or removed on one side only follows that side."""
    merged: dict[str, str] = {}
    conflicts: list[dict[str, Any]] = []
    for name in sorted({*base, *ours, *theirs}, key=lambda n: (n != SYSTEM_PROMPT_DOCUMENT, n)):
        b, o, t = base.get(name), ours.get(name), theirs.get(name)
        if o == b:
            result = t  # only stable changed it (or nobody did)
        elif t in (b, o):
            result = o  # only the proposal changed it, or both the same way
        elif o is None or t is None:
            conflicts.append(
                {
                    "document": name,
                    "hunks": [{"base": b or "", "proposal": o or "", "stable": t or ""}],
                    "merged": t if o is None else o,
                }
            )
            continue
        else:
            text, hunks = merge_text(base=b or "", ours=o, theirs=t)
            if hunks:
                conflicts.append({"document": name, "hunks": hunks, "merged": text})
                continue
            result = text
        if result is not None:
            merged[name] = result
    return merged, conflicts


def rebase_proposal(*, proposal_id: int, actor: Actor) -> Proposal:
    """Rebase a stale proposal onto the stable version; returns the new revision or, on a
    conflict, the same proposal in changes requested."""
    with transaction.atomic():
        old = (
            Proposal.objects.select_for_update(of=("self",))
            .select_related("agent__workspace", "agent__stable_version", "base_version")
            .select_related("candidate_version")
            .get(pk=proposal_id)
        )
        if old.status == S.REPLAYING:
            raise RebaseRefused("Replays are still running; rebase once they finish.", code="busy")
        if old.status not in REBASABLE:
            raise InvalidTransition(old, S.SUPERSEDED)
        if not is_stale(old):
            raise RebaseRefused("This proposal is already built on the stable version.")
        stable: ConfigVersion = old.agent.stable_version  # type: ignore[assignment]
        merged, conflicts = merge_documents(
            base=old.base_version.documents,
            ours=old.candidate_version.documents,
            theirs=stable.documents,
        )
        if conflicts:
            Proposal.objects.filter(pk=old.pk).update(
                metadata={
                    **old.metadata,
                    "rebase_conflict": {"onto": stable.number, "documents": conflicts},
                }
            )
            names = ", ".join(c["document"] for c in conflicts)
            if old.status != S.CHANGES_REQUESTED:
                transition_proposal(
                    proposal_id=old.pk,
                    to=S.CHANGES_REQUESTED,
                    actor=actor,
                    comment=f"Rebase onto v{stable.number} conflicts in {names}.",
                    action="proposal.rebase_conflict",
                )
            old.refresh_from_db()
            return old
        new = _revise_onto(old=old, stable=stable, merged=merged, actor=actor)
    new.refresh_from_db()
    return new


def _revise_onto(
    *,
    old: Proposal,
    stable: ConfigVersion,
    merged: dict[str, str],
    actor: Actor,
    how: str = "Rebased",
) -> Proposal:
    """The merged documents as a new revision on `stable`; the old one is superseded and the
    new one replays on the same target runs (approvals belong to the old revision)."""
    candidate = old.candidate_version
    merged = dict(merged)
    version = create_config_version(
        agent=old.agent,
        system_prompt=merged.pop(SYSTEM_PROMPT_DOCUMENT, ""),
        memory_documents=merged,
        tools=candidate.tools,
        model=candidate.model,
        parent=stable,
        source=candidate.source,
        author=candidate.author,
        note=f"Rebase of proposal #{old.pk} onto v{stable.number}",
        actor=actor,
    )
    targets = judging_runs(old)
    metadata = {k: v for k, v in old.metadata.items() if k != "rebase_conflict"}
    new = create_proposal(
        agent=old.agent,
        base_version=stable,
        candidate_version=version,
        title=old.title,
        rationale=old.rationale,
        cycle=old.cycle,
        patterns=list(old.patterns.all()),
        flags=flags_for_change(agent=old.agent, base=stable, candidate=version, runs=targets),
        source=old.source,
        author=old.author,
        revision_of=old,
        metadata={**metadata, "rebased_from": old.base_version.number},
    )
    if old.assignee_id:
        Proposal.objects.filter(pk=new.pk).update(assignee_id=old.assignee_id)
    transition_proposal(
        proposal_id=old.pk,
        to=S.SUPERSEDED,
        actor=actor,
        comment=f"{how} onto v{stable.number} as proposal #{new.pk}.",
        action="proposal.rebase",
    )
    # The same runs judge the rebased text; the regression sample is drawn afresh.
    start_proposal_experiment(new)
    return new


class ConflictUnresolved(Exception):
    """The resolution is incomplete or still has conflict markers; `fields` names each document."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v[0]}" for k, v in fields.items()))


def has_markers(text: str) -> bool:
    """Whether a resolved text still holds a conflict-marker line as merge_text writes them."""
    # "=======" alone could be a Markdown heading underline, so only the outer markers count.
    return any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.split("\n"))


def resolve_rebase_conflict(
    *, proposal_id: int, actor: Actor, documents: dict[str, str | None]
) -> Proposal:
    """Finish a conflicted rebase with the author's text for each conflicting document: the
    clean parts of the merge plus these texts become a new revision on the stable version,
    which replays again with approvals reset."""
    with transaction.atomic():
        old = (
            Proposal.objects.select_for_update(of=("self",))
            .select_related("agent__workspace", "agent__stable_version", "base_version")
            .select_related("candidate_version")
            .get(pk=proposal_id)
        )
        conflict = old.metadata.get("rebase_conflict")
        if not conflict:
            raise RebaseRefused(
                "This proposal has no rebase conflict to resolve.", code="no_conflict"
            )
        if old.status != S.CHANGES_REQUESTED:
            raise InvalidTransition(old, S.SUPERSEDED)
        stable: ConfigVersion = old.agent.stable_version  # type: ignore[assignment]
        if stable.number != conflict.get("onto"):
            raise RebaseRefused(
                f"The stable version moved to v{stable.number} since the conflict onto "
                f"v{conflict.get('onto')}; rebase again.",
                code="stable_moved",
            )
        merged, conflicts = merge_documents(
            base=old.base_version.documents,
            ours=old.candidate_version.documents,
            theirs=stable.documents,
        )
        names = {c["document"] for c in conflicts}
        errors: dict[str, list[str]] = {}
        for name in sorted(names - set(documents)):
            errors[f"documents.{name}"] = ["give the resolved text of this conflicting document"]
        for name, text in documents.items():
            if name not in names:
                errors[f"documents.{name}"] = ["not a conflicting document of this rebase"]
            elif text is None and name == SYSTEM_PROMPT_DOCUMENT:
                errors[f"documents.{name}"] = ["the system prompt cannot be removed"]
            elif text is not None and has_markers(text):
                errors[f"documents.{name}"] = [
                    "still has conflict markers (<<<<<<< or >>>>>>> lines)"
                ]
        if errors:
            raise ConflictUnresolved(errors)
        for name, text in documents.items():
            if text is None:
                merged.pop(name, None)
            else:
                merged[name] = text.replace("\r\n", "\n")
        new = _revise_onto(
            old=old, stable=stable, merged=merged, actor=actor, how="Conflict resolved; rebased"
        )
    new.refresh_from_db()
    return new
