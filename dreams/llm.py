"""The model gateway: every model call goes through here, over the official `anthropic` SDK.

It checks the agent's token budgets before a call, lets the SDK retry 408/409/429/5xx/529 and
timeouts (REVERIE_MODEL_MAX_RETRIES, REVERIE_MODEL_TIMEOUT), records a `ModelCall` per call
(tokens, cost, latency, what it was for), marks the shared prefix for prompt caching, and
runs Message Batches. The backend is the real API or the in-process simulated model.
"""

import asyncio
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
from anthropic.types import Message
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import F, Q, Sum
from django.utils import timezone

from agents.models import Agent
from agents.pricing import cost_of
from dreams.models import DreamCycle, Experiment, ModelCall, Replay

log = logging.getLogger(__name__)

SIMULATED_BASE_URL = "http://simulated.reverie.local"
BATCH_DISCOUNT = Decimal("0.5")
EPHEMERAL = {"type": "ephemeral"}
# How stale this process's view of other processes' spend may get (its own calls count at once).
SPEND_REFRESH_SECONDS = 2.0
# Replays use REVERIE_REPLAY_MAX_TOKENS (read per call); judges answer briefly; dreams write more.
DEFAULT_MAX_TOKENS = {"judge": 1024, "dream": 4096, "hosted_dream": 4096}
# Accounting rows of async calls are inserted this many at a time.
RECORD_BATCH_SIZE = 25


class _NeedsDatabase(Exception):
    """Internal: the budget check needs a query, which the event loop thread must not run."""


class ModelError(Exception):
    """Base of the gateway's typed errors; callers record them and carry on cleanly."""


class BudgetExceeded(ModelError):
    """The call would take the agent over its cycle or monthly token budget."""


class ModelUnavailable(ModelError):
    """The model kept failing (overloaded, rate limited, 5xx, timeout) after every retry."""


class ModelRequestError(ModelError):
    """The API refused the request itself (4xx other than 408/409/429); retrying cannot help."""


@dataclass(frozen=True)
class CallContext:
    agent: Agent
    purpose: str
    cycle: DreamCycle | None = None
    experiment: Experiment | None = None
    replay: Replay | None = None


def usage_dict(message: Message) -> dict[str, int]:
    usage = message.usage
    return {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
    }


def with_cached_prefix(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Copy of `kwargs` with cache_control on the last system block and the last tool."""
    out = dict(kwargs)
    system = out.get("system")
    if isinstance(system, str) and system:
        out["system"] = [{"type": "text", "text": system, "cache_control": EPHEMERAL}]
    elif isinstance(system, list) and system:
        out["system"] = [*system[:-1], {**system[-1], "cache_control": EPHEMERAL}]
    tools = out.get("tools")
    if tools:
        out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": EPHEMERAL}]
    return out


def estimate_call_tokens(kwargs: dict[str, Any]) -> int:
    """Upper-bound guess of a call's tokens (4 characters a token, plus max_tokens)."""
    size = len(
        json.dumps([kwargs.get("system"), kwargs.get("tools"), kwargs.get("messages")], default=str)
    )
    return size // 4 + int(kwargs.get("max_tokens") or 0)


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


class Gateway:
    def __init__(
        self,
        *,
        backend: str,
        api_key: str = "",
        base_url: str = "",
        max_retries: int = 3,
        timeout: float = 120.0,
    ) -> None:
        self.backend = backend
        self.api_key = api_key
        self.base_url = base_url
        self.max_retries = max_retries
        self.timeout = timeout
        self._client: anthropic.Anthropic | None = None
        self._async_clients: weakref.WeakKeyDictionary[Any, anthropic.AsyncAnthropic] = (
            weakref.WeakKeyDictionary()
        )
        # Tokens of calls in flight per agent: concurrent replays must not all pass the check.
        self._reserved: dict[int, int] = {}
        self._spend_cache: dict[tuple[Any, ...], tuple[int, float]] = {}
        self._experiment_cycles: dict[int, int | None] = {}
        self._buffers: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
        self._pending_records: weakref.WeakKeyDictionary[Any, set[asyncio.Future[Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.RLock()

    # -- clients ---------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"max_retries": self.max_retries, "timeout": self.timeout}
        if self.backend == "simulated":
            options.update(api_key="simulated", base_url=SIMULATED_BASE_URL)
        else:
            options.update(api_key=self.api_key or None, base_url=self.base_url or None)
        return options

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            options = self._client_options()
            if self.backend == "simulated":
                from dreams.simulated.transport import SimulatedTransport

                options["http_client"] = httpx2.Client(transport=SimulatedTransport())
            self._client = anthropic.Anthropic(**options)
        return self._client

    def async_client(self) -> anthropic.AsyncAnthropic:
        """The async client of the running event loop (connection pools belong to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            options = self._client_options()
            if self.backend == "simulated":
                from dreams.simulated.transport import AsyncSimulatedTransport

                options["http_client"] = httpx2.AsyncClient(transport=AsyncSimulatedTransport())
            else:
                options["http_client"] = anthropic.DefaultAsyncHttpxClient(
                    limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=200)
                )
            client = anthropic.AsyncAnthropic(**options)
            self._async_clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Wait for pending accounting writes, then close this loop's async client."""
        loop = asyncio.get_running_loop()
        self._schedule_flush(loop)
        pending = self._pending_records.pop(loop, set())
        if pending:
            for outcome in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    log.error("recording a model call failed: %r", outcome)
        client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.close()

    # -- budget and accounting ---------------------------------------------------------------

    def reserve(self, context: CallContext, *, estimate: int, cached_only: bool = False) -> None:
        """Check the budgets counting calls in flight, then hold `estimate` until `release`.

        With `cached_only`, raise _NeedsDatabase instead of querying (for the event loop thread).
        """
        with self._lock:
            in_flight = self._reserved.get(context.agent.pk, 0)
            self.check_budget(context, estimate=estimate + in_flight, cached_only=cached_only)
            self._reserved[context.agent.pk] = in_flight + estimate

    def release(self, context: CallContext, *, estimate: int) -> None:
        with self._lock:
            left = self._reserved.get(context.agent.pk, 0) - estimate
            if left > 0:
                self._reserved[context.agent.pk] = left
            else:
                self._reserved.pop(context.agent.pk, None)

    def _spent(self, agent: Agent, cycle_id: int | None, *, cached_only: bool = False) -> int:
        """Tokens spent this month (or in a cycle): read from the database at most every
        SPEND_REFRESH_SECONDS, counting this process's own calls in between."""
        since = month_start()
        key = (agent.pk, cycle_id, since)
        with self._lock:
            now = time.monotonic()
            cached = self._spend_cache.get(key)
            if cached is None or now - cached[1] > SPEND_REFRESH_SECONDS:
                if cached_only:
                    raise _NeedsDatabase
                if cycle_id is None:
                    value = tokens_spent(agent=agent, since=since)
                else:
                    value = tokens_spent(agent=agent, cycle_id=cycle_id)
                self._spend_cache[key] = (value, now)
                return value
            return cached[0]

    def _cycle_id(self, context: CallContext, *, cached_only: bool = False) -> int | None:
        """The dream cycle a call spends from: its own, or its experiment's proposal's."""
        if context.cycle is not None:
            return context.cycle.pk
        experiment = context.experiment
        if experiment is None or not experiment.proposal_id:
            return None
        if experiment.pk not in self._experiment_cycles:
            if cached_only:
                raise _NeedsDatabase
            self._experiment_cycles[experiment.pk] = (
                Experiment.objects.filter(pk=experiment.pk)
                .values_list("proposal__cycle_id", flat=True)
                .first()
            )
        return self._experiment_cycles[experiment.pk]

    def _add_spend(self, agent_id: int, cycle_id: int | None, tokens: int) -> None:
        with self._lock:
            for key, (value, fetched) in list(self._spend_cache.items()):
                if key[0] == agent_id and key[1] in (None, cycle_id):
                    self._spend_cache[key] = (value + tokens, fetched)

    def check_budget(
        self, context: CallContext, *, estimate: int, cached_only: bool = False
    ) -> None:
        agent = context.agent
        monthly = self._spent(agent, None, cached_only=cached_only)
        if monthly + estimate > agent.monthly_token_budget:
            raise BudgetExceeded(
                f"{agent.slug}: monthly budget {agent.monthly_token_budget} tokens; "
                f"spent {monthly}, this call may need {estimate}"
            )
        cycle_id = self._cycle_id(context, cached_only=cached_only)
        if cycle_id is not None:
            spent = self._spent(agent, cycle_id, cached_only=cached_only)
            if spent + estimate > agent.cycle_token_budget:
                raise BudgetExceeded(
                    f"{agent.slug}: cycle budget {agent.cycle_token_budget} tokens; "
                    f"cycle {cycle_id} spent {spent}, this call may need {estimate}"
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
        """Store the call (and free its reservation once the spend is in the database)."""
        try:
            return self._record(
                context,
                model=model,
                usage=usage,
                latency_ms=latency_ms,
                error=error,
                discount=discount,
            )
        finally:
            if release:
                self.release(context, estimate=release)

    def _record(
        self,
        context: CallContext,
        *,
        model: str,
        usage: dict[str, int] | None,
        latency_ms: int,
        error: str,
        discount: Decimal | None,
    ) -> ModelCall:
        call = self._build_call(
            context, model=model, usage=usage, latency_ms=latency_ms, error=error, discount=discount
        )
        self._persist([(context, call)])
        return call

    def _build_call(
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
        cost = cost_of(model, usage)
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

    def _persist(self, items: list[tuple[CallContext, ModelCall]]) -> None:
        """Insert calls in one statement, then count them in this process's spend view."""
        ModelCall.objects.bulk_create([call for _, call in items])
        per_cycle: dict[int, tuple[int, Decimal]] = {}
        for context, call in items:
            if call.total_tokens:
                self._add_spend(context.agent.pk, self._cycle_id(context), call.total_tokens)
            if context.cycle is not None and call.total_tokens:
                tokens, cost = per_cycle.get(context.cycle.pk, (0, Decimal(0)))
                per_cycle[context.cycle.pk] = (tokens + call.total_tokens, cost + call.cost_usd)
        for cycle_id, (tokens, cost) in per_cycle.items():
            DreamCycle.objects.filter(pk=cycle_id).update(
                tokens_used=F("tokens_used") + tokens, cost_usd=F("cost_usd") + cost
            )

    def _flush_buffer(self, batch: list[tuple[CallContext, ModelCall, int]]) -> None:
        try:
            self._persist([(context, call) for context, call, _ in batch])
        finally:
            for context, _, estimate in batch:
                self.release(context, estimate=estimate)

    def _buffer_call(self, context: CallContext, call: ModelCall, estimate: int) -> None:
        """Queue an accounting row; rows are inserted in batches off the event loop.

        The call's reservation is held until its row is written, so the budget guard never
        sees less spend than there is.
        """
        loop = asyncio.get_running_loop()
        buffer = self._buffers.setdefault(loop, [])
        buffer.append((context, call, estimate))
        if len(buffer) >= RECORD_BATCH_SIZE:
            self._schedule_flush(loop)

    def _schedule_flush(self, loop: Any) -> None:
        batch = self._buffers.pop(loop, [])
        if not batch:
            return
        task = asyncio.ensure_future(sync_to_async(self._flush_buffer)(batch))
        pending = self._pending_records.setdefault(loop, set())
        pending.add(task)
        task.add_done_callback(pending.discard)

    # -- calls -------------------------------------------------------------------------------

    def _prepare(self, purpose: str, kwargs: dict[str, Any], cache_prefix: bool) -> dict[str, Any]:
        kwargs = dict(kwargs)
        kwargs.setdefault("model", self.default_model(purpose))
        kwargs.setdefault(
            "max_tokens",
            settings.REVERIE_REPLAY_MAX_TOKENS
            if purpose == ModelCall.Purpose.REPLAY
            else DEFAULT_MAX_TOKENS.get(purpose, 4096),
        )
        if cache_prefix and settings.REVERIE_PROMPT_CACHING:
            kwargs = with_cached_prefix(kwargs)
        return kwargs

    @staticmethod
    def default_model(purpose: str) -> str:
        if purpose == ModelCall.Purpose.JUDGE:
            return settings.REVERIE_JUDGE_MODEL
        if purpose == ModelCall.Purpose.REPLAY:
            return settings.REVERIE_REPLAY_MODEL
        return settings.REVERIE_DREAM_MODEL

    @staticmethod
    def _translate(exc: Exception) -> ModelError:
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            text = f"{type(exc).__name__} {status}: {exc.message}"
            if status in (408, 409, 429) or status >= 500:
                return ModelUnavailable(f"{text} (after retries)")
            return ModelRequestError(text)
        if isinstance(exc, anthropic.APIConnectionError):
            return ModelUnavailable(f"{type(exc).__name__}: {exc} (after retries)")
        return ModelError(f"{type(exc).__name__}: {exc}")

    def create_message(
        self,
        *,
        agent: Agent,
        purpose: str,
        cycle: DreamCycle | None = None,
        experiment: Experiment | None = None,
        replay: Replay | None = None,
        cache_prefix: bool = False,
        **kwargs: Any,
    ) -> Message:
        """`messages.create` with budget check, retries, accounting; raises ModelError subclasses."""
        context = CallContext(agent, purpose, cycle, experiment, replay)
        kwargs = self._prepare(purpose, kwargs, cache_prefix)
        estimate = estimate_call_tokens(kwargs)
        self.reserve(context, estimate=estimate)
        started = time.monotonic()
        try:
            message = self.client.messages.create(**kwargs)
        except anthropic.AnthropicError as exc:
            error = self._translate(exc)
            self.record(
                context,
                model=kwargs["model"],
                usage=None,
                latency_ms=int((time.monotonic() - started) * 1000),
                error=str(error),
                release=estimate,
            )
            raise error from exc
        except BaseException:
            self.release(context, estimate=estimate)
            raise
        self.record(
            context,
            model=message.model or kwargs["model"],
            usage=usage_dict(message),
            latency_ms=int((time.monotonic() - started) * 1000),
            release=estimate,
        )
        return message

    async def acreate_message(
        self,
        *,
        agent: Agent,
        purpose: str,
        cycle: DreamCycle | None = None,
        experiment: Experiment | None = None,
        replay: Replay | None = None,
        cache_prefix: bool = False,
        **kwargs: Any,
    ) -> Message:
        """Async twin of `create_message`; database work runs through sync_to_async."""
        context = CallContext(agent, purpose, cycle, experiment, replay)
        kwargs = self._prepare(purpose, kwargs, cache_prefix)
        estimate = estimate_call_tokens(kwargs)
        try:
            self.reserve(context, estimate=estimate, cached_only=True)
        except _NeedsDatabase:
            await sync_to_async(self.reserve)(context, estimate=estimate)
        started = time.monotonic()
        try:
            message = await self.async_client().messages.create(**kwargs)
        except anthropic.AnthropicError as exc:
            error = self._translate(exc)
            await sync_to_async(self.record)(
                context,
                model=kwargs["model"],
                usage=None,
                latency_ms=int((time.monotonic() - started) * 1000),
                error=str(error),
                release=estimate,
            )
            raise error from exc
        except BaseException:
            self.release(context, estimate=estimate)
            raise
        # Written in batches in the background; `aclose()` writes what is left and waits.
        call = self._build_call(
            context,
            model=message.model or kwargs["model"],
            usage=usage_dict(message),
            latency_ms=int((time.monotonic() - started) * 1000),
        )
        self._buffer_call(context, call, estimate)
        return message

    @staticmethod
    def _structured_kwargs(
        tool_name: str, input_schema: dict[str, Any], description: str
    ) -> dict[str, Any]:
        tool = {"name": tool_name, "input_schema": input_schema}
        if description:
            tool["description"] = description
        return {"tools": [tool], "tool_choice": {"type": "tool", "name": tool_name}}

    @staticmethod
    def _tool_input(message: Message, tool_name: str) -> dict[str, Any]:
        for block in message.content:
            if block.type == "tool_use" and block.name == tool_name:
                if not isinstance(block.input, dict):
                    raise ModelRequestError(f"{tool_name}: the model's input is not an object")
                return dict(block.input)
        raise ModelRequestError(f"the model did not call {tool_name}")

    async def astructured(
        self,
        *,
        agent: Agent,
        purpose: str,
        tool_name: str,
        input_schema: dict[str, Any],
        system: Any,
        messages: list[dict[str, Any]],
        cycle: DreamCycle | None = None,
        experiment: Experiment | None = None,
        replay: Replay | None = None,
        description: str = "",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Async twin of `structured`."""
        message = await self.acreate_message(
            agent=agent,
            purpose=purpose,
            cycle=cycle,
            experiment=experiment,
            replay=replay,
            system=system,
            messages=messages,
            **self._structured_kwargs(tool_name, input_schema, description),
            **kwargs,
        )
        return self._tool_input(message, tool_name)

    def structured(
        self,
        *,
        agent: Agent,
        purpose: str,
        tool_name: str,
        input_schema: dict[str, Any],
        system: Any,
        messages: list[dict[str, Any]],
        cycle: DreamCycle | None = None,
        experiment: Experiment | None = None,
        replay: Replay | None = None,
        description: str = "",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Force one tool and return its input dict (the model's structured answer)."""
        message = self.create_message(
            agent=agent,
            purpose=purpose,
            cycle=cycle,
            experiment=experiment,
            replay=replay,
            system=system,
            messages=messages,
            **self._structured_kwargs(tool_name, input_schema, description),
            **kwargs,
        )
        return self._tool_input(message, tool_name)

    # -- batches -------------------------------------------------------------------------------

    def run_batch(
        self,
        *,
        agent: Agent,
        purpose: str,
        requests: dict[str, dict[str, Any]],
        contexts: dict[str, CallContext] | None = None,
        cache_prefix: bool = False,
        poll_seconds: float | None = None,
        max_wait_seconds: float | None = None,
    ) -> dict[str, Message | ModelError]:
        """Send requests (custom_id → messages.create kwargs) as one Message Batch and wait for it.

        Each succeeded request is recorded as a ModelCall at the batch price (half the list price).
        """
        poll = settings.REVERIE_BATCH_POLL_SECONDS if poll_seconds is None else poll_seconds
        max_wait = (
            settings.REVERIE_BATCH_MAX_WAIT_SECONDS
            if max_wait_seconds is None
            else max_wait_seconds
        )
        contexts = contexts or {}
        base = CallContext(agent, purpose)
        params = {cid: self._prepare(purpose, kw, cache_prefix) for cid, kw in requests.items()}
        self.check_budget(
            next(iter(contexts.values()), base),
            estimate=sum(estimate_call_tokens(p) for p in params.values())
            + self._reserved.get(agent.pk, 0),
        )
        started = time.monotonic()
        try:
            batch = self.client.messages.batches.create(
                requests=[{"custom_id": cid, "params": p} for cid, p in params.items()]
            )
            while batch.processing_status != "ended":
                if time.monotonic() - started > max_wait:
                    self.client.messages.batches.cancel(batch.id)
                    raise ModelUnavailable(f"batch {batch.id} did not end within {max_wait:.0f}s")
                time.sleep(poll)
                batch = self.client.messages.batches.retrieve(batch.id)
            results = list(self.client.messages.batches.results(batch.id))
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc
        latency = int((time.monotonic() - started) * 1000)
        out: dict[str, Message | ModelError] = {}
        for item in results:
            context = contexts.get(item.custom_id, base)
            model = params.get(item.custom_id, {}).get("model", "")
            if item.result.type == "succeeded":
                message = item.result.message
                out[item.custom_id] = message
                self.record(
                    context,
                    model=message.model or model,
                    usage=usage_dict(message),
                    latency_ms=latency,
                    discount=BATCH_DISCOUNT,
                )
            else:
                detail = item.result.type
                if item.result.type == "errored":
                    detail = f"errored: {item.result.error.error.type}: {item.result.error.error.message}"
                error = ModelUnavailable(f"batch request {detail}")
                out[item.custom_id] = error
                self.record(context, model=model, usage=None, latency_ms=latency, error=str(error))
        for cid in params:
            out.setdefault(cid, ModelUnavailable("batch returned no result for this request"))
        return out


_gateways: dict[tuple[Any, ...], Gateway] = {}


def get_gateway() -> Gateway:
    """The gateway for the current settings (one per configuration, reused across calls)."""
    key = (
        settings.REVERIE_MODEL_BACKEND,
        settings.ANTHROPIC_API_KEY,
        settings.ANTHROPIC_BASE_URL,
        settings.REVERIE_MODEL_MAX_RETRIES,
        settings.REVERIE_MODEL_TIMEOUT,
    )
    gateway = _gateways.get(key)
    if gateway is None:
        gateway = Gateway(
            backend=settings.REVERIE_MODEL_BACKEND,
            api_key=settings.ANTHROPIC_API_KEY,
            base_url=settings.ANTHROPIC_BASE_URL,
            max_retries=settings.REVERIE_MODEL_MAX_RETRIES,
            timeout=settings.REVERIE_MODEL_TIMEOUT,
        )
        _gateways[key] = gateway
    return gateway
