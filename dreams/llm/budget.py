"""The budget guard: refuse a call that would take an agent over its cycle or monthly budget,
and hold replays to `Agent.replay_concurrency`, across every worker process.

Each budget is a `BudgetCounter` row (the agent's month, and one per dream cycle). A worker takes
tokens from it with one conditional UPDATE (`reserved + recorded + n <= limit - baseline`, F()
expressions; SQLite and PostgreSQL alike) in chunks of several calls' estimates, and hands out
its chunk to its own calls without the database; when calls are recorded, their ModelCall rows
and the counter's `recorded` (their tokens) and `reserved` (the chunk, given back) change in one
transaction. `baseline` is this process's cached spend (ModelCall rows, refreshed every
SPEND_REFRESH_SECONDS) minus `recorded` when it was read: spend recorded by any worker since
then is in `recorded`, so no worker's cache is ever behind another's calls. Replay slots are
taken the same way (`slots < limit`). What a worker holds is mirrored in its `BudgetLease`,
renewed while it works; beat's sweeper gives a dead worker's tokens and slots back.
"""

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet, Sum, Value
from django.utils import timezone

from agents.models import Agent
from dreams.llm.base import BudgetExceeded, CallContext, NeedsDatabase
from dreams.models import BudgetCounter, BudgetLease, Experiment, ModelCall

SPEND_REFRESH_SECONDS = 2.0
# A worker takes this many calls' estimates from a counter at once (then needs no database
# until they are spent); a refused chunk falls back to exactly what the call needs.
RESERVE_BATCH_CALLS = 8
MONTH = 0  # BudgetCounter.cycle_id of the agent's monthly budget (and its replay slots)


def lease_seconds() -> float:
    """How long a worker's lease lives unrenewed: longer than one call with all its retries."""
    return settings.REVERIE_MODEL_TIMEOUT * (settings.REVERIE_MODEL_MAX_RETRIES + 1) + 60


@dataclass
class _Grant:
    """This worker's chunk of one counter: `granted` tokens taken, `used` by calls in flight."""

    granted: int = 0
    used: int = 0
    renewed: float = 0.0


_TOKENS = F("input_tokens") + F("output_tokens") + F("cache_read_tokens") + F("cache_write_tokens")


def counted_calls(
    *,
    agent: Agent | int,
    since: datetime | None = None,
    until: datetime | None = None,
    cycle_id: int | None = None,
) -> QuerySet[ModelCall]:
    """The model calls that count against an agent's budgets and in its dreaming spend: every
    purpose (dream, replay, judge, hosted dream); a cycle's are its own calls and those of its
    proposals' experiments. The one counter behind the cycle cap, the monthly cap and spend."""
    calls = ModelCall.objects.filter(agent=agent)
    if since is not None:
        calls = calls.filter(created_at__gte=since)
    if until is not None:
        calls = calls.filter(created_at__lt=until)
    if cycle_id is not None:
        calls = calls.filter(Q(cycle_id=cycle_id) | Q(experiment__proposal__cycle_id=cycle_id))
    return calls


def tokens_spent(
    *, agent: Agent | int, since: datetime | None = None, cycle_id: int | None = None
) -> int:
    calls = counted_calls(agent=agent, since=since, cycle_id=cycle_id)
    return calls.aggregate(total=Sum(_TOKENS))["total"] or 0


def month_start(now: datetime | None = None) -> datetime:
    """Midnight UTC on the first of this month: where the monthly budget starts counting."""
    return (now or timezone.now()).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _counter(agent_id: int, cycle_id: int) -> QuerySet[BudgetCounter]:
    return BudgetCounter.objects.filter(agent_id=agent_id, cycle_id=cycle_id)


def _ensure_counter(agent_id: int, cycle_id: int) -> bool:
    """Create the counter row if it is missing (racing workers: one insert wins); whether it
    was missing (the caller tries its conditional UPDATE again)."""
    if _counter(agent_id, cycle_id).exists():
        return False
    BudgetCounter.objects.bulk_create(
        [BudgetCounter(agent_id=agent_id, cycle_id=cycle_id)], ignore_conflicts=True
    )
    return True


def sweep_leases(now: datetime | None = None) -> int:
    """Give the tokens and slots of leases past their expiry (dead workers) back to their
    counters and delete the leases; how many held something. Each lease goes with one
    conditional DELETE (still expired, still holding what was read), so a worker renewing it
    meanwhile keeps it."""
    now = now or timezone.now()
    reclaimed = 0
    for lease in BudgetLease.objects.filter(expires_at__lt=now).order_by("pk"):
        with transaction.atomic():
            gone = BudgetLease.objects.filter(
                pk=lease.pk, expires_at__lt=now, tokens=lease.tokens, slots=lease.slots
            ).delete()[0]
            if gone and (lease.tokens or lease.slots):
                _counter(lease.agent_id, lease.cycle_id).update(
                    reserved=F("reserved") - lease.tokens, slots=F("slots") - lease.slots
                )
                reclaimed += 1
    return reclaimed


class BudgetGuard:
    """One per process (the gateway's). Budgets and replay slots are shared through the
    database; this object keeps only its worker's chunks and cached spend."""

    def __init__(self) -> None:
        self._grants: dict[tuple[int, int], _Grant] = {}
        self._baselines: dict[tuple[Any, ...], tuple[int, float]] = {}
        self._experiment_cycles: dict[int, int | None] = {}
        self._lock = threading.RLock()
        self._pid = 0
        self._worker = ""

    @property
    def worker(self) -> str:
        """This process's lease name; a forked child gets its own and none of its parent's
        chunks."""
        pid = os.getpid()
        if pid != self._pid:
            with self._lock:
                self._pid = pid
                self._worker = f"{socket.gethostname()[:60]}:{pid}:{uuid.uuid4().hex[:8]}"
                self._grants.clear()
        return self._worker

    # -- tokens ------------------------------------------------------------------------------

    def _scopes(self, context: CallContext, *, cached_only: bool) -> list[tuple[int, int]]:
        """(counter cycle_id, limit) of every budget the call spends from."""
        agent = context.agent
        scopes = [(MONTH, agent.monthly_token_budget)]
        cycle_id = self.cycle_id(context, cached_only=cached_only)
        if cycle_id is not None:
            scopes.append((cycle_id, agent.cycle_token_budget))
        return scopes

    def reserve(self, context: CallContext, *, estimate: int, cached_only: bool = False) -> None:
        """Hold `estimate` tokens of every budget the call spends from, counting every worker's
        calls, until the call is recorded (`settle`) or `release`d; raises BudgetExceeded.

        With `cached_only` (the event loop thread), raise NeedsDatabase instead of querying:
        the call fits in this worker's chunk or it needs the database.
        """
        worker = self.worker
        scopes = self._scopes(context, cached_only=cached_only)
        done: list[int] = []
        try:
            for cycle_id, limit in scopes:
                self._reserve_scope(
                    context.agent, cycle_id, limit, estimate, worker, cached_only=cached_only
                )
                done.append(cycle_id)
        except BaseException:
            with self._lock:
                for cycle_id in done:
                    grant = self._grants[(context.agent.pk, cycle_id)]
                    grant.used = max(0, grant.used - estimate)
            raise

    def _reserve_scope(
        self,
        agent: Agent,
        cycle_id: int,
        limit: int,
        estimate: int,
        worker: str,
        *,
        cached_only: bool,
    ) -> None:
        key = (agent.pk, cycle_id)
        renew_after = lease_seconds() / 3
        for _ in range(5):
            with self._lock:
                grant = self._grants.setdefault(key, _Grant())
                free = grant.granted - grant.used
                due = time.monotonic() - grant.renewed > renew_after
                if free >= estimate and not due:
                    grant.used += estimate
                    return
            if cached_only:
                raise NeedsDatabase
            need = max(0, estimate - free)
            if need == 0:
                self._renew(agent.pk, cycle_id, worker)
                continue
            chunk = max(need, estimate * RESERVE_BATCH_CALLS)
            taken = self._take(agent, cycle_id, limit, chunk, worker)
            if not taken and chunk > need:
                taken = self._take(agent, cycle_id, limit, need, worker)
            if not taken:
                raise self._refusal(agent, cycle_id, limit, estimate)
            with self._lock:
                grant = self._grants.setdefault(key, _Grant())
                grant.granted += taken
                grant.renewed = time.monotonic()
                if grant.granted - grant.used >= estimate:
                    grant.used += estimate
                    return
        raise self._refusal(agent, cycle_id, limit, estimate)  # others kept taking the chunks

    def _take(self, agent: Agent, cycle_id: int, limit: int, amount: int, worker: str) -> int:
        """Take `amount` tokens from the counter if every worker's holdings and the recorded
        spend leave room (one conditional UPDATE); the amount taken, or 0."""
        bound = limit - self._baseline(agent, cycle_id) - amount
        for _ in range(2):
            with transaction.atomic():
                taken = (
                    _counter(agent.pk, cycle_id)
                    .filter(reserved__lte=Value(bound) - F("recorded"))
                    .update(reserved=F("reserved") + amount)
                )
                if taken:
                    self._lease_add(agent.pk, cycle_id, worker, tokens=amount)
                    return amount
            if not _ensure_counter(agent.pk, cycle_id):
                return 0
        return 0

    def _lease_add(
        self, agent_id: int, cycle_id: int, worker: str, *, tokens: int = 0, slots: int = 0
    ) -> None:
        expires = timezone.now() + timedelta(seconds=lease_seconds())
        lease = BudgetLease.objects.filter(agent_id=agent_id, cycle_id=cycle_id, worker=worker)
        changes = {"tokens": F("tokens") + tokens, "slots": F("slots") + slots}
        if not lease.update(expires_at=expires, **changes):
            BudgetLease.objects.bulk_create(
                [
                    BudgetLease(
                        agent_id=agent_id, cycle_id=cycle_id, worker=worker, expires_at=expires
                    )
                ],
                ignore_conflicts=True,
            )
            lease.update(expires_at=expires, **changes)

    def _renew(self, agent_id: int, cycle_id: int, worker: str) -> None:
        """Push this worker's lease expiry on; a lease the sweeper took (it looked dead) holds
        nothing any more, so neither does this worker's chunk."""
        expires = timezone.now() + timedelta(seconds=lease_seconds())
        renewed = BudgetLease.objects.filter(
            agent_id=agent_id, cycle_id=cycle_id, worker=worker
        ).update(expires_at=expires)
        with self._lock:
            grant = self._grants.setdefault((agent_id, cycle_id), _Grant())
            grant.renewed = time.monotonic()
            if not renewed:
                grant.granted = grant.used = 0

    def _give_back(
        self, agent_id: int, cycle_id: int, worker: str, *, tokens: int, recorded: int
    ) -> None:
        """Hand `tokens` of this worker's chunk back to the counter and count `recorded` tokens
        of ModelCall rows written in the same transaction. A lease the sweeper already gave
        back is not given back twice."""
        expires = timezone.now() + timedelta(seconds=lease_seconds())
        returned = 0
        if tokens:
            returned = BudgetLease.objects.filter(
                agent_id=agent_id, cycle_id=cycle_id, worker=worker, tokens__gte=tokens
            ).update(tokens=F("tokens") - tokens, expires_at=expires)
        changes: dict[str, Any] = {}
        if returned:
            changes["reserved"] = F("reserved") - tokens
        if recorded:
            changes["recorded"] = F("recorded") + recorded
        if changes and not _counter(agent_id, cycle_id).update(**changes) and recorded:
            _ensure_counter(agent_id, cycle_id)  # the first call recorded against this budget
            _counter(agent_id, cycle_id).update(**changes)

    def settle(self, entries: list[tuple[CallContext, int, int]]) -> None:
        """Calls recorded (context, their tokens, their estimate), inside the transaction that
        writes their ModelCall rows: count their tokens and give back this worker's unused
        chunk of each budget they spent from."""
        per_key: dict[tuple[int, int], list[int]] = {}
        for context, tokens, estimate in entries:
            for cycle_id, _ in self._scopes(context, cached_only=False):
                sums = per_key.setdefault((context.agent.pk, cycle_id), [0, 0])
                sums[0] += estimate
                sums[1] += tokens
        self._settle(per_key)

    def release(self, context: CallContext, *, estimate: int, give_back: bool = True) -> None:
        """A call that will not be recorded: free its hold (and, unless on the event loop,
        give this worker's unused chunk back)."""
        try:
            scopes = self._scopes(context, cached_only=True)
        except NeedsDatabase:
            scopes = [(MONTH, 0)]
        per_key = {(context.agent.pk, cycle_id): [estimate, 0] for cycle_id, _ in scopes}
        if give_back:
            self._settle(per_key)
        else:
            with self._lock:
                for key in per_key:
                    grant = self._grants.setdefault(key, _Grant())
                    grant.used = max(0, grant.used - estimate)

    def return_unused(self) -> None:
        """Give back every unused chunk this worker holds (its calls have all been recorded)."""
        with self._lock:
            keys = list(self._grants)
        self._settle({key: [0, 0] for key in keys})

    def _settle(self, per_key: dict[tuple[int, int], list[int]]) -> None:
        worker = self.worker
        plan = []
        with self._lock:
            for key, (estimate, tokens) in per_key.items():
                grant = self._grants.setdefault(key, _Grant())
                freed = min(estimate, grant.used)
                grant.used -= freed
                give = grant.granted - grant.used
                grant.granted -= give
                plan.append((key, give, tokens, freed))
        try:
            for (agent_id, cycle_id), give, tokens, _ in plan:
                self._give_back(agent_id, cycle_id, worker, tokens=give, recorded=tokens)
        except BaseException:
            with self._lock:
                for key, give, _, freed in plan:
                    grant = self._grants[key]
                    grant.granted += give
                    grant.used += freed
            raise

    def in_flight(self, agent: Agent) -> int:
        """Tokens every worker holds for this agent's calls (monthly budget)."""
        return _counter(agent.pk, MONTH).values_list("reserved", flat=True).first() or 0

    def check(self, context: CallContext, *, estimate: int, cached_only: bool = False) -> None:
        """Raise BudgetExceeded if `estimate` more tokens, on top of the recorded spend and every
        worker's holdings, would go over a budget (holds nothing: Message Batches)."""
        if cached_only:
            raise NeedsDatabase
        for cycle_id, limit in self._scopes(context, cached_only=False):
            row = _counter(context.agent.pk, cycle_id).values_list("reserved", "recorded").first()
            reserved, recorded = row or (0, 0)
            if self._baseline(context.agent, cycle_id) + recorded + reserved + estimate > limit:
                raise self._refusal(context.agent, cycle_id, limit, estimate)

    def _refusal(self, agent: Agent, cycle_id: int, limit: int, estimate: int) -> BudgetExceeded:
        row = _counter(agent.pk, cycle_id).values_list("reserved", "recorded").first()
        reserved, recorded = row or (0, 0)
        spent = self._baseline(agent, cycle_id) + recorded
        held = f", held by calls in flight {reserved}" if reserved else ""
        if cycle_id == MONTH:
            return BudgetExceeded(
                f"{agent.slug}: monthly budget {limit} tokens; "
                f"spent {spent}{held}, this call may need {estimate}"
            )
        return BudgetExceeded(
            f"{agent.slug}: cycle budget {limit} tokens; "
            f"cycle {cycle_id} spent {spent}{held}, this call may need {estimate}"
        )

    def _baseline(self, agent: Agent, cycle_id: int) -> int:
        """This process's spend of a budget minus the counter's `recorded` when it was read
        (read first, so a call recorded in between is counted twice, never missed)."""
        since = month_start() if cycle_id == MONTH else None
        key = (agent.pk, cycle_id, since)
        with self._lock:
            cached = self._baselines.get(key)
            if cached is not None and time.monotonic() - cached[1] <= SPEND_REFRESH_SECONDS:
                return cached[0]
        recorded = _counter(agent.pk, cycle_id).values_list("recorded", flat=True).first() or 0
        if cycle_id == MONTH:
            spent = tokens_spent(agent=agent, since=since)
        else:
            spent = tokens_spent(agent=agent, cycle_id=cycle_id)
        with self._lock:
            self._baselines[key] = (spent - recorded, time.monotonic())
        return spent - recorded

    # -- replay slots --------------------------------------------------------------------------

    def take_slot(self, agent: Agent) -> bool:
        """Take one of the agent's `replay_concurrency` slots, counting every worker's (one
        conditional UPDATE); False when all are taken."""
        worker = self.worker
        limit = max(1, agent.replay_concurrency)
        for _ in range(2):
            with transaction.atomic():
                if _counter(agent.pk, MONTH).filter(slots__lt=limit).update(slots=F("slots") + 1):
                    self._lease_add(agent.pk, MONTH, worker, slots=1)
                    return True
            if not _ensure_counter(agent.pk, MONTH):
                return False
        return False

    def give_slot(self, agent: Agent) -> None:
        """Give a slot back (not twice if the sweeper already took this worker's lease)."""
        with transaction.atomic():
            if BudgetLease.objects.filter(
                agent_id=agent.pk, cycle_id=MONTH, worker=self.worker, slots__gte=1
            ).update(slots=F("slots") - 1):
                _counter(agent.pk, MONTH).update(slots=F("slots") - 1)

    # -- cycles --------------------------------------------------------------------------------

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
