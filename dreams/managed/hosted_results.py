"""Finishing a hosted dream: usage, cycle status, and on success the memory diff as a proposal.

The input and output memory stores are read in full; the candidate config is the base version
with its memory documents replaced by the output store, so the proposal page shows the exact
added / changed / removed memories like any other proposal.
"""

import logging
from dataclasses import dataclass
from typing import Any

import anthropic
from anthropic.types.beta.memory_stores import BetaManagedAgentsMemory as Memory
from django.db import transaction
from django.utils import timezone

from agents import audit
from agents.models import Agent, ConfigVersion
from agents.pricing import cost_of
from agents.services import create_config_version
from dreams.cycles import transition_cycle
from dreams.guards import flags_for_change
from dreams.managed.models import HostedDream
from dreams.models import DreamCycle, ModelCall, Proposal
from dreams.proposals import create_proposal, transition_proposal
from dreams.signals import cycle_finished

logger = logging.getLogger(__name__)

CYCLE_STATUS: dict[str, str] = {
    HostedDream.Status.COMPLETED: DreamCycle.Status.SUCCEEDED,
    HostedDream.Status.FAILED: DreamCycle.Status.FAILED,
    HostedDream.Status.CANCELED: DreamCycle.Status.CANCELLED,
}


@dataclass
class StoredMemory:
    id: str
    content: str
    content_sha256: str


def read_store(client: anthropic.Anthropic, store_id: str) -> dict[str, StoredMemory]:
    """Every memory in a store with its content, by path."""
    memories: dict[str, StoredMemory] = {}
    for item in client.beta.memory_stores.memories.list(store_id, view="full", limit=100):
        if getattr(item, "type", "") != "memory" or not isinstance(item, Memory):
            continue
        content = item.content
        if content is None:
            content = (
                client.beta.memory_stores.memories.retrieve(
                    item.id, memory_store_id=store_id, view="full"
                ).content
                or ""
            )
        memories[item.path] = StoredMemory(
            id=item.id, content=content, content_sha256=item.content_sha256
        )
    return memories


def memory_diff(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
        "removed": sorted(set(before) - set(after)),
    }


def _record_usage(
    *, hosted: HostedDream, usage: dict[str, Any], ok: bool, error: str, elapsed_ms: int | None
) -> None:
    tokens = {
        k: int(usage.get(k) or 0)
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        )
    }
    cost = cost_of(hosted.model, tokens)
    ModelCall.objects.create(
        agent_id=hosted.agent_id,
        purpose=ModelCall.Purpose.HOSTED_DREAM,
        cycle_id=hosted.cycle_id,
        model=hosted.model,
        backend="anthropic",
        input_tokens=tokens["input_tokens"],
        output_tokens=tokens["output_tokens"],
        cache_read_tokens=tokens["cache_read_input_tokens"],
        cache_write_tokens=tokens["cache_creation_input_tokens"],
        cost_usd=cost,
        latency_ms=max(elapsed_ms or 0, 0),
        ok=ok,
        error=error[:2000],
    )
    cycle = hosted.cycle
    cycle.tokens_used += sum(tokens.values())
    cycle.cost_usd += cost


def _claim_terminal(hosted_id: int, status: str) -> HostedDream | None:
    """Lock the row; None when another worker already finished it."""
    hosted = (
        HostedDream.objects.select_for_update()
        .select_related("cycle", "agent__workspace")
        .get(pk=hosted_id)
    )
    if hosted.finished_at is not None:
        return None
    hosted.status = status
    hosted.finished_at = timezone.now()
    return hosted


def _finish_cycle(
    cycle: DreamCycle, *, status: str, error: str = "", report: dict[str, Any]
) -> None:
    """End the hosted dream's cycle; one cancelled by hand meanwhile keeps its status (the
    dream's spend and result are still recorded on it)."""
    report = {**cycle.report, **report}
    if not cycle.is_active:
        cycle.report = report
        cycle.save(update_fields=["report", "tokens_used", "cost_usd"])
        return
    transition_cycle(
        cycle,
        to=status,
        error=error,
        report=report,
        finished_at=timezone.now(),
        progress_done=cycle.progress_total,
        tokens_used=cycle.tokens_used,
        cost_usd=cycle.cost_usd,
    )
    transaction.on_commit(lambda: cycle_finished.send(sender=DreamCycle, cycle_id=cycle.pk))


def finish_without_output(
    *,
    hosted_id: int,
    status: str,
    error_type: str,
    error: str,
    usage: dict[str, Any] | None = None,
    elapsed_ms: int | None = None,
) -> None:
    with transaction.atomic():
        hosted = _claim_terminal(hosted_id, status)
        if hosted is None:
            return
        hosted.error_type = error_type[:64]
        hosted.error = error
        hosted.usage = usage or {}
        hosted.save(update_fields=["status", "finished_at", "error_type", "error", "usage"])
        if usage is not None:
            _record_usage(hosted=hosted, usage=usage, ok=False, error=error, elapsed_ms=elapsed_ms)
        message = f"{error_type}: {error}" if error_type else error
        _finish_cycle(
            hosted.cycle,
            status=CYCLE_STATUS[status],
            error=message,
            report={"hosted_dream": {"dream_id": hosted.dream_id, "status": status}},
        )
        audit.record(
            workspace=hosted.agent.workspace,
            actor=None,
            action=f"managed.hosted_dream.{status}",
            target=hosted.cycle,
            after={"dream_id": hosted.dream_id, "error": message[:500]},
        )


def _base_version(*, agent: Agent, live: dict[str, str], dream_id: str) -> ConfigVersion:
    """The stable version, or a snapshot of it whose memory documents equal the live store."""
    stable = agent.stable_version
    if stable is not None and stable.memory_documents == live:
        return stable
    return create_config_version(
        agent=agent,
        system_prompt=stable.system_prompt if stable else "",
        memory_documents=live,
        tools=stable.tools if stable else [],
        model=stable.model if stable else agent.model,
        parent=stable,
        source=ConfigVersion.Source.IMPORT,
        note=f"Live memory store before hosted dream {dream_id}",
    )


def finish_completed(
    *,
    hosted_id: int,
    output_store_id: str,
    before: dict[str, StoredMemory],
    after: dict[str, StoredMemory],
    usage: dict[str, Any],
    elapsed_ms: int | None,
) -> None:
    with transaction.atomic():
        hosted = _claim_terminal(hosted_id, HostedDream.Status.COMPLETED)
        if hosted is None:
            return
        agent = Agent.objects.select_related("stable_version", "workspace").get(pk=hosted.agent_id)
        hosted.output_memory_store_id = output_store_id
        hosted.usage = usage
        _record_usage(hosted=hosted, usage=usage, ok=True, error="", elapsed_ms=elapsed_ms)
        live = {path: m.content for path, m in before.items()}
        dreamt = {path: m.content for path, m in after.items()}
        diff = memory_diff(live, dreamt)
        counts = {k: len(v) for k, v in diff.items()}
        proposal = None
        if any(counts.values()):
            base = _base_version(agent=agent, live=live, dream_id=hosted.dream_id)
            candidate = create_config_version(
                agent=agent,
                system_prompt=base.system_prompt,
                memory_documents=dreamt,
                tools=base.tools,
                model=base.model,
                parent=base,
                source=ConfigVersion.Source.DREAM,
                note=f"Hosted dream {hosted.dream_id}",
            )
            runs = list(hosted.cycle.runs.all())
            proposal = create_proposal(
                agent=agent,
                base_version=base,
                candidate_version=candidate,
                title=(
                    f"Hosted dream: {counts['added']} added, {counts['changed']} changed, "
                    f"{counts['removed']} removed memories"
                ),
                rationale=(
                    f"Anthropic's Dreams API ({hosted.model}) studied {len(hosted.session_ids)} "
                    f"failed sessions with the instructions: {hosted.instructions}"
                ),
                cycle=hosted.cycle,
                flags=flags_for_change(agent=agent, base=base, candidate=candidate, runs=runs),
                source=Proposal.Source.HOSTED_DREAM,
                metadata={
                    "hosted_dream": {
                        "dream_id": hosted.dream_id,
                        "input_memory_store_id": hosted.input_memory_store_id,
                        "output_memory_store_id": output_store_id,
                        "session_ids": hosted.session_ids,
                    },
                    "memory_store_id": hosted.input_memory_store_id,
                    "memory_base": {
                        path: {"memory_id": m.id, "content_sha256": m.content_sha256}
                        for path, m in before.items()
                    },
                    "memory_diff": diff,
                },
            )
            hosted.proposal = proposal
        hosted.save(
            update_fields=["status", "finished_at", "output_memory_store_id", "usage", "proposal"]
        )
        _finish_cycle(
            hosted.cycle,
            status=DreamCycle.Status.SUCCEEDED,
            report={
                "hosted_dream": {"dream_id": hosted.dream_id, "status": "completed"},
                "memory_diff": counts,
                "proposal_id": proposal.pk if proposal else None,
            },
        )
    if proposal is not None:
        start_replay(proposal_id=proposal.pk)


def start_replay(*, proposal_id: int) -> bool:
    """Start the proposal's experiment."""
    from dreams.experiments import start_proposal_experiment

    try:
        with transaction.atomic():
            proposal = transition_proposal(
                proposal_id=proposal_id,
                to=Proposal.Status.REPLAYING,
                action="proposal.replay",
            )
            start_proposal_experiment(proposal)
    except Exception:
        # The dream's result is already safe in the database; a reviewer can start replay later.
        logger.exception("could not start the experiment of proposal %s", proposal_id)
        return False
    return True
