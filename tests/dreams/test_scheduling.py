"""When a cycle is due: frequency, window (with wrap past midnight), budget, pause, threshold."""

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from agents.models import Run
from dreams import scheduling
from dreams.models import DreamCycle, ModelCall
from tests.factories import RunFactory

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def past_cycle(agent: Any, *, ago: timedelta, now: datetime = NOON) -> DreamCycle:
    cycle = DreamCycle.objects.create(
        agent=agent, trigger="schedule", status=DreamCycle.Status.SUCCEEDED
    )
    DreamCycle.objects.filter(pk=cycle.pk).update(created_at=now - ago)
    return cycle


@pytest.mark.parametrize(
    ("start", "end", "at", "inside"),
    [
        (None, None, time(3, 0), True),
        (time(1, 0), time(5, 0), time(3, 0), True),
        (time(1, 0), time(5, 0), time(5, 0), False),
        (time(1, 0), time(5, 0), time(0, 59), False),
        (time(22, 0), time(4, 0), time(23, 30), True),  # wraps past midnight
        (time(22, 0), time(4, 0), time(2, 0), True),
        (time(22, 0), time(4, 0), time(12, 0), False),
        (time(22, 0), time(4, 0), time(4, 0), False),
    ],
)
def test_window(start: time | None, end: time | None, at: time, inside: bool) -> None:
    now = datetime.combine(NOON.date(), at, tzinfo=UTC)
    assert scheduling.in_window(now=now, start=start, end=end) is inside


def test_an_agent_that_never_dreamt_is_due(agent: Any) -> None:
    assert scheduling.due_reason(agent=agent, now=NOON) == DreamCycle.Trigger.SCHEDULE


@pytest.mark.parametrize(
    ("frequency", "ago", "due"),
    [
        ("hourly", timedelta(minutes=61), True),
        ("hourly", timedelta(minutes=30), False),
        ("daily", timedelta(hours=25), True),
        ("daily", timedelta(hours=23), False),
        ("weekly", timedelta(days=8), True),
        ("weekly", timedelta(days=6), False),
    ],
)
def test_frequency(agent: Any, frequency: str, ago: timedelta, due: bool) -> None:
    agent.dream_frequency = frequency
    agent.failure_threshold = 0
    agent.save()
    past_cycle(agent, ago=ago)

    reason = scheduling.due_reason(agent=agent, now=NOON)

    assert (reason == DreamCycle.Trigger.SCHEDULE) is due
    assert reason in (None, DreamCycle.Trigger.SCHEDULE)


def test_not_due_outside_the_window(agent: Any) -> None:
    agent.dream_window_start, agent.dream_window_end = time(1, 0), time(5, 0)
    agent.save()

    assert scheduling.due_reason(agent=agent, now=NOON) is None
    assert scheduling.blocked_reason(agent=agent, now=NOON) == "outside window"
    assert scheduling.due_reason(agent=agent, now=NOON.replace(hour=2)) == "schedule"


def test_a_paused_agent_is_never_due(agent: Any) -> None:
    agent.is_paused = True
    agent.save()

    assert scheduling.due_reason(agent=agent, now=NOON) is None
    assert scheduling.blocked_reason(agent=agent, now=NOON) == "paused"


def test_disabled_dreaming_is_never_due(agent: Any) -> None:
    agent.dreaming_enabled = False
    agent.save()

    assert scheduling.due_reason(agent=agent, now=NOON) is None


def test_an_agent_over_its_monthly_budget_is_not_due(agent: Any) -> None:
    agent.monthly_token_budget = 1_000
    agent.save()
    ModelCall.objects.create(
        agent=agent, purpose="dream", model="claude-sonnet-5-5", input_tokens=900, output_tokens=100
    )

    now = datetime.now(UTC)
    assert scheduling.due_reason(agent=agent, now=now) is None
    assert scheduling.blocked_reason(agent=agent, now=now) == "monthly budget spent"


def test_last_months_spend_does_not_count(agent: Any) -> None:
    agent.monthly_token_budget = 1_000
    agent.save()
    call = ModelCall.objects.create(
        agent=agent, purpose="dream", model="claude-sonnet-5-5", input_tokens=5_000
    )
    now = datetime.now(UTC)
    ModelCall.objects.filter(pk=call.pk).update(created_at=now - timedelta(days=40))

    assert scheduling.due_reason(agent=agent, now=now) == "schedule"


def test_replay_spend_does_not_eat_the_dreaming_budget(agent: Any) -> None:
    agent.monthly_token_budget = 1_000
    agent.save()
    ModelCall.objects.create(
        agent=agent, purpose="replay", model="claude-sonnet-5-5", input_tokens=5_000
    )

    assert scheduling.due_reason(agent=agent, now=datetime.now(UTC)) == "schedule"


def test_an_active_cycle_blocks_another(agent: Any) -> None:
    DreamCycle.objects.create(agent=agent, trigger="manual")

    assert scheduling.due_reason(agent=agent, now=NOON) is None


def test_failure_threshold_triggers_before_the_schedule(agent: Any) -> None:
    agent.failure_threshold = 3
    agent.dream_frequency = "weekly"
    agent.save()
    now = datetime.now(UTC)
    past_cycle(agent, ago=timedelta(days=1), now=now)
    for _ in range(2):
        RunFactory(agent=agent, status=Run.Status.FAILURE, config_version=agent.stable_version)

    assert scheduling.due_reason(agent=agent, now=now) is None

    RunFactory(agent=agent, status=Run.Status.ERROR, config_version=agent.stable_version)
    assert scheduling.due_reason(agent=agent, now=now) == DreamCycle.Trigger.THRESHOLD


def test_threshold_zero_is_off(agent: Any) -> None:
    agent.failure_threshold = 0
    agent.save()
    now = datetime.now(UTC)
    past_cycle(agent, ago=timedelta(minutes=5), now=now)
    for _ in range(50):
        RunFactory(agent=agent, status=Run.Status.FAILURE)

    assert scheduling.due_reason(agent=agent, now=now) is None


def test_enqueue_due_cycles_starts_only_due_agents(agent: Any) -> None:
    from tests.factories import AgentFactory

    paused = AgentFactory(workspace=agent.workspace, is_paused=True)
    recent = AgentFactory(workspace=agent.workspace, failure_threshold=0)
    past_cycle(recent, ago=timedelta(minutes=10), now=datetime.now(UTC))

    started = scheduling.enqueue_due_cycles()

    assert DreamCycle.objects.filter(pk__in=started).count() == 1
    (cycle,) = DreamCycle.objects.filter(pk__in=started)
    assert cycle.agent == agent
    assert cycle.trigger == DreamCycle.Trigger.SCHEDULE
    assert not DreamCycle.objects.filter(agent=paused).exists()
