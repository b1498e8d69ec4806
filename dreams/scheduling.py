"""When an agent dreams: schedule (frequency + window), failure threshold, budget, kill switch.

`due_reason` is pure apart from two reads (last cycle, spend), so each rule is tested directly;
`enqueue_due_cycles` is what the periodic beat task runs.
"""

from datetime import UTC, datetime, time, timedelta

from django.utils import timezone

from agents.models import Agent
from dreams import spend
from dreams.models import DreamCycle

PERIODS: dict[str, timedelta] = {
    Agent.Frequency.HOURLY: timedelta(hours=1),
    Agent.Frequency.DAILY: timedelta(days=1),
    Agent.Frequency.WEEKLY: timedelta(weeks=1),
}
# A cycle started a little early still counts for its slot (beat ticks are not exact).
SLACK = timedelta(minutes=2)


def in_window(*, now: datetime, start: time | None, end: time | None) -> bool:
    """Whether `now` (UTC) falls in [start, end); a window may wrap past midnight."""
    if start is None or end is None or start == end:
        return True
    current = now.astimezone(UTC).time().replace(tzinfo=None)
    if start < end:
        return start <= current < end
    return current >= start or current < end


def last_cycle(agent: Agent) -> DreamCycle | None:
    return DreamCycle.objects.filter(agent=agent).order_by("-created_at", "-id").first()


def blocked_reason(*, agent: Agent, now: datetime) -> str | None:
    """Why the agent may not dream now at all (None when it may)."""
    if agent.is_paused:
        return "paused"
    if not agent.dreaming_enabled:
        return "dreaming disabled"
    if not in_window(now=now, start=agent.dream_window_start, end=agent.dream_window_end):
        return "outside window"
    if DreamCycle.objects.filter(agent=agent, status__in=DreamCycle.ACTIVE).exists():
        return "cycle already active"
    if not spend.has_monthly_budget(agent=agent, now=now):
        return "monthly budget spent"
    return None


def schedule_due(*, agent: Agent, now: datetime) -> bool:
    previous = last_cycle(agent)
    if previous is None:
        return True
    return previous.created_at + PERIODS[agent.dream_frequency] - SLACK <= now


def new_failure_count(*, agent: Agent) -> int:
    """Failures and negative-feedback runs since the last cycle that no cycle has studied."""
    from dreams.patterns import selectable_failures

    previous = last_cycle(agent)
    runs = selectable_failures(agent=agent)
    if previous is not None:
        runs = runs.filter(created_at__gt=previous.created_at)
    return runs.count()


def threshold_reached(*, agent: Agent) -> bool:
    return agent.failure_threshold > 0 and new_failure_count(agent=agent) >= agent.failure_threshold


def due_reason(*, agent: Agent, now: datetime) -> str | None:
    """The trigger a cycle would start with now (`schedule` or `threshold`), or None."""
    if blocked_reason(agent=agent, now=now) is not None:
        return None
    if schedule_due(agent=agent, now=now):
        return DreamCycle.Trigger.SCHEDULE
    if threshold_reached(agent=agent):
        return DreamCycle.Trigger.THRESHOLD
    return None


def enqueue_due_cycles(*, now: datetime | None = None) -> list[int]:
    """Start a cycle for every agent that is due; returns the new cycle ids."""
    from dreams.cycles import CycleNotStarted, start_cycle

    now = now or timezone.now()
    started = []
    candidates = Agent.objects.filter(dreaming_enabled=True, is_paused=False).select_related(
        "workspace"
    )
    for agent in candidates:
        trigger = due_reason(agent=agent, now=now)
        if trigger is None:
            continue
        try:
            started.append(start_cycle(agent=agent, trigger=trigger).pk)
        except CycleNotStarted:
            continue
    return started
