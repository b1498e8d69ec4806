"""`wrap_anthropic`: capture every `messages.create` / `messages.stream` call of a client.

The client is patched in place (the same object comes back, so type checks and `with_options`
callers are unaffected) and each call returns exactly what the SDK returns. Streams are observed
as the application reads them: a `Stream` keeps its type (its event iterator is teed), a
`messages.stream()` manager yields the SDK's own `MessageStream`. Capture errors are logged,
never raised.
"""

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from anthropic import AsyncStream, Stream
from anthropic.lib.streaming._messages import accumulate_event

from reverie_client._client import Reverie, default_reverie

logger = logging.getLogger("reverie_client")
_WRAPPED = "_reverie_wrapped"


def wrap_anthropic(client: Any, *, agent: str, reverie: Reverie | None = None) -> Any:
    """Capture the Messages API calls of an `Anthropic` or `AsyncAnthropic` client as runs."""
    reverie = reverie or default_reverie()
    messages = client.messages
    if getattr(messages, _WRAPPED, False):
        return client
    record = functools.partial(reverie.record_call, agent=agent)
    is_async = type(client).__name__.startswith("Async")
    messages.create = (_async_create if is_async else _create)(messages.create, record)
    messages.stream = (_async_stream if is_async else _stream)(messages.stream, record)
    setattr(messages, _WRAPPED, True)
    return client


def _snapshot(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request as sent; the history list is copied because agents append to it."""
    request = {k: v for k, v in kwargs.items() if not k.startswith("extra_") and k != "timeout"}
    if isinstance(request.get("messages"), list):
        request["messages"] = list(request["messages"])
    request.pop("stream", None)
    return request


class _Accumulator:
    """Builds the final Message from stream events, and records it once the stream ends."""

    def __init__(
        self, request: dict[str, Any], record: Callable[..., None], started: float
    ) -> None:
        self.request, self.record, self.started = request, record, started
        self.snapshot: Any = None
        self.buffers: dict[int, bytes] = {}
        self.done = False

    def event(self, event: Any) -> None:
        try:
            self.snapshot = accumulate_event(
                event=event, current_snapshot=self.snapshot, json_bufs=self.buffers
            )
        except Exception:
            logger.debug("reverie-client: could not accumulate a stream event", exc_info=True)

    def finish(self) -> None:
        if self.done or self.snapshot is None:
            return
        self.done = True
        self.record(
            request=self.request,
            response=self.snapshot,
            latency_ms=(time.perf_counter() - self.started) * 1000,
        )


def _capture(
    result: Any, kwargs: dict[str, Any], started: float, record: Callable[..., None]
) -> None:
    """Record one call (a stream is recorded as the app reads it); never raises."""
    try:
        request = _snapshot(kwargs)
        if isinstance(result, Stream):
            _tee(result, _Accumulator(request, record, started))
        elif isinstance(result, AsyncStream):
            _atee(result, _Accumulator(request, record, started))
        else:
            record(
                request=request,
                response=result,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
    except Exception:
        logger.exception("reverie-client: could not capture a call")


def _create(original: Callable[..., Any], record: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = original(*args, **kwargs)
        _capture(result, kwargs, started, record)
        return result

    return create


def _async_create(original: Callable[..., Any], record: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = await original(*args, **kwargs)
        _capture(result, kwargs, started, record)
        return result

    return create


def _tee(stream: Stream[Any], accumulator: _Accumulator) -> None:
    inner: Iterator[Any] = stream._iterator

    def observed() -> Iterator[Any]:
        try:
            for event in inner:
                accumulator.event(event)
                yield event
        finally:
            accumulator.finish()

    stream.__dict__["_iterator"] = observed()  # `_iterator` is a cached_property


def _atee(stream: AsyncStream[Any], accumulator: _Accumulator) -> None:
    inner: AsyncIterator[Any] = stream._iterator

    async def observed() -> AsyncIterator[Any]:
        try:
            async for event in inner:
                accumulator.event(event)
                yield event
        finally:
            accumulator.finish()

    stream.__dict__["_iterator"] = observed()


class _StreamManager:
    """Stands in for `MessageStreamManager`: enters the SDK's own stream, records it on exit."""

    def __init__(self, manager: Any, request: dict[str, Any], record: Callable[..., None]) -> None:
        self._manager, self._request, self._record = manager, request, record
        self._stream: Any = None
        self._started = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def __enter__(self) -> Any:
        self._started = time.perf_counter()
        self._stream = self._manager.__enter__()
        return self._stream

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._manager.__exit__(*exc)
        finally:
            self._capture()

    async def __aenter__(self) -> Any:
        self._started = time.perf_counter()
        self._stream = await self._manager.__aenter__()
        return self._stream

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc)
        finally:
            self._capture()

    def _capture(self) -> None:
        try:
            snapshot = getattr(self._stream, "current_message_snapshot", None)
            if snapshot is not None:
                self._record(
                    request=self._request,
                    response=snapshot,
                    latency_ms=(time.perf_counter() - self._started) * 1000,
                )
        except Exception:
            logger.exception("reverie-client: could not capture a stream")


def _stream(original: Callable[..., Any], record: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(original)
    def stream(*args: Any, **kwargs: Any) -> Any:
        manager = original(*args, **kwargs)
        try:
            return _StreamManager(manager, _snapshot(kwargs), record)
        except Exception:
            return manager

    return stream


_async_stream = _stream  # AsyncMessages.stream is synchronous too; it returns an async manager
