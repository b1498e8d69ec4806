"""The demo's dream: one cycle (with replays) on the seeded agent, so the queue holds real proposals."""

from agents.models import Agent
from dreams import cycles
from dreams.models import DreamCycle


def dream_once(agent: Agent, *, force: bool = False) -> DreamCycle | None:
    """Run one manual cycle in-process; None when the agent already has a finished one (and not
    `force`). Raises cycles.CycleNotStarted when the agent cannot dream now."""
    done = DreamCycle.objects.filter(agent=agent, status=DreamCycle.Status.SUCCEEDED)
    if done.exists() and not force:
        return None
    cycle = cycles.start_cycle(agent=agent, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)
    cycles.run_cycle(cycle_id=cycle.pk)
    cycle.refresh_from_db()
    return cycle


def summary(cycle: DreamCycle) -> str:
    report = cycle.report or {}
    return (
        f"Dream cycle {cycle.pk}: {cycle.status}; "
        f"{len(report.get('patterns', []))} patterns, "
        f"{len(report.get('suggestions', []))} proposals, {cycle.tokens_used:,} tokens."
    )
