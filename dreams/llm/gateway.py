"""The model gateway: every model call goes through here, over the official `anthropic` SDK.

It checks the agent's token budgets before a call (budget.py), lets the SDK retry
408/409/429/5xx/529 and timeouts (REVERIE_MODEL_MAX_RETRIES, REVERIE_MODEL_TIMEOUT), records a
`ModelCall` per call (accounting.py), marks the shared prefix for prompt caching, and runs
Message Batches. The backend is the real API, the local model (dreams/llm/local/: the same
path as the real API, over ANTHROPIC_BASE_URL, priced at $0) or the in-process simulated model.
A forced-tool answer that is no usable call (cut off at max_tokens, text instead) is recorded
with its tokens and the reason, and raises UnusableAnswer.
"""

import asyncio
import json
import time
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import anthropic
import httpx2
from anthropic.types import Message
from asgiref.sync import sync_to_async
from django.conf import settings

from agents.models import Agent
from dreams.llm.accounting import Accountant
from dreams.llm.base import (
    FREE_BACKENDS,
    BudgetExceeded,
    CallContext,
    ModelError,
    ModelRequestError,
    ModelUnavailable,
    NeedsDatabase,
    UnusableAnswer,
    usage_dict,
)
from dreams.llm.budget import BudgetGuard
from dreams.models import DreamCycle, Experiment, ModelCall, Replay

if TYPE_CHECKING:
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

SIMULATED_BASE_URL = "http://simulated.reverie.local"
RECORDED_BASE_URL = "http://recorded.reverie.local"
BATCH_DISCOUNT = Decimal("0.5")
EPHEMERAL = {"type": "ephemeral"}
# Replays use REVERIE_REPLAY_MAX_TOKENS (read per call); judges answer briefly; dreams write more.
DEFAULT_MAX_TOKENS = {"judge": 1024, "dream": 4096, "hosted_dream": 4096}

__all__ = ["BudgetExceeded", "Gateway", "ModelRequestError", "ModelUnavailable", "get_gateway"]


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


class Gateway:
    def __init__(
        self,
        *,
        backend: str,
        api_key: str = "",
        base_url: str = "",
        max_retries: int = 3,
        timeout: float = 120.0,
        in_process: bool = False,
    ) -> None:
        self.backend = backend
        # The recorded backend may answer in process, without the SDK's HTTP round trip.
        self.in_process = in_process and backend == "recorded"
        self.api_key = api_key
        self.base_url = base_url
        self.max_retries = max_retries
        self.timeout = timeout
        self.budget = BudgetGuard()
        self.accounting = Accountant(backend=backend, guard=self.budget)
        self._client: anthropic.Anthropic | None = None
        # The recorded backend answers from these recordings (dreams/simulated/recorded.py).
        self.recordings: Any = None
        if backend == "recorded":
            from dreams.simulated.recorded import RecordingLibrary

            self.recordings = RecordingLibrary()
        self._async_clients: weakref.WeakKeyDictionary[Any, anthropic.AsyncAnthropic] = (
            weakref.WeakKeyDictionary()
        )

    # -- clients ---------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"max_retries": self.max_retries, "timeout": self.timeout}
        if self.backend == "simulated":
            options.update(api_key="simulated", base_url=SIMULATED_BASE_URL)
        elif self.backend == "recorded":
            options.update(api_key="recorded", base_url=RECORDED_BASE_URL, max_retries=0)
        else:
            # The local model's adapter takes any key; the SDK wants one.
            dummy = "local" if self.backend == "local" else None
            options.update(api_key=self.api_key or dummy, base_url=self.base_url or None)
        return options

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            options = self._client_options()
            if self.backend == "simulated":
                from dreams.simulated.transport import SimulatedTransport

                options["http_client"] = httpx2.Client(transport=SimulatedTransport())
            elif self.backend == "recorded":
                from dreams.simulated.recorded import RecordedTransport

                options["http_client"] = httpx2.Client(transport=RecordedTransport(self.recordings))
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
            elif self.backend == "recorded":
                from dreams.simulated.recorded import AsyncRecordedTransport

                options["http_client"] = httpx2.AsyncClient(
                    transport=AsyncRecordedTransport(self.recordings)
                )
            else:
                options["http_client"] = anthropic.DefaultAsyncHttpxClient(
                    limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=200)
                )
            client = anthropic.AsyncAnthropic(**options)
            self._async_clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Wait for pending accounting writes, then close this loop's async client."""
        await self.accounting.flush_pending()
        await sync_to_async(self.budget.return_unused)()
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    @property
    def priced(self) -> bool:
        """Whether calls cost money (the simulated, recorded and local backends cost nothing)."""
        return self.backend not in FREE_BACKENDS

    @property
    def accounted(self) -> bool:
        """Recorded turns are not model calls: nothing to budget or to account."""
        return self.backend != "recorded"

    # -- calls -------------------------------------------------------------------------------

    def _prepare(self, purpose: str, kwargs: dict[str, Any], cache_prefix: bool) -> dict[str, Any]:
        kwargs = dict(kwargs)
        kwargs.setdefault("model", self.default_model(purpose))
        kwargs.setdefault(
            "max_tokens",
            settings.REVERIE_REPLAY_MAX_TOKENS
            if purpose == ModelCall.Purpose.REPLAY
            else settings.REVERIE_SIMULATED_USER_MAX_TOKENS
            if purpose == ModelCall.Purpose.SIMULATED_USER
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
        if purpose == ModelCall.Purpose.SIMULATED_USER:
            return settings.REVERIE_SIMULATED_USER_MODEL
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
        check: Callable[[Message], str] | None = None,
        **kwargs: Any,
    ) -> Message:
        """`messages.create` with budget check, retries, accounting; raises ModelError subclasses.

        `check(message)` names what makes an answer unusable ("" if nothing): such an answer is
        recorded with its tokens and that reason, and raises UnusableAnswer."""
        context = CallContext(agent, purpose, cycle, experiment, replay)
        kwargs = self._prepare(purpose, kwargs, cache_prefix)
        if self.in_process:
            from dreams.simulated.recorded import in_process_message

            return self._checked(in_process_message(self.recordings, kwargs), check)
        if not self.accounted:
            try:
                message = self.client.messages.create(**kwargs)
            except anthropic.AnthropicError as exc:
                raise self._translate(exc) from exc
            return self._checked(message, check)
        estimate = estimate_call_tokens(kwargs)
        self.budget.reserve(context, estimate=estimate)
        started = time.monotonic()
        try:
            message = self.client.messages.create(**kwargs)
        except anthropic.AnthropicError as exc:
            error = self._translate(exc)
            self.accounting.record(
                context,
                model=kwargs["model"],
                usage=None,
                latency_ms=int((time.monotonic() - started) * 1000),
                error=str(error),
                release=estimate,
            )
            raise error from exc
        except BaseException:
            self.budget.release(context, estimate=estimate)
            raise
        problem = check(message) if check else ""
        self.accounting.record(
            context,
            model=message.model or kwargs["model"],
            usage=usage_dict(message),
            latency_ms=int((time.monotonic() - started) * 1000),
            error=problem,
            release=estimate,
        )
        if problem:
            raise UnusableAnswer(problem)
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
        check: Callable[[Message], str] | None = None,
        **kwargs: Any,
    ) -> Message:
        """Async twin of `create_message`; database work runs through sync_to_async."""
        context = CallContext(agent, purpose, cycle, experiment, replay)
        kwargs = self._prepare(purpose, kwargs, cache_prefix)
        if self.in_process:
            from dreams.simulated.recorded import in_process_message

            return self._checked(in_process_message(self.recordings, kwargs), check)
        if not self.accounted:
            try:
                message = await self.async_client().messages.create(**kwargs)
            except anthropic.AnthropicError as exc:
                raise self._translate(exc) from exc
            return self._checked(message, check)
        estimate = estimate_call_tokens(kwargs)
        try:
            self.budget.reserve(context, estimate=estimate, cached_only=True)
        except NeedsDatabase:
            await sync_to_async(self.budget.reserve)(context, estimate=estimate)
        started = time.monotonic()
        try:
            message = await self.async_client().messages.create(**kwargs)
        except anthropic.AnthropicError as exc:
            error = self._translate(exc)
            await sync_to_async(self.accounting.record)(
                context,
                model=kwargs["model"],
                usage=None,
                latency_ms=int((time.monotonic() - started) * 1000),
                error=str(error),
                release=estimate,
            )
            raise error from exc
        except BaseException:
            # On the event loop: the hold ends here, its chunk goes back with the next flush.
            self.budget.release(context, estimate=estimate, give_back=False)
            raise
        # Written in batches in the background; `aclose()` writes what is left and waits.
        problem = check(message) if check else ""
        call = self.accounting.build(
            context,
            model=message.model or kwargs["model"],
            usage=usage_dict(message),
            latency_ms=int((time.monotonic() - started) * 1000),
            error=problem,
        )
        self.accounting.queue(context, call, estimate=estimate)
        if problem:
            raise UnusableAnswer(problem)
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
    def _checked(message: Message, check: Callable[[Message], str] | None) -> Message:
        problem = check(message) if check else ""
        if problem:
            raise UnusableAnswer(problem)
        return message

    @staticmethod
    def tool_problem(message: Message, tool_name: str) -> str:
        """Why `message` is no usable call of the forced tool `tool_name` ("" when it is one)."""
        for block in message.content:
            if block.type == "tool_use" and block.name == tool_name:
                if not isinstance(block.input, dict):
                    return f"{tool_name}: the model's input is not an object"
                return ""
        if message.stop_reason == "max_tokens":
            return (
                f"the answer was cut off at max_tokens ({message.usage.output_tokens} output "
                f"tokens) before a complete {tool_name} call"
            )
        if message.stop_reason == "refusal":
            return f"the model refused to call {tool_name}"
        text = " ".join(
            block.text for block in message.content if block.type == "text" and block.text.strip()
        )
        snippet = " ".join(text.split())[:120]
        return f"the model did not call {tool_name}" + (
            f" (it answered in text: {snippet!r})" if snippet else ""
        )

    @staticmethod
    def _tool_input(message: Message, tool_name: str) -> dict[str, Any]:
        return next(
            dict(block.input)
            for block in message.content
            if block.type == "tool_use" and block.name == tool_name
        )

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
            check=lambda m: self.tool_problem(m, tool_name),
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
            check=lambda m: self.tool_problem(m, tool_name),
            **self._structured_kwargs(tool_name, input_schema, description),
            **kwargs,
        )
        return self._tool_input(message, tool_name)

    # -- batches -------------------------------------------------------------------------------

    def submit_batch(
        self,
        *,
        agent: Agent,
        purpose: str,
        requests: dict[str, dict[str, Any]],
        contexts: dict[str, CallContext] | None = None,
        cache_prefix: bool = False,
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        """Check the budget and create one Message Batch (custom_id → messages.create kwargs);
        returns its id and the prepared params (their models are needed to account results)."""
        contexts = contexts or {}
        params = {cid: self._prepare(purpose, kw, cache_prefix) for cid, kw in requests.items()}
        self.budget.check(
            next(iter(contexts.values()), CallContext(agent, purpose)),
            estimate=sum(estimate_call_tokens(p) for p in params.values()),
        )
        try:
            batch = self.client.messages.batches.create(
                requests=[
                    {"custom_id": cid, "params": cast("MessageCreateParamsNonStreaming", p)}
                    for cid, p in params.items()
                ]
            )
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc
        return batch.id, params

    def batch_ended(self, batch_id: str) -> bool:
        """Whether the batch has ended (its results can be read)."""
        try:
            return self.client.messages.batches.retrieve(batch_id).processing_status == "ended"
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc

    def cancel_batch(self, batch_id: str) -> None:
        try:
            self.client.messages.batches.cancel(batch_id)
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc

    def collect_batch(
        self,
        batch_id: str,
        *,
        agent: Agent,
        purpose: str,
        models: dict[str, str],
        contexts: dict[str, CallContext] | None = None,
        latency_ms: int = 0,
    ) -> dict[str, Message | ModelError]:
        """An ended batch's results (custom_id → Message or ModelError), each succeeded request
        recorded as a ModelCall at the batch price (half the list price)."""
        contexts = contexts or {}
        base = CallContext(agent, purpose)
        try:
            results = list(self.client.messages.batches.results(batch_id))
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc
        out: dict[str, Message | ModelError] = {}
        for item in results:
            context = contexts.get(item.custom_id, base)
            model = models.get(item.custom_id, "")
            if item.result.type == "succeeded":
                message = item.result.message
                out[item.custom_id] = message
                self.accounting.record(
                    context,
                    model=message.model or model,
                    usage=usage_dict(message),
                    latency_ms=latency_ms,
                    discount=BATCH_DISCOUNT,
                )
            else:
                detail: str = item.result.type
                if item.result.type == "errored":
                    detail = f"errored: {item.result.error.error.type}: {item.result.error.error.message}"
                error = ModelUnavailable(f"batch request {detail}")
                out[item.custom_id] = error
                self.accounting.record(
                    context, model=model, usage=None, latency_ms=latency_ms, error=str(error)
                )
        for cid in models:
            out.setdefault(cid, ModelUnavailable("batch returned no result for this request"))
        return out

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
        """Send one Message Batch and wait for it in this process (short batches; replays
        submit and let beat poll, see dreams/experiments/batches.py)."""
        poll = settings.REVERIE_BATCH_POLL_SECONDS if poll_seconds is None else poll_seconds
        max_wait = (
            settings.REVERIE_BATCH_MAX_WAIT_SECONDS
            if max_wait_seconds is None
            else max_wait_seconds
        )
        started = time.monotonic()
        batch_id, params = self.submit_batch(
            agent=agent,
            purpose=purpose,
            requests=requests,
            contexts=contexts,
            cache_prefix=cache_prefix,
        )
        while not self.batch_ended(batch_id):
            if time.monotonic() - started > max_wait:
                self.cancel_batch(batch_id)
                raise ModelUnavailable(f"batch {batch_id} did not end within {max_wait:.0f}s")
            time.sleep(poll)
        return self.collect_batch(
            batch_id,
            agent=agent,
            purpose=purpose,
            models={cid: p.get("model", "") for cid, p in params.items()},
            contexts=contexts,
            latency_ms=int((time.monotonic() - started) * 1000),
        )


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
