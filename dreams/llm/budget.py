"""The budget guard: refuse a call that would take an agent over its cycle or monthly budget.

Spend is read from ModelCall rows at most every SPEND_REFRESH_SECONDS and this process's own
calls are added as they are recorded; calls in flight hold a reservation (their estimate), so
concurrent replays cannot all slip under the limit at once.
"""

import threading
import time
from datetime import datetime
from typing import Any

from django.db.models import F, Q, Sum
from django.utils import timezone

from agents.models import Agent
from dreams.llm.base import BudgetExceeded, CallContext, NeedsDatabase
from dreams.models import Experiment, ModelCall

SPEND_REFRESH_SECONDS = 2.0

_TOKENS = F("input_tokens") + F("output_tokens") + F("cache_read_tokens") + F("cache_write_tokens")


def tokens_spent(
    *, agent: Agent, since: datetime | None = None, cycle_id: int | None = None
) -> int:
    calls = ModelCall.objects.filter(agent=agent)
    if since is not None:
        calls = calls.filter(created_at__gte=since)
    if cycle_id is not None:
        calls = calls.filter(Q(cycle_id=cycle_id) | Q(experiment__proposal__cycle_id=cycle_id))
    return calls.aggregate(total=Sum(_TOKENS))["total"] or 0


def month_start() -> datetime:
    return timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class BudgetGuard:
    def __init__(self) -> None:
        self._reserved: dict[int, int] = {}
        self._spend_cache: dict[tuple[Any, ...], tuple[int, float]] = {}
        self._experiment_cycles: dict[int, int | None] = {}
        self._lock = threading.RLock()

    def reserve(self, context: CallContext, *, estimate: int, cached_only: bool = False) -> None:
        """Check the budgets counting calls in flight, then hold `estimate` until `release`.

        With `cached_only`, raise NeedsDatabase instead of querying (for the event loop thread).
        """
        with self._lock:
            in_flight = self._reserved.get(context.agent.pk, 0)
            self.check(context, estimate=estimate + in_flight, cached_only=cached_only)
            self._reserved[context.agent.pk] = in_flight + estimate

    def release(self, context: CallContext, *, estimate: int) -> None:
        with self._lock:
            left = self._reserved.get(context.agent.pk, 0) - estimate
            if left > 0:
                self._reserved[context.agent.pk] = left
            else:
                self._reserved.pop(context.agent.pk, None)

    def in_flight(self, agent: Agent) -> int:
        return self._reserved.get(agent.pk, 0)

    def check(self, context: CallContext, *, estimate: int, cached_only: bool = False) -> None:
        agent = context.agent
        monthly = self._spent(agent, None, cached_only=cached_only)
        if monthly + estimate > agent.monthly_token_budget:
            raise BudgetExceeded(
                f"{agent.slug}: monthly budget {agent.monthly_token_budget} tokens; "
                f"spent {monthly}, this call may need {estimate}"
            )
        cycle_id = self.cycle_id(context, cached_only=cached_only)
        if cycle_id is not None:
            spent = self._spent(agent, cycle_id, cached_only=cached_only)
            if spent + estimate > agent.cycle_token_budget:
                raise BudgetExceeded(
                    f"{agent.slug}: cycle budget {agent.cycle_token_budget} tokens; "
                    f"cycle {cycle_id} spent {spent}, this call may need {estimate}"
                )

    def cycle_id(self, context: CallContext, *, cached_only: bool = False) -> int | None:
        """The dream cycle a call spends from: its own, or its experiment's proposal's."""
        if context.cycle is not None:
            return context.cycle.pk
        experiment = context.experiment
        if experiment is None or not experiment.proposal_id:
            return None
        if experiment.pk not in self._experiment_cycles:
            if cached_only:
                raise NeedsDatabase
            self._experiment_cycles[experiment.pk] = (
                Experiment.objects.filter(pk=experiment.pk)
                .values_list("proposal__cycle_id", flat=True)
                .first()
            )
        return self._experiment_cycles[experiment.pk]

    def add_spend(self, agent_id: int, cycle_id: int | None, tokens: int) -> None:
        with self._lock:
            for key, (value, fetched) in list(self._spend_cache.items()):
                if key[0] == agent_id and key[1] in (None, cycle_id):
                    self._spend_cache[key] = (value + tokens, fetched)

    def _spent(self, agent: Agent, cycle_id: int | None, *, cached_only: bool = False) -> int:
        """Tokens spent this month (or in a cycle), refreshed from the database when stale."""
        since = month_start()
        key = (agent.pk, cycle_id, since)
        with self._lock:
            now = time.monotonic()
            cached = self._spend_cache.get(key)
            if cached is None or now - cached[1] > SPEND_REFRESH_SECONDS:
                if cached_only:
                    raise NeedsDatabase
                if cycle_id is None:
                    value = tokens_spent(agent=agent, since=since)
                else:
                    value = tokens_spent(agent=agent, cycle_id=cycle_id)
                self._spend_cache[key] = (value, now)
                return value
            return cached[0]
