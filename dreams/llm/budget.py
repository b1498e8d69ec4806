"""The budget guard: refuse a call that would take an agent over its cycle or monthly budget,
and hold replays to the agent's concurrency limit, across every worker process.

Each call first makes a `TokenReservation` row (its estimate) in one transaction that holds
the agent's row (PostgreSQL) or the write lock (SQLite, the row is inserted first) and counts
the ModelCall spend plus every live reservation of every worker: concurrent calls anywhere
cannot all slip under the limit at once, and no more than `Agent.replay_concurrency` replay
calls are in flight at once. ModelCall spend is cached per process for SPEND_REFRESH_SECONDS;
a reservation settled to its real tokens stays counted for SETTLED_SECONDS, longer than that
cache can lag, so spend is never undercounted.
"""

import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from agents.models import Agent
from dreams.llm.base import BudgetExceeded, CallContext, NeedsDatabase
from dreams.models import Experiment, ModelCall, TokenReservation

SPEND_REFRESH_SECONDS = 2.0
SETTLED_SECONDS = SPEND_REFRESH_SECONDS + 2.0


class AtCapacity(Exception):
    """The agent already has `replay_concurrency` replay calls in flight (in any worker)."""


def in_flight_expiry() -> datetime:
    """When an unsettled reservation stops counting: longer than a call with all its retries."""
    seconds = settings.REVERIE_MODEL_TIMEOUT * (settings.REVERIE_MODEL_MAX_RETRIES + 1) + 60
    return timezone.now() + timedelta(seconds=seconds)


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
        self._spend_cache: dict[tuple[Any, ...], tuple[int, float]] = {}
        self._experiment_cycles: dict[int, int | None] = {}
        self._lock = threading.RLock()

    def reserve(self, context: CallContext, *, estimate: int) -> int:
        """Check the budgets counting every worker's calls in flight, then hold `estimate` (a
        TokenReservation row) until `release`; returns the reservation's id. Raises
        BudgetExceeded, or AtCapacity for a replay call over the agent's concurrency."""
        agent = context.agent
        cycle_id = self.cycle_id(context)
        now = timezone.now()
        with transaction.atomic():
            # PostgreSQL: one reservation per agent at a time. SQLite: the insert below takes
            # the database's write lock first, which serializes the same way.
            Agent.objects.select_for_update().filter(pk=agent.pk).values_list("pk").first()
            reservation = TokenReservation.objects.create(
                agent=agent,
                cycle_id=cycle_id,
                purpose=context.purpose,
                tokens=estimate,
                expires_at=in_flight_expiry(),
            )
            live = TokenReservation.objects.filter(agent=agent, expires_at__gt=now)
            if context.purpose == "replay":
                flying = live.filter(purpose="replay", settled=False).count()
                if flying > max(1, agent.replay_concurrency):
                    transaction.set_rollback(True)
                    raise AtCapacity(agent.slug)
            held = live.aggregate(n=Sum("tokens"))["n"] or 0
            held_cycle = 0
            if cycle_id is not None:
                held_cycle = live.filter(cycle_id=cycle_id).aggregate(n=Sum("tokens"))["n"] or 0
            try:
                self._check(
                    context,
                    cycle_id,
                    held=held - estimate,
                    held_cycle=held_cycle - estimate,
                    estimate=estimate,
                )
            except BudgetExceeded:
                transaction.set_rollback(True)
                raise
        return reservation.pk

    def settle(self, reservation_id: int, *, tokens: int) -> None:
        """The call answered: it no longer counts against the concurrency limit, and holds its
        real tokens until its ModelCall row is written (`release`)."""
        if reservation_id:
            TokenReservation.objects.filter(pk=reservation_id).update(tokens=tokens, settled=True)

    def release(self, reservation_id: int, *, tokens: int | None = None) -> None:
        """Settle a reservation to the call's real tokens (None: the call made none)."""
        if not reservation_id:
            return
        TokenReservation.objects.filter(pk=reservation_id).update(
            tokens=tokens or 0,
            settled=True,
            expires_at=timezone.now() + timedelta(seconds=SETTLED_SECONDS),
        )

    def in_flight(self, agent: Agent) -> int:
        """Tokens every worker holds for this agent's calls in flight or just settled."""
        live = TokenReservation.objects.filter(agent=agent, expires_at__gt=timezone.now())
        return live.aggregate(n=Sum("tokens"))["n"] or 0

    @staticmethod
    def sweep() -> int:
        """Delete reservations that no longer count (beat's housekeeping)."""
        return TokenReservation.objects.filter(expires_at__lt=timezone.now()).delete()[0]

    def _check(
        self,
        context: CallContext,
        cycle_id: int | None,
        *,
        held: int,
        held_cycle: int,
        estimate: int,
    ) -> None:
        agent = context.agent
        monthly = self._spent(agent, None) + held
        if monthly + estimate > agent.monthly_token_budget:
            raise BudgetExceeded(
                f"{agent.slug}: monthly budget {agent.monthly_token_budget} tokens; "
                f"spent or held {monthly}, this call may need {estimate}"
            )
        if cycle_id is not None:
            spent = self._spent(agent, cycle_id) + held_cycle
            if spent + estimate > agent.cycle_token_budget:
                raise BudgetExceeded(
                    f"{agent.slug}: cycle budget {agent.cycle_token_budget} tokens; "
                    f"cycle {cycle_id} spent or held {spent}, this call may need {estimate}"
                )

    def check(self, context: CallContext, *, estimate: int) -> None:
        """Raise BudgetExceeded if `estimate` more tokens, on top of the spend and every
        worker's live reservations, would go over a budget (holds nothing: Message Batches)."""
        cycle_id = self.cycle_id(context)
        live = TokenReservation.objects.filter(agent=context.agent, expires_at__gt=timezone.now())
        held = live.aggregate(n=Sum("tokens"))["n"] or 0
        held_cycle = 0
        if cycle_id is not None:
            held_cycle = live.filter(cycle_id=cycle_id).aggregate(n=Sum("tokens"))["n"] or 0
        self._check(context, cycle_id, held=held, held_cycle=held_cycle, estimate=estimate)

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
