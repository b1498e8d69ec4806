"""The recorded model: replays each run's own assistant turns behind the real SDK's transport.

The harness check uses it to replay a run with no tokens spent: for a request it answers with
the recording's next assistant turn for the conversation so far (the number of assistant turns
already in the request picks it). The run is named by the `Reverie-Recorded-Run` header, which
only the recorded backend's requests carry; its recording must be in the gateway's library.
Past the recording's last turn it answers an empty end_turn (the recording stops there too).
"""

import itertools
import json
import threading
from typing import Any

import httpx2
from anthropic.types import Message

from agents.models import Run
from agents.transcripts import step_message_indices
from dreams.llm.base import ModelRequestError

RUN_HEADER = "Reverie-Recorded-Run"
_ids = itertools.count(1)


class RecordingLibrary:
    """Assistant turns of the runs a recorded gateway may replay, by run id (thread-safe)."""

    def __init__(self) -> None:
        self._turns: dict[str, list[list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def add(self, run: Run) -> None:
        messages = run.messages or []
        turns = [messages[i].get("content") or [] for i in step_message_indices(messages)]
        with self._lock:
            self._turns[str(run.pk)] = turns

    def turn(self, run_id: str, step: int) -> list[dict[str, Any]] | None:
        """Content of the recorded step `step`, [] past the end, None for an unknown run."""
        with self._lock:
            turns = self._turns.get(run_id)
        if turns is None:
            return None
        return turns[step] if step < len(turns) else []


def _error(status: int, message: str) -> httpx2.Response:
    return httpx2.Response(
        status,
        json={"type": "error", "error": {"type": "invalid_request_error", "message": message}},
    )


class RecordedModelError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def message_body(library: RecordingLibrary, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The Messages API response body for a request: the run's next recorded assistant turn."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not body.get("model"):
        raise RecordedModelError(400, "model and messages are required")
    step = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    content = library.turn(run_id, step)
    if content is None:
        raise RecordedModelError(400, f"the recorded model has no recording of run {run_id!r}")
    uses_tools = any(b.get("type") == "tool_use" for b in content if isinstance(b, dict))
    return {
        "id": f"msg_rec_{next(_ids):08d}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": "tool_use" if uses_tools else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }


def answer(library: RecordingLibrary, run_id: str, body: dict[str, Any]) -> httpx2.Response:
    try:
        data = message_body(library, run_id, body)
    except RecordedModelError as exc:
        return _error(exc.status, str(exc))
    return httpx2.Response(200, json=data, headers={"request-id": "req_recorded"})


def in_process_message(library: RecordingLibrary, kwargs: dict[str, Any]) -> Message:
    """The same answer as the SDK path, validated into the SDK's `Message` type in process.

    The harness check uses it: the recorded model's answer is the recording's own turn, so
    the HTTP round trip through the SDK (request building, transport, parsing: ~1.5 ms a step)
    adds nothing but time; tests check that both paths replay a run identically."""
    run_id = (kwargs.get("extra_headers") or {}).get(RUN_HEADER, "")
    try:
        return Message.model_validate(message_body(library, run_id, kwargs))
    except RecordedModelError as exc:
        raise ModelRequestError(f"recorded model {exc.status}: {exc}") from exc


def handle(library: RecordingLibrary, request: httpx2.Request) -> httpx2.Response:
    if request.method != "POST" or request.url.path != "/v1/messages":
        return _error(404, f"the recorded model serves POST /v1/messages only, not {request.url}")
    try:
        body = json.loads(request.content) if request.content else {}
    except ValueError:
        return _error(400, "body is not JSON")
    return answer(library, request.headers.get(RUN_HEADER, ""), body)


class RecordedTransport(httpx2.BaseTransport):
    def __init__(self, library: RecordingLibrary) -> None:
        self.library = library

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        return handle(self.library, request)


class AsyncRecordedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, library: RecordingLibrary) -> None:
        self.library = library

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return handle(self.library, request)
