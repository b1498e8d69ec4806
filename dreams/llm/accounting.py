"""Accounting: one ModelCall row per model call (tokens, cost, latency, what it was for).

Sync calls insert their row at once. Async calls queue rows that are inserted in batches off
the event loop (through sync_to_async); `flush_pending()` writes what is left and waits. A
call's budget reservation is held until its row is written, so the guard never undercounts.
"""

import asyncio
import logging
import weakref
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import F

from agents.pricing import cost_of
from dreams.llm.base import FREE_BACKENDS, CallContext
from dreams.llm.budget import BudgetGuard
from dreams.models import DreamCycle, ModelCall

log = logging.getLogger(__name__)

RECORD_BATCH_SIZE = 25


class Accountant:
    def __init__(self, *, backend: str, guard: BudgetGuard) -> None:
        self.backend = backend
        self.guard = guard
        self._buffers: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
        self._pending: weakref.WeakKeyDictionary[Any, set[asyncio.Future[Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def record(
        self,
        context: CallContext,
        *,
        model: str,
        usage: dict[str, int] | None,
        latency_ms: int,
        error: str = "",
        discount: Decimal | None = None,
        release: int = 0,
    ) -> ModelCall:
        """Store the call now; its hold (`release` tokens) ends in the same transaction."""
        try:
            call = self.build(
                context,
                model=model,
                usage=usage,
                latency_ms=latency_ms,
                error=error,
                discount=discount,
            )
        except BaseException:
            if release:
                self.guard.release(context, estimate=release)
            raise
        self._persist([(context, call, release)])
        return call

    def build(
        self,
        context: CallContext,
        *,
        model: str,
        usage: dict[str, int] | None,
        latency_ms: int,
        error: str = "",
        discount: Decimal | None = None,
    ) -> ModelCall:
        """An unsaved ModelCall (no database access: safe on the event loop thread)."""
        usage = usage or {}
        cost = Decimal(0) if self.backend in FREE_BACKENDS else cost_of(model, usage)
        if discount is not None:
            cost = (cost * discount).quantize(Decimal("0.000001"))
        return ModelCall(
            agent=context.agent,
            purpose=context.purpose,
            cycle=context.cycle,
            experiment=context.experiment,
            replay=context.replay,
            model=model,
            backend=self.backend,
            input_tokens=usage.get("input_tokens", 0),
            output_tokens=usage.get("output_tokens", 0),
            cache_read_tokens=usage.get("cache_read_input_tokens", 0),
            cache_write_tokens=usage.get("cache_creation_input_tokens", 0),
            cost_usd=cost,
            latency_ms=latency_ms,
            ok=not error,
            error=error[:2000],
        )

    def queue(self, context: CallContext, call: ModelCall, *, estimate: int) -> None:
        """Queue a row from the event loop; it is written with others in one insert."""
        loop = asyncio.get_running_loop()
        buffer = self._buffers.setdefault(loop, [])
        buffer.append((context, call, estimate))
        if len(buffer) >= RECORD_BATCH_SIZE:
            self._schedule_flush(loop)

    async def flush_pending(self) -> None:
        """Write the queued rows of the running loop and wait for every write in flight."""
        loop = asyncio.get_running_loop()
        self._schedule_flush(loop)
        pending = self._pending.pop(loop, set())
        if pending:
            for outcome in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    log.error("recording model calls failed: %r", outcome)

    def _schedule_flush(self, loop: Any) -> None:
        batch = self._buffers.pop(loop, [])
        if not batch:
            return
        task = asyncio.ensure_future(sync_to_async(self._flush)(batch))
        pending = self._pending.setdefault(loop, set())
        pending.add(task)
        task.add_done_callback(pending.discard)

    def _flush(self, batch: list[tuple[CallContext, ModelCall, int]]) -> None:
        self._persist(batch)

    def _persist(self, items: list[tuple[CallContext, ModelCall, int]]) -> None:
        """Insert calls (context, row, its hold) in one statement and, in the same transaction,
        count their tokens in the shared budget counters and end their holds."""
        try:
            with transaction.atomic():
                ModelCall.objects.bulk_create([call for _, call, _ in items])
                per_cycle: dict[int, tuple[int, Decimal]] = {}
                for context, call, _ in items:
                    if context.cycle is not None and call.total_tokens:
                        tokens, cost = per_cycle.get(context.cycle.pk, (0, Decimal(0)))
                        per_cycle[context.cycle.pk] = (
                            tokens + call.total_tokens,
                            cost + call.cost_usd,
                        )
                for cycle_id, (tokens, cost) in per_cycle.items():
                    DreamCycle.objects.filter(pk=cycle_id).update(
                        tokens_used=F("tokens_used") + tokens, cost_usd=F("cost_usd") + cost
                    )
                self.guard.settle(
                    [(context, call.total_tokens, estimate) for context, call, estimate in items]
                )
        except BaseException:
            for context, _, estimate in items:
                if estimate:
                    self.guard.release(context, estimate=estimate)
            raise
