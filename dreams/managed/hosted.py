"""Hosted dreams: ask Anthropic's Dreams API to dream, then turn its output store into a proposal.

start → submit (dreams.create, output_behavior create_new) → poll with backoff until terminal →
record usage → on `completed` diff the input and output memory stores into an ordinary proposal
(source hosted_dream) that goes through the same replay and review as any other.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from agents import audit
from agents.models import Agent, ConfigVersion, Run
from agents.pricing import cost_of
from agents.services import create_config_version
from dreams.managed.client import ManagedNotConfigured, client_for
from dreams.managed.flags import flags_for
from dreams.managed.models import HostedDream, ManagedAgentLink
from dreams.managed.sync import MANAGED_TAG
from dreams.models import DreamCycle, ModelCall, Proposal
from dreams.proposals import create_proposal, transition_proposal
from dreams.signals import cycle_finished

logger = logging.getLogger(__name__)

MAX_SESSIONS = 100
CYCLE_STATUS = {
    HostedDream.Status.COMPLETED: DreamCycle.Status.SUCCEEDED,
    HostedDream.Status.FAILED: DreamCycle.Status.FAILED,
    HostedDream.Status.CANCELED: DreamCycle.Status.CANCELLED,
}


class HostedDreamError(Exception):
    """The dream cannot start (not linked, nothing to dream about, a cycle already active)."""


@dataclass
class StoredMemory:
    id: str
    content: str
    content_sha256: str


def poll_delay(poll_count: int) -> int:
    """Seconds before the next poll: 10, 20, 40, … capped at 5 minutes."""
    return min(300, 10 * 2 ** min(poll_count, 5))


def monthly_tokens_used(*, agent: Agent) -> int:
    """Tokens every model call of this agent spent since the start of the month (UTC)."""
    start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    totals = ModelCall.objects.filter(agent=agent, created_at__gte=start).aggregate(
        i=Sum("input_tokens"),
        o=Sum("output_tokens"),
        r=Sum("cache_read_tokens"),
        w=Sum("cache_write_tokens"),
    )
    return sum(v or 0 for v in totals.values())


def failed_session_runs(*, agent: Agent, limit: int = MAX_SESSIONS) -> list[Run]:
    """Newest synced failures that no running or successful hosted dream has studied yet."""
    studied = DreamCycle.objects.filter(
        agent=agent,
        trigger=DreamCycle.Trigger.HOSTED,
        status__in=[*DreamCycle.ACTIVE, DreamCycle.Status.SUCCEEDED],
        runs__isnull=False,
    ).values("runs")
    return list(
        Run.objects.filter(
            agent=agent,
            status__in=[Run.Status.FAILURE, Run.Status.ERROR],
            tags__contains=[MANAGED_TAG],
        )
        .exclude(pk__in=studied)
        .order_by("-started_at", "-id")[:limit]
    )


FREQUENCY = {
    Agent.Frequency.HOURLY: timedelta(hours=1),
    Agent.Frequency.DAILY: timedelta(days=1),
    Agent.Frequency.WEEKLY: timedelta(weeks=1),
}


def in_dream_window(agent: Agent, moment: datetime) -> bool:
    start, end = agent.dream_window_start, agent.dream_window_end
    if start is None or end is None:
        return True
    now = moment.astimezone(UTC).time()
    return start <= now < end if start <= end else (now >= start or now < end)


def start_due_hosted_dreams(*, now: datetime | None = None) -> list[int]:
    """Schedule: start a hosted dream for each opted-in link whose frequency has elapsed (in its
    window) or whose unstudied failures reached the agent's failure threshold."""
    now = now or timezone.now()
    started = []
    links = ManagedAgentLink.objects.filter(
        hosted_dream_enabled=True, agent__dreaming_enabled=True, agent__is_paused=False
    ).select_related("agent")
    for link in links:
        agent = link.agent
        runs = failed_session_runs(agent=agent)
        if not runs:
            continue
        last = (
            DreamCycle.objects.filter(agent=agent, trigger=DreamCycle.Trigger.HOSTED)
            .order_by("-created_at")
            .first()
        )
        scheduled = in_dream_window(agent, now) and (
            last is None or last.created_at <= now - FREQUENCY[agent.dream_frequency]
        )
        threshold = 0 < agent.failure_threshold <= len(runs)
        if not (scheduled or threshold):
            continue
        try:
            dream = start_hosted_dream(
                agent=agent, trigger="schedule" if scheduled else "threshold"
            )
        except HostedDreamError as exc:
            logger.info("no scheduled hosted dream for %s: %s", agent.slug, exc)
            continue
        started.append(dream.pk)
    return started


def start_hosted_dream(
    *,
    agent: Agent,
    actor: Any = None,
    session_ids: list[str] | None = None,
    model: str = "",
    instructions: str = "",
    trigger: str = "manual",
) -> HostedDream:
    """Record a queued hosted dream over up to 100 failed sessions and submit it after commit."""
    link = ManagedAgentLink.objects.filter(agent=agent).first()
    if link is None:
        raise HostedDreamError("This agent is not linked to a Managed Agent.")
    if agent.is_paused:
        raise HostedDreamError("This agent is paused.")
    if monthly_tokens_used(agent=agent) >= agent.monthly_token_budget:
        raise HostedDreamError("The agent's monthly token budget is spent.")
    if DreamCycle.objects.filter(agent=agent, status__in=DreamCycle.ACTIVE).exists():
        raise HostedDreamError("A dream cycle is already running for this agent.")
    if session_ids is not None:
        if len(session_ids) > MAX_SESSIONS or len(set(session_ids)) != len(session_ids):
            raise HostedDreamError(f"Give at most {MAX_SESSIONS} distinct session ids.")
        runs = list(
            Run.objects.filter(
                agent=agent,
                external_id__in=session_ids,
                status__in=[Run.Status.FAILURE, Run.Status.ERROR],
            )
        )
        missing = sorted(set(session_ids) - {r.external_id for r in runs})
        if missing:
            raise HostedDreamError(
                f"Not synced failed sessions of this agent: {', '.join(missing[:5])}"
            )
    else:
        runs = failed_session_runs(agent=agent)
    if not runs:
        raise HostedDreamError("No failed sessions to dream about; sync sessions first.")
    from dreams.managed.tasks import submit_hosted_dream

    try:
        with transaction.atomic():
            cycle = DreamCycle.objects.create(
                agent=agent,
                trigger=DreamCycle.Trigger.HOSTED,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                stage="hosted",
                progress_total=1,
                report={"trigger": trigger},
            )
            cycle.runs.set(runs)
            hosted = HostedDream.objects.create(
                cycle=cycle,
                agent=agent,
                model=model or settings.REVERIE_HOSTED_DREAM_MODEL,
                instructions=(instructions or settings.REVERIE_HOSTED_DREAM_INSTRUCTIONS)[:4096],
                session_ids=sorted(r.external_id for r in runs),
                input_memory_store_id=link.memory_store_id,
            )
            audit.record(
                workspace=agent.workspace,
                actor=actor,
                action="managed.hosted_dream.start",
                target=cycle,
                after={"sessions": len(runs), "model": hosted.model, "trigger": trigger},
            )
            submit_hosted_dream.delay_on_commit(hosted.pk)
    except IntegrityError as exc:
        raise HostedDreamError("A dream cycle is already running for this agent.") from exc
    return hosted


def _link(hosted: HostedDream) -> ManagedAgentLink:
    return ManagedAgentLink.objects.select_related("agent__workspace").get(agent_id=hosted.agent_id)


def submit(*, hosted_id: int) -> HostedDream:
    """Create the dream at Anthropic once (claimed by a conditional update)."""
    claimed = HostedDream.objects.filter(
        pk=hosted_id, status=HostedDream.Status.QUEUED, dream_id=""
    ).update(status=HostedDream.Status.PENDING)
    hosted = HostedDream.objects.select_related("cycle").get(pk=hosted_id)
    if not claimed:
        return hosted
    try:
        dream = client_for(_link(hosted)).beta.dreams.create(
            inputs=[
                {"type": "memory_store", "memory_store_id": hosted.input_memory_store_id},
                {"type": "sessions", "session_ids": hosted.session_ids},
            ],
            model=hosted.model,
            instructions=hosted.instructions or None,
            output_behavior={"type": "create_new"},
        )
    except (anthropic.APIError, ManagedNotConfigured) as exc:
        _finish_without_output(
            hosted_id=hosted_id,
            status=HostedDream.Status.FAILED,
            error_type=getattr(exc, "type", None) or type(exc).__name__,
            error=str(getattr(exc, "message", exc)),
        )
        return HostedDream.objects.get(pk=hosted_id)
    now = timezone.now()
    with transaction.atomic():
        hosted = HostedDream.objects.select_for_update().get(pk=hosted_id)
        hosted.dream_id = dream.id
        hosted.status = dream.status
        hosted.next_poll_at = now + timedelta(seconds=poll_delay(0))
        hosted.save(update_fields=["dream_id", "status", "next_poll_at"])
        DreamCycle.objects.filter(pk=hosted.cycle_id).update(
            status=DreamCycle.Status.RUNNING, started_at=now, external_id=dream.id
        )
    return hosted


def poll(*, hosted_id: int) -> HostedDream:
    """Fetch the dream once; on a terminal status finish it (usage, proposal or error)."""
    hosted = HostedDream.objects.get(pk=hosted_id)
    if hosted.is_terminal or not hosted.dream_id:
        return hosted
    link = _link(hosted)
    client = client_for(link)
    dream = client.beta.dreams.retrieve(hosted.dream_id)
    if dream.status not in HostedDream.TERMINAL:
        HostedDream.objects.filter(pk=hosted_id).update(
            status=dream.status,
            poll_count=hosted.poll_count + 1,
            next_poll_at=timezone.now() + timedelta(seconds=poll_delay(hosted.poll_count + 1)),
        )
        if hosted.poll_count + 1 >= settings.REVERIE_HOSTED_DREAM_MAX_POLLS:
            # Stop paying for a dream nobody will wait for any more.
            dream = client.beta.dreams.cancel(hosted.dream_id)
        if dream.status not in HostedDream.TERMINAL:
            return HostedDream.objects.get(pk=hosted_id)
    usage = dream.usage.to_dict(mode="json") if dream.usage else {}
    elapsed_ms = None
    if dream.ended_at and dream.created_at:
        elapsed_ms = int((dream.ended_at - dream.created_at).total_seconds() * 1000)
    if dream.status != HostedDream.Status.COMPLETED:
        error = dream.error
        _finish_without_output(
            hosted_id=hosted_id,
            status=dream.status,
            error_type=(error.type if error else "") or "",
            error=(error.message if error else "") or f"dream {dream.status}",
            usage=usage,
            elapsed_ms=elapsed_ms,
        )
        return HostedDream.objects.get(pk=hosted_id)
    output_id = dream.outputs[0].memory_store_id if dream.outputs else ""
    before = read_store(client, hosted.input_memory_store_id)
    after = read_store(client, output_id) if output_id else {}
    _finish_completed(
        hosted_id=hosted_id,
        output_store_id=output_id,
        before=before,
        after=after,
        usage=usage,
        elapsed_ms=elapsed_ms,
    )
    return HostedDream.objects.get(pk=hosted_id)


def poll_due(*, now: datetime | None = None, agent_id: int | None = None) -> list[int]:
    """Poll every unfinished hosted dream whose next poll is due (found again from the database).

    Also repairs lost work: a dream still queued after two minutes is submitted again, and one
    claimed but never created at Anthropic after ten minutes is marked failed.
    """
    now = now or timezone.now()
    dreams = HostedDream.objects.all()
    if agent_id is not None:
        dreams = dreams.filter(agent_id=agent_id)
    for hosted_id in dreams.filter(
        status=HostedDream.Status.QUEUED, created_at__lte=now - timedelta(minutes=2)
    ).values_list("pk", flat=True):
        submit(hosted_id=hosted_id)
    for hosted_id in dreams.filter(
        status=HostedDream.Status.PENDING, dream_id="", created_at__lte=now - timedelta(minutes=10)
    ).values_list("pk", flat=True):
        _finish_without_output(
            hosted_id=hosted_id,
            status=HostedDream.Status.FAILED,
            error_type="submission_lost",
            error="The dream was never created at Anthropic (worker stopped while submitting).",
        )
    due = list(
        dreams.filter(
            status__in=[HostedDream.Status.PENDING, HostedDream.Status.RUNNING],
            next_poll_at__lte=now,
        )
        .exclude(dream_id="")
        .values_list("pk", flat=True)
    )
    for hosted_id in due:
        try:
            poll(hosted_id=hosted_id)
        except anthropic.APIError:
            logger.warning("polling hosted dream %s failed; retried at the next sync", hosted_id)
    return due


def read_store(client: anthropic.Anthropic, store_id: str) -> dict[str, StoredMemory]:
    """Every memory in a store with its content, by path."""
    memories: dict[str, StoredMemory] = {}
    for item in client.beta.memory_stores.memories.list(store_id, view="full", limit=100):
        if getattr(item, "type", "") != "memory":
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
    cycle.status = status
    cycle.error = error
    cycle.report = {**cycle.report, **report}
    cycle.finished_at = timezone.now()
    cycle.progress_done = cycle.progress_total
    cycle.save(
        update_fields=[
            "status",
            "error",
            "report",
            "finished_at",
            "progress_done",
            "tokens_used",
            "cost_usd",
        ]
    )
    transaction.on_commit(lambda: cycle_finished.send(sender=DreamCycle, cycle_id=cycle.pk))


def _finish_without_output(
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


def _finish_completed(
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
                flags=flags_for(agent=agent, base=base, candidate=candidate, runs=runs),
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
    """Start the proposal's experiment when the replay module is installed; else leave it drafted."""
    try:
        from dreams.experiments import start_experiment  # type: ignore[import-not-found]
    except ImportError:
        logger.info("dreams.experiments is not installed; proposal %s stays drafted", proposal_id)
        return False
    try:
        with transaction.atomic():
            proposal = transition_proposal(
                proposal_id=proposal_id,
                to=Proposal.Status.REPLAYING,
                action="proposal.replay",
            )
            targets = list(proposal.cycle.runs.all()) if proposal.cycle_id else []
            start_experiment(
                agent=proposal.agent,
                baseline_version=proposal.base_version,
                candidate_version=proposal.candidate_version,
                target_runs=targets,
                proposal=proposal,
            )
    except Exception:
        # The dream's result is already safe in the database; a reviewer can start replay later.
        logger.exception("could not start the experiment of proposal %s", proposal_id)
        return False
    return True


def wait_for(*, hosted_id: int, max_polls: int = 50, sleep: Any = None) -> HostedDream:
    """Bounded poll loop (management commands and tests); Celery uses the self-re-enqueueing task."""
    hosted = HostedDream.objects.get(pk=hosted_id)
    for _ in range(max_polls):
        if hosted.is_terminal:
            break
        hosted = poll(hosted_id=hosted_id)
        if sleep is not None and not hosted.is_terminal:
            sleep(poll_delay(hosted.poll_count))
    return hosted
