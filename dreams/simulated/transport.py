"""httpx2 transports that serve the Messages API from the simulated model, in process.

The real SDK builds the request and parses the response; only the network is replaced.
Usage is estimated at four characters a token. A prefix (tools + system) that carries
`cache_control` is written to a process-wide cache on first sight (5 minutes) and read
from it afterwards, so cache accounting behaves like the real API's (without its minimum
prefix length). Batches finish at once: created `in_progress`, `ended` on the next read.
"""

import hashlib
import itertools
import json
import threading
import time
from typing import Any

import httpx2

from dreams.simulated import agent as simulated_agent
from dreams.simulated.registry import get_handler

CACHE_TTL_SECONDS = 300
_ids = itertools.count(1)


def estimate_tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return max(1, len(text) // 4)


def _has_cache_control(body: dict[str, Any]) -> bool:
    system = body.get("system")
    blocks = system if isinstance(system, list) else []
    return any("cache_control" in b for b in blocks) or any(
        "cache_control" in t for t in body.get("tools") or []
    )


class PrefixCache:
    """Which cacheable prefixes were written recently (thread-safe)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            self._seen[key] = now
            return seen is not None and now - seen < CACHE_TTL_SECONDS

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


PREFIX_CACHE = PrefixCache()


def compute_usage(
    body: dict[str, Any], content: list[dict[str, Any]], cache: PrefixCache = PREFIX_CACHE
) -> dict[str, int]:
    tools = [{k: v for k, v in t.items() if k != "cache_control"} for t in body.get("tools") or []]
    system = simulated_agent.system_text(body.get("system"))
    prefix_tokens = estimate_tokens(tools) + estimate_tokens(system) if (tools or system) else 0
    rest = estimate_tokens(body.get("messages") or [])
    usage = {
        "input_tokens": rest,
        "output_tokens": estimate_tokens(content),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if prefix_tokens and _has_cache_control(body):
        key = hashlib.sha256(
            json.dumps([body.get("model"), tools, system], sort_keys=True).encode()
        ).hexdigest()
        usage["cache_read_input_tokens" if cache.hit(key) else "cache_creation_input_tokens"] = (
            prefix_tokens
        )
    else:
        usage["input_tokens"] += prefix_tokens
    return usage


class SimulatedModelError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def answer(body: dict[str, Any], *, cache: PrefixCache = PREFIX_CACHE) -> dict[str, Any]:
    """A full Messages API response object for a request body."""
    if not isinstance(body.get("messages"), list) or not body.get("model"):
        raise SimulatedModelError(400, "invalid_request_error", "model and messages are required")
    if body.get("stream"):
        raise SimulatedModelError(
            400, "invalid_request_error", "the simulated model does not stream"
        )
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        handler = get_handler(choice.get("name", ""))
        if handler is None:
            raise SimulatedModelError(
                400,
                "invalid_request_error",
                f"the simulated model has no handler for tool {choice.get('name')!r}",
            )
        content = [
            {
                "type": "tool_use",
                "id": f"toolu_sim_{next(_ids):06d}",
                "name": choice["name"],
                "input": handler(body),
            }
        ]
        stop_reason = "tool_use"
    else:
        content, stop_reason = simulated_agent.respond(body)
    return {
        "id": f"msg_sim_{next(_ids):08d}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": compute_usage(body, content, cache),
    }


def _error(status: int, error_type: str, message: str) -> httpx2.Response:
    return httpx2.Response(
        status, json={"type": "error", "error": {"type": error_type, "message": message}}
    )


class _BatchStore:
    def __init__(self) -> None:
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def create(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        results = []
        for item in requests:
            try:
                message = answer(item["params"])
                results.append(
                    {
                        "custom_id": item["custom_id"],
                        "result": {"type": "succeeded", "message": message},
                    }
                )
            except SimulatedModelError as exc:
                results.append(
                    {
                        "custom_id": item["custom_id"],
                        "result": {
                            "type": "errored",
                            "error": {
                                "type": "error",
                                "error": {"type": exc.error_type, "message": str(exc)},
                            },
                        },
                    }
                )
        batch_id = f"msgbatch_sim_{next(_ids):08d}"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        batch = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(results),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": now,
            "expires_at": now,
            "ended_at": None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        with self.lock:
            self.batches[batch_id] = {"batch": batch, "results": results}
        return dict(batch)

    def retrieve(self, batch_id: str) -> dict[str, Any] | None:
        with self.lock:
            entry = self.batches.get(batch_id)
            if entry is None:
                return None
            batch = entry["batch"]
            if batch["processing_status"] == "in_progress":
                succeeded = sum(1 for r in entry["results"] if r["result"]["type"] == "succeeded")
                batch.update(
                    processing_status="ended",
                    ended_at=batch["created_at"],
                    results_url=f"/v1/messages/batches/{batch_id}/results",
                    request_counts={
                        "processing": 0,
                        "succeeded": succeeded,
                        "errored": len(entry["results"]) - succeeded,
                        "canceled": 0,
                        "expired": 0,
                    },
                )
            return dict(batch)

    def results(self, batch_id: str) -> list[dict[str, Any]] | None:
        with self.lock:
            entry = self.batches.pop(batch_id, None)
        return entry["results"] if entry else None


BATCHES = _BatchStore()


def handle(request: httpx2.Request) -> httpx2.Response:
    path = request.url.path
    try:
        body = json.loads(request.content) if request.content else {}
    except ValueError:
        return _error(400, "invalid_request_error", "body is not JSON")
    try:
        if request.method == "POST" and path == "/v1/messages":
            return httpx2.Response(200, json=answer(body), headers={"request-id": "req_sim"})
        if request.method == "POST" and path == "/v1/messages/batches":
            return httpx2.Response(200, json=BATCHES.create(body.get("requests") or []))
        if path.startswith("/v1/messages/batches/"):
            parts = path.split("/")
            batch_id = parts[4]
            if request.method == "GET" and len(parts) == 5:
                batch = BATCHES.retrieve(batch_id)
                return (
                    httpx2.Response(200, json=batch)
                    if batch
                    else _error(404, "not_found_error", path)
                )
            if request.method == "GET" and parts[-1] == "results":
                results = BATCHES.results(batch_id)
                if results is None:
                    return _error(404, "not_found_error", path)
                text = "".join(json.dumps(r) + "\n" for r in results)
                return httpx2.Response(200, content=text.encode())
    except SimulatedModelError as exc:
        return _error(exc.status, exc.error_type, str(exc))
    return _error(404, "not_found_error", f"{request.method} {path}")


class SimulatedTransport(httpx2.BaseTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        return handle(request)


class AsyncSimulatedTransport(httpx2.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return handle(request)
