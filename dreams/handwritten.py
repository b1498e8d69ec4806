"""A person's own change, proposed by hand: built against the stable version, guarded by the
same guards, replayed by the same experiment and reviewed in the same queue as a dream's draft.

The candidate is full documents or unified-diff edits; the runs that judge it are a run set,
failures matching a filter, chosen run ids, or by default the failures no dream has studied yet.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction

from agents.actors import Actor
from agents.models import SYSTEM_PROMPT_DOCUMENT, Agent, ApiKey, ConfigVersion, Run, RunSet
from agents.selectors import runs_for
from agents.services import create_config_version
from dreams.experiments import start_proposal_experiment
from dreams.guards import flags_for_change
from dreams.models import Proposal
from dreams.patches import PatchError, apply_patch
from dreams.patterns import selectable_failures
from dreams.proposals import create_proposal

FAILED = (Run.Status.FAILURE, Run.Status.ERROR)


class ProposalInvalid(Exception):
    """The proposed change cannot be built; `fields` names what is wrong (dotted paths)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v[0]}" for k, v in fields.items()))


@dataclass
class RunChoice:
    """Which runs judge the change: a run set, explicit ids, failures matching a filter, else
    the unstudied failures."""

    run_ids: list[int] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    config_version: int | None = None
    negative_feedback: bool | None = None
    use_filter: bool = False
    run_set: int | None = None
    run_set_name: str = ""  # filled in when the set is found

    @property
    def label(self) -> str:
        if self.run_set is not None:
            return f"run set {self.run_set_name}".strip()
        if self.run_ids:
            return "chosen runs"
        return "failures matching a filter" if self.use_filter else "unstudied failures"


def candidate_documents(
    *,
    stable: ConfigVersion,
    documents: dict[str, str | None] | None = None,
    edits: list[dict[str, str]] | None = None,
) -> dict[str, str]:
    """The candidate's documents: the stable ones with whole texts replaced or patches applied.

    `documents` maps a name (`system_prompt` or a memory path) to its new text, or None to
    remove a memory document; `edits` are `{document, patch}` unified diffs against stable.
    """
    current = stable.documents
    errors: dict[str, list[str]] = {}
    if documents and edits:
        raise ProposalInvalid({"edits": ["give documents or edits, not both"]})
    for name, text in (documents or {}).items():
        if text is None:
            if name == SYSTEM_PROMPT_DOCUMENT:
                errors[f"documents.{name}"] = ["the system prompt cannot be removed"]
            current.pop(name, None)
        elif "\x00" in text:
            errors[f"documents.{name}"] = ["must not contain NUL characters"]
        else:
            current[name] = text.replace("\r\n", "\n")
    for index, edit in enumerate(edits or []):
        name = edit.get("document", "")
        if name not in current:
            errors[f"edits[{index}].document"] = [f"no document {name!r} in the stable version"]
            continue
        try:
            current[name] = apply_patch(current[name], edit.get("patch", ""))
        except PatchError as exc:
            errors[f"edits[{index}].patch"] = [str(exc)]
    if errors:
        raise ProposalInvalid(errors)
    if current == stable.documents:
        raise ProposalInvalid({"documents": ["the candidate is the same as the stable version"]})
    return current


def judging_runs(*, agent: Agent, choice: RunChoice) -> list[Run]:
    """The target runs of the experiment, newest first, at most REVERIE_DREAM_MAX_RUNS."""
    limit = settings.REVERIE_DREAM_MAX_RUNS
    if choice.run_set is not None:
        run_set = RunSet.objects.filter(agent=agent, pk=choice.run_set).first()
        if run_set is None:
            raise ProposalInvalid({"runs.run_set": ["no such run set for this agent"]})
        choice.run_set_name = run_set.name
        runs = list(run_set.runs().order_by("-started_at", "-id")[:limit])
        if not runs:
            raise ProposalInvalid({"runs.run_set": ["the run set has no stored runs"]})
        return runs
    if choice.run_ids:
        runs = list(Run.objects.filter(agent=agent, pk__in=choice.run_ids))
        missing = sorted(set(choice.run_ids) - {r.pk for r in runs})
        if missing:
            raise ProposalInvalid(
                {"runs.run_ids": [f"not runs of this agent: {', '.join(map(str, missing[:10]))}"]}
            )
        return runs[:limit]
    if choice.use_filter:
        queryset = runs_for(
            agent.workspace,
            agent_slug=agent.slug,
            since=choice.since,
            until=choice.until,
            negative_feedback=choice.negative_feedback,
            config_version=choice.config_version,
        ).filter(status__in=FAILED)
    else:
        queryset = selectable_failures(agent=agent)
    return list(queryset.order_by("-started_at", "-id")[:limit])


def propose_change(
    *,
    agent: Agent,
    actor: Actor,
    title: str,
    rationale: str = "",
    documents: dict[str, str | None] | None = None,
    edits: list[dict[str, str]] | None = None,
    runs: RunChoice | None = None,
) -> Proposal:
    """Create a person's proposal on the stable version, guard it and start its replay."""
    if agent.stable_version_id is None:
        raise ProposalInvalid({"agent": ["the agent has no stable version to change"]})
    stable = agent.stable_version
    assert stable is not None  # noqa: S101 - narrowed above
    wanted = candidate_documents(stable=stable, documents=documents, edits=edits)
    choice = runs or RunChoice()
    targets = judging_runs(agent=agent, choice=choice)
    person = actor.created_by if isinstance(actor, ApiKey) else actor
    with transaction.atomic():
        version = create_config_version(
            agent=agent,
            system_prompt=wanted.pop(SYSTEM_PROMPT_DOCUMENT),
            memory_documents=wanted,
            tools=stable.tools,
            model=stable.model,
            parent=stable,
            source=ConfigVersion.Source.HUMAN,
            author=person,
            note=title[:300],
            actor=actor,
        )
        proposal = create_proposal(
            agent=agent,
            base_version=stable,
            candidate_version=version,
            title=title,
            rationale=rationale,
            flags=flags_for_change(agent=agent, base=stable, candidate=version, runs=targets),
            source=Proposal.Source.HUMAN,
            author=person or actor,  # a key without a person is still named in the audit log
            metadata={
                "written_by": _label(actor),
                "judged_on": choice.label,
                "target_run_ids": [run.pk for run in targets],
            },
        )
        start_proposal_experiment(proposal)
    proposal.refresh_from_db()
    return proposal


def _label(actor: Actor) -> str:
    if isinstance(actor, ApiKey):
        return f"API key {actor.name} ({actor.prefix}…)"
    return actor.get_username() if actor is not None and actor.is_authenticated else "system"
