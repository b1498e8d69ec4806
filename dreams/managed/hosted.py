"""Hosted dreams ("Dream with Anthropic"): start, submit, poll to a terminal state, schedule.

start → submit (dreams.create, output_behavior create_new) → poll with backoff until terminal →
hosted_results records usage and, on `completed`, turns the memory diff into an ordinary proposal
(source hosted_dream) that goes through the same replay and review as any other. Once that
proposal is decided (or the dream changed nothing) the output store is archived at Anthropic.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from agents import audit
from agents.actors import Actor, user_of
from agents.models import Agent, Run
from dreams.cycles import transition_cycle
from dreams.managed import hosted_results
from dreams.managed.client import ManagedNotConfigured, client_for
from dreams.managed.models import HostedDream, ManagedAgentLink
from dreams.models import DreamCycle, ModelCall, Proposal

logger = logging.getLogger(__name__)

MAX_SESSIONS = 100


class HostedDreamError(Exception):
    """The dream cannot start (not linked, nothing to dream about, a cycle already active)."""


def poll_delay(poll_count: int) -> int:
    """Seconds before the next poll: 10, 20, 40, … capped at 5 minutes."""
    delay: int = 10 * 2 ** min(poll_count, 5)
    return min(300, delay)


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
            metadata__has_key="managed",  # set by the session sync; portable
        )
        .exclude(pk__in=studied)
        .order_by("-started_at", "-id")[:limit]
    )


FREQUENCY: dict[str, timedelta] = {
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
    actor: Actor = None,
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
    from dreams.tasks import submit_hosted_dream

    try:
        with transaction.atomic():
            cycle = DreamCycle.objects.create(
                agent=agent,
                trigger=DreamCycle.Trigger.HOSTED,
                created_by=user_of(actor),
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
        hosted_results.finish_without_output(
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
        cycle = DreamCycle.objects.select_for_update().get(pk=hosted.cycle_id)
        if cycle.status == DreamCycle.Status.QUEUED:
            transition_cycle(
                cycle, to=DreamCycle.Status.RUNNING, started_at=now, external_id=dream.id
            )
        else:  # cancelled by hand while submitting: it stays cancelled, the dream id is kept
            DreamCycle.objects.filter(pk=cycle.pk).update(external_id=dream.id)
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
    if dream.status != HostedDream.Status.COMPLETED.value:
        error = dream.error
        hosted_results.finish_without_output(
            hosted_id=hosted_id,
            status=dream.status,
            error_type=(error.type if error else "") or "",
            error=(error.message if error else "") or f"dream {dream.status}",
            usage=usage,
            elapsed_ms=elapsed_ms,
        )
        return HostedDream.objects.get(pk=hosted_id)
    output_id = dream.outputs[0].memory_store_id if dream.outputs else ""
    before = hosted_results.read_store(client, hosted.input_memory_store_id)
    after = hosted_results.read_store(client, output_id) if output_id else {}
    hosted_results.finish_completed(
        hosted_id=hosted_id,
        output_store_id=output_id,
        before=before,
        after=after,
        usage=usage,
        elapsed_ms=elapsed_ms,
    )
    hosted = HostedDream.objects.get(pk=hosted_id)
    if hosted.proposal_id is None:
        archive_output_store(hosted_id=hosted_id)  # nothing changed: nothing to decide
    return HostedDream.objects.get(pk=hosted_id)


# After these the output store is no input to anything: its text lives on in the candidate version.
ARCHIVABLE_AFTER = [
    Proposal.Status.APPROVED,
    Proposal.Status.REJECTED,
    Proposal.Status.SUPERSEDED,
    Proposal.Status.ROLLING_OUT,
    Proposal.Status.ROLLED_OUT,
    Proposal.Status.ROLLED_BACK,
]


def archive_output_store(*, hosted_id: int) -> bool:
    """Archive a finished dream's output store at Anthropic once (idempotent there and here).

    True when it is archived now or was before; False when the API could not be reached (the
    periodic sweep, `archive_decided_outputs`, tries again).
    """
    hosted = HostedDream.objects.get(pk=hosted_id)
    if not hosted.output_memory_store_id or hosted.output_archived_at is not None:
        return hosted.output_archived_at is not None
    link = ManagedAgentLink.objects.filter(agent_id=hosted.agent_id).first()
    if link is None:
        return False
    try:
        client_for(link).beta.memory_stores.archive(hosted.output_memory_store_id)
    except anthropic.NotFoundError:
        pass  # deleted at Anthropic meanwhile: nothing left to archive
    except (anthropic.APIError, ManagedNotConfigured) as exc:
        logger.warning("could not archive output store of hosted dream %s: %s", hosted_id, exc)
        return False
    with transaction.atomic():
        updated = HostedDream.objects.filter(pk=hosted_id, output_archived_at__isnull=True).update(
            output_archived_at=timezone.now()
        )
        if updated:
            audit.record(
                workspace=link.agent.workspace,
                actor=None,
                action="managed.hosted_dream.output_archived",
                target=hosted.cycle,
                after={
                    "dream_id": hosted.dream_id,
                    "memory_store_id": hosted.output_memory_store_id,
                    "proposal": hosted.proposal_id,
                },
            )
    return True


def archive_decided_outputs() -> list[int]:
    """Sweep: archive every output store whose proposal is decided (or that changed nothing)."""
    due = list(
        HostedDream.objects.filter(
            status=HostedDream.Status.COMPLETED, output_archived_at__isnull=True
        )
        .exclude(output_memory_store_id="")
        .filter(Q(proposal__isnull=True) | Q(proposal__status__in=ARCHIVABLE_AFTER))
        .values_list("pk", flat=True)
    )
    return [hosted_id for hosted_id in due if archive_output_store(hosted_id=hosted_id)]


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
        hosted_results.finish_without_output(
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
