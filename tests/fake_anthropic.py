"""A loopback fake of the Messages API for tests and benchmarks (threaded http.server on 127.0.0.1:0).

    with FakeAnthropic() as fake:                       # answers like the simulated model
        fake.fail(2, status=529)                         # next two /v1/messages calls → 529
        fake.queue(FakeAnthropic.message([text("hi")]))  # then this scripted reply
        settings.ANTHROPIC_BASE_URL = fake.url
        ...
        fake.requests[-1].body                           # what the SDK sent

Options: `responder(body) -> message dict` (default: the simulated model), a fixed `delay` in
seconds for every /v1/messages answer, scripted replies/failures (consumed in order), and the
batches endpoints (create, retrieve — `in_progress` for `batch_polls` reads —, results as
JSONL at an absolute URL pointing back here, cancel). Errors carry `retry-after-ms: 1` so SDK
retries are instant. Use the `fake_anthropic` fixture, or `fake_gateway_settings` to point
the gateway at it.
"""

import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Responder = Callable[[dict[str, Any]], dict[str, Any]]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Scripted:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # listen() backlog: many concurrent clients connect at once


def _default_responder(body: dict[str, Any]) -> dict[str, Any]:
    from dreams.simulated.transport import answer

    return answer(body)


class FakeAnthropic:
    def __init__(
        self,
        *,
        responder: Responder | None = None,
        delay: float = 0.0,
        batch_polls: int = 1,
    ) -> None:
        self.responder = responder or _default_responder
        self.delay = delay
        self.batch_polls = batch_polls
        self.requests: list[RecordedRequest] = []
        self.script: deque[Scripted] = deque()
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ---------------------------------------------------------------------------

    def queue(self, *replies: dict[str, Any] | Scripted) -> None:
        """Scripted /v1/messages answers, used before the responder (in order)."""
        with self._lock:
            for reply in replies:
                self.script.append(reply if isinstance(reply, Scripted) else Scripted(body=reply))

    def fail(self, times: int, *, status: int = 529, message: str = "Overloaded") -> None:
        error = {
            "type": "error",
            "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        }
        self.queue(*[Scripted(status=status, body=error) for _ in range(times)])

    @staticmethod
    def message(
        content: list[dict[str, Any]],
        *,
        stop_reason: str | None = None,
        model: str = "claude-sonnet-5-5",
        usage: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        if stop_reason is None:
            stop_reason = (
                "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
            )
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 10, "output_tokens": 5},
        }

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/messages"]

    # -- server --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeAnthropic":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return raw.decode(errors="replace")

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_fake_{next(fake._ids)}")
                if status >= 400:
                    self.send_header("retry-after-ms", "1")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                # The client may have given up (a timeout under test).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                body = self._body() if method == "POST" else None
                path = self.path.split("?")[0]
                with fake._lock:
                    fake.requests.append(
                        RecordedRequest(
                            method, path, {k.lower(): v for k, v in self.headers.items()}, body
                        )
                    )
                status, payload, headers = fake._route(method, path, body)
                if status == 200 and isinstance(body, dict) and body.get("stream") is True:
                    self._send_stream(payload)
                else:
                    self._send(status, payload, headers)

            def _send_stream(self, message: dict[str, Any]) -> None:
                """The reply as Messages API server-sent events (for `stream=True` requests)."""
                data = b"".join(
                    f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
                    for event in stream_events(message)
                )
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_fake_{next(fake._ids)}")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- routes --------------------------------------------------------------------------------

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if method == "POST" and path == "/v1/messages":
            with self._lock:
                scripted = self.script.popleft() if self.script else None
            delay = scripted.delay if scripted and scripted.delay else self.delay
            if delay:
                time.sleep(delay)
            if scripted is not None:
                return scripted.status, scripted.body, scripted.headers
            return 200, self.responder(body), {}
        if method == "POST" and path == "/v1/messages/batches":
            return 200, self._create_batch(body.get("requests") or []), {}
        if path.startswith("/v1/messages/batches/"):
            parts = path.split("/")
            batch = self.batches.get(parts[4])
            if batch is None:
                return (
                    404,
                    {"type": "error", "error": {"type": "not_found_error", "message": path}},
                    {},
                )
            if method == "GET" and len(parts) == 5:
                return 200, self._poll(batch), {}
            if method == "GET" and parts[-1] == "results":
                lines = "".join(json.dumps(r) + "\n" for r in batch["results"])
                return 200, lines.encode(), {"content-type": "application/x-jsonl"}
            if method == "POST" and parts[-1] == "cancel":
                batch["object"]["processing_status"] = "canceling"
                return 200, batch["object"], {}
        return 404, {"type": "error", "error": {"type": "not_found_error", "message": path}}, {}

    def _create_batch(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        batch_id = f"msgbatch_fake_{next(self._ids)}"
        now = "2026-05-01T12:00:00Z"
        obj = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(requests),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": now,
            "expires_at": "2026-05-02T12:00:00Z",
            "ended_at": None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        self.batches[batch_id] = {"object": obj, "requests": requests, "polls": 0, "results": []}
        return obj

    def _poll(self, batch: dict[str, Any]) -> dict[str, Any]:
        obj = batch["object"]
        batch["polls"] += 1
        if obj["processing_status"] == "in_progress" and batch["polls"] >= self.batch_polls:
            results = []
            for item in batch["requests"]:
                try:
                    message = self.responder(item["params"])
                    results.append(
                        {
                            "custom_id": item["custom_id"],
                            "result": {"type": "succeeded", "message": message},
                        }
                    )
                except Exception as exc:  # noqa: BLE001 - reported as an errored result
                    results.append(
                        {
                            "custom_id": item["custom_id"],
                            "result": {
                                "type": "errored",
                                "error": {
                                    "type": "error",
                                    "error": {"type": "invalid_request_error", "message": str(exc)},
                                },
                            },
                        }
                    )
            batch["results"] = results
            succeeded = sum(1 for r in results if r["result"]["type"] == "succeeded")
            obj.update(
                processing_status="ended",
                ended_at=obj["created_at"],
                results_url=f"{self.url}/v1/messages/batches/{obj['id']}/results",
                request_counts={
                    "processing": 0,
                    "succeeded": succeeded,
                    "errored": len(results) - succeeded,
                    "canceled": 0,
                    "expired": 0,
                },
            )
        return obj


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake_gateway_settings(fake_anthropic: FakeAnthropic, settings: Any) -> FakeAnthropic:
    """Point the model gateway at the fake (real-API backend, fast retries, quick batch polls)."""
    settings.REVERIE_MODEL_BACKEND = "anthropic"
    settings.ANTHROPIC_API_KEY = "sk-test-fake"
    settings.ANTHROPIC_BASE_URL = fake_anthropic.url
    settings.REVERIE_MODEL_MAX_RETRIES = 2
    settings.REVERIE_MODEL_TIMEOUT = 10.0
    settings.REVERIE_BATCH_POLL_SECONDS = 0.01
    return fake_anthropic


def stream_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A Message as the event sequence the streaming Messages API sends."""
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message.get("content") or []):
        if block["type"] == "tool_use":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "text": ""},
                }
            )
            delta = {"type": "text_delta", "text": block.get("text", "")}
        events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message.get("stop_reason"), "stop_sequence": None},
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        }
    )
    events.append({"type": "message_stop"})
    return events


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict[str, Any], *, id: str = "toolu_fake_1") -> dict[str, Any]:  # noqa: A002
    return {"type": "tool_use", "id": id, "name": name, "input": tool_input}
