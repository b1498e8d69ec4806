"""A stateful loopback fake of Anthropic's Managed Agents, Memory stores and Dreams beta endpoints.

Tests start it on 127.0.0.1:0 and point the real `anthropic` SDK at it with base_url. Payload
shapes follow /work/research/SDK_NOTES.md sections e and f (they pass the SDK's strict response
validation). The test drives time: dreams change status only when the test says so.
"""

import hashlib
import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODEL = {"id": "claude-sonnet-5-5", "speed": "standard"}
TERMINAL_DREAM = ("completed", "failed", "canceled")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


class FakeManagedError(Exception):
    def __init__(self, status: int, kind: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


class FakeManaged:
    """State plus an HTTP server; every public method is thread-safe."""

    def __init__(self, *, api_key: str = "sk-ant-test-managed") -> None:
        self.api_key = api_key
        self.lock = threading.RLock()
        self.clock = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        self._seq = itertools.count(1)
        self.agents: dict[str, list[dict[str, Any]]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.stores: dict[str, dict[str, Any]] = {}
        self.memories: dict[str, dict[str, dict[str, Any]]] = {}
        self.memory_versions: list[dict[str, Any]] = []
        self.dreams: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.faults: list[tuple[str, str, int]] = []
        self.server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "FakeManaged":
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._seq):04d}"

    def _now(self) -> str:
        self.clock += timedelta(seconds=1)
        return _iso(self.clock)

    def fail_next(self, method: str, path: str, *, status: int = 500) -> None:
        """The next `method` request to exactly `path` fails with `status` (an outage)."""
        with self.lock:
            self.faults.append((method, path, status))

    def writes(self, prefix: str = "/v1/memory_stores") -> list[tuple[str, str]]:
        """(method, path) of every non-GET request under `prefix`, in order."""
        return [
            (r["method"], r["path"])
            for r in self.requests
            if r["method"] != "GET" and r["path"].startswith(prefix)
        ]

    # -- agents ---------------------------------------------------------------------------

    def add_agent(self, *, name: str = "Support", system: str = "You help customers.") -> str:
        with self.lock:
            agent_id = self._id("agent")
            now = self._now()
            self.agents[agent_id] = [
                {
                    "type": "agent",
                    "id": agent_id,
                    "version": 1,
                    "name": name,
                    "description": None,
                    "system": system,
                    "model": MODEL,
                    "tools": [
                        {
                            "type": "custom",
                            "name": "lookup_order",
                            "description": "Find an order",
                            "input_schema": {"type": "object", "properties": {}},
                        }
                    ],
                    "skills": [],
                    "mcp_servers": [],
                    "metadata": {},
                    "execution_identity": {"type": "service_account"},
                    "multiagent": None,
                    "created_at": now,
                    "updated_at": now,
                    "archived_at": None,
                }
            ]
            return agent_id

    def agent(self, agent_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.agents[agent_id][-1])

    def _update_agent(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        versions = self.agents.get(agent_id)
        if versions is None:
            raise FakeManagedError(404, "not_found_error", f"agent {agent_id}")
        current = versions[-1]
        if body.get("version") != current["version"]:
            raise FakeManagedError(
                409, "conflict_error", "agent version mismatch", **{"x-should-retry": "false"}
            )
        updated = {
            **current,
            **{k: v for k, v in body.items() if k in ("system", "name", "description")},
        }
        updated["version"] = current["version"] + 1
        updated["updated_at"] = self._now()
        versions.append(updated)
        return updated

    # -- sessions -------------------------------------------------------------------------

    def add_session(
        self,
        *,
        agent_id: str,
        turns: list[dict[str, Any]],
        outcome: dict[str, Any] | None = None,
        status: str = "idle",
        usage: dict[str, Any] | None = None,
        memory_store: str | None = None,
    ) -> str:
        """Add a finished session (with `memory_store` mounted as its resource when given). `turns` are event dicts without ids/timestamps; `outcome` is
        {description, rubric, result, explanation} (result pending → evaluation still running)."""
        with self.lock:
            session_id = self._id("sesn")
            created = self._now()
            agent = self.agents[agent_id][-1]
            events: list[dict[str, Any]] = []
            evaluations = []
            if outcome is not None:
                outcome_id = self._id("outc")
                events.append(
                    {
                        "type": "user.define_outcome",
                        "id": self._id("sevt"),
                        "description": outcome["description"],
                        "outcome_id": outcome_id,
                        "max_iterations": 3,
                        "rubric": {"type": "text", "content": outcome["rubric"]},
                        "processed_at": self._now(),
                    }
                )
            for turn in turns:
                events.append(
                    {**turn, "id": turn.get("id") or self._id("sevt"), "processed_at": self._now()}
                )
            if outcome is not None:
                result = outcome["result"]
                done = result not in ("pending", "running", "evaluating")
                if done:
                    events.append(
                        {
                            "type": "span.outcome_evaluation_end",
                            "id": self._id("sevt"),
                            "outcome_id": outcome_id,
                            "outcome_evaluation_start_id": self._id("sevt"),
                            "iteration": 0,
                            "result": result,
                            "explanation": outcome.get("explanation") or "",
                            "processed_at": self._now(),
                            "usage": {
                                "input_tokens": 10,
                                "output_tokens": 5,
                                "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0,
                            },
                        }
                    )
                evaluations.append(
                    {
                        "type": "outcome_evaluation",
                        "outcome_id": outcome_id,
                        "description": outcome["description"],
                        "result": result,
                        "iteration": 0,
                        "explanation": outcome.get("explanation") if done else None,
                        "completed_at": self._now() if done else None,
                    }
                )
            if status == "idle":
                events.append(
                    {
                        "type": "session.status_idle",
                        "id": self._id("sevt"),
                        "processed_at": self._now(),
                        "stop_reason": {"type": "end_turn"},
                    }
                )
            self.events[session_id] = events
            self.sessions[session_id] = {
                "type": "session",
                "id": session_id,
                "status": status,
                "title": None,
                "environment_id": "env_0001",
                "agent": {
                    k: v
                    for k, v in agent.items()
                    if k not in ("metadata", "created_at", "updated_at", "archived_at")
                },
                "created_at": created,
                "updated_at": self._now(),
                "archived_at": None,
                "metadata": {},
                "resources": [self._mount(memory_store)] if memory_store else [],
                "outcome_evaluations": evaluations,
                "stats": {"active_seconds": 3.0, "duration_seconds": 4.5},
                "usage": usage
                or {"input_tokens": 1200, "output_tokens": 300, "cache_read_input_tokens": 100},
                "vault_ids": [],
            }
            return session_id

    def _mount(self, store_id: str) -> dict[str, Any]:
        store = self.stores[store_id]
        return {
            "type": "memory_store",
            "memory_store_id": store_id,
            "name": store["name"],
            "description": store["description"],
            "access": "read_write",
            "instructions": None,
            "mount_path": f"/mnt/memory/{store['name']}",
        }

    def continue_session(
        self, session_id: str, *, turns: list[dict[str, Any]], end: bool = False
    ) -> None:
        """The user sends another message to an idle session; it runs and goes idle again (or,
        with `end`, terminates)."""
        with self.lock:
            events = self.events[session_id]
            events.append(
                {
                    "type": "session.status_running",
                    "id": self._id("sevt"),
                    "processed_at": self._now(),
                }
            )
            for turn in turns:
                events.append(
                    {**turn, "id": turn.get("id") or self._id("sevt"), "processed_at": self._now()}
                )
            if end:
                events.append(
                    {
                        "type": "session.status_terminated",
                        "id": self._id("sevt"),
                        "processed_at": self._now(),
                    }
                )
            else:
                events.append(
                    {
                        "type": "session.status_idle",
                        "id": self._id("sevt"),
                        "processed_at": self._now(),
                        "stop_reason": {"type": "end_turn"},
                    }
                )
            session = self.sessions[session_id]
            session["status"] = "terminated" if end else "idle"
            session["updated_at"] = self._now()
            usage = session["usage"]
            usage["input_tokens"] = usage.get("input_tokens", 0) + 800
            usage["output_tokens"] = usage.get("output_tokens", 0) + 200

    def run_session(self, session_id: str) -> None:
        """A new turn is being worked on: the session is running, its events still growing."""
        with self.lock:
            self.sessions[session_id]["status"] = "running"
            self.sessions[session_id]["updated_at"] = self._now()

    def terminate(self, session_id: str) -> None:
        with self.lock:
            self.events[session_id].append(
                {
                    "type": "session.status_terminated",
                    "id": self._id("sevt"),
                    "processed_at": self._now(),
                }
            )
            self.sessions[session_id]["status"] = "terminated"
            self.sessions[session_id]["updated_at"] = self._now()

    def grade_later(self, session_id: str, *, outcome: dict[str, Any]) -> None:
        """The user defines an outcome on an already idle session and the grader finishes it."""
        with self.lock:
            outcome_id = self._id("outc")
            self.events[session_id].append(
                {
                    "type": "user.define_outcome",
                    "id": self._id("sevt"),
                    "description": outcome["description"],
                    "outcome_id": outcome_id,
                    "max_iterations": 3,
                    "rubric": {"type": "text", "content": outcome["rubric"]},
                    "processed_at": self._now(),
                }
            )
            self.events[session_id].append(
                {
                    "type": "agent.message",
                    "id": self._id("sevt"),
                    "content": [{"type": "text", "text": "Revised answer."}],
                    "processed_at": self._now(),
                }
            )
            self.sessions[session_id]["outcome_evaluations"].append(
                {
                    "type": "outcome_evaluation",
                    "outcome_id": outcome_id,
                    "description": outcome["description"],
                    "result": outcome["result"],
                    "iteration": 0,
                    "explanation": outcome.get("explanation"),
                    "completed_at": self._now(),
                }
            )
            self.sessions[session_id]["updated_at"] = self._now()

    def finish_evaluation(self, session_id: str, *, result: str, explanation: str) -> None:
        with self.lock:
            session = self.sessions[session_id]
            evaluation = session["outcome_evaluations"][-1]
            evaluation.update(result=result, explanation=explanation, completed_at=self._now())
            session["status"] = "idle"
            session["updated_at"] = self._now()

    # -- memory stores --------------------------------------------------------------------

    def add_store(
        self, *, name: str = "support-memory", memories: dict[str, str] | None = None
    ) -> str:
        with self.lock:
            store_id = self._id("memstore")
            now = self._now()
            self.stores[store_id] = {
                "type": "memory_store",
                "id": store_id,
                "name": name,
                "description": "",
                "metadata": {},
                "created_at": now,
                "updated_at": now,
                "archived_at": None,
            }
            self.memories[store_id] = {}
            for path, content in (memories or {}).items():
                self._create_memory(store_id, path, content)
            return store_id

    def store_contents(self, store_id: str) -> dict[str, str]:
        with self.lock:
            return {m["path"]: m["content"] for m in self.memories[store_id].values()}

    def memory_id(self, store_id: str, path: str) -> str:
        with self.lock:
            return next(m["id"] for m in self.memories[store_id].values() if m["path"] == path)

    def edit_live(self, store_id: str, path: str, content: str) -> None:
        """Someone else (a session) changes a live memory."""
        with self.lock:
            memory = next(m for m in self.memories[store_id].values() if m["path"] == path)
            self._write_memory(memory, content, path, operation="modified")

    def _version(self, memory: dict[str, Any], operation: str) -> None:
        version_id = self._id("memver")
        memory["memory_version_id"] = version_id
        self.memory_versions.append(
            {
                "type": "memory_version",
                "id": version_id,
                "memory_id": memory["id"],
                "memory_store_id": memory["memory_store_id"],
                "operation": operation,
                "created_at": memory["updated_at"],
                "path": memory["path"],
                "content": memory["content"],
                "content_sha256": memory["content_sha256"],
                "content_size_bytes": memory["content_size_bytes"],
                "created_by": {"type": "api_actor", "api_key_id": "apikey_0001"},
                "redacted_at": None,
                "redacted_by": None,
            }
        )

    def _create_memory(self, store_id: str, path: str, content: str) -> dict[str, Any]:
        if store_id not in self.memories:
            raise FakeManagedError(404, "not_found_error", f"memory store {store_id}")
        self._writable(store_id)
        if any(m["path"] == path for m in self.memories[store_id].values()):
            raise FakeManagedError(
                409, "memory_path_conflict_error", f"{path} exists", **{"x-should-retry": "false"}
            )
        now = self._now()
        memory = {
            "type": "memory",
            "id": self._id("mem"),
            "memory_store_id": store_id,
            "memory_version_id": "",
            "path": path,
            "content": content,
            "content_sha256": sha(content),
            "content_size_bytes": len(content.encode()),
            "created_at": now,
            "updated_at": now,
        }
        self.memories[store_id][memory["id"]] = memory
        self._version(memory, "created")
        return memory

    def _write_memory(
        self, memory: dict[str, Any], content: str, path: str, *, operation: str
    ) -> None:
        memory.update(
            content=content,
            path=path,
            content_sha256=sha(content),
            content_size_bytes=len(content.encode()),
            updated_at=self._now(),
        )
        self._version(memory, operation)

    def _writable(self, store_id: str) -> None:
        if self.stores[store_id]["archived_at"] is not None:
            raise FakeManagedError(
                400, "invalid_request_error", f"memory store {store_id} is archived"
            )

    def archived(self, store_id: str) -> bool:
        with self.lock:
            return self.stores[store_id]["archived_at"] is not None

    def _memory(self, store_id: str, memory_id: str) -> dict[str, Any]:
        memory = self.memories.get(store_id, {}).get(memory_id)
        if memory is None:
            raise FakeManagedError(404, "not_found_error", f"memory {memory_id}")
        return memory

    @staticmethod
    def _precondition_failed() -> FakeManagedError:
        return FakeManagedError(
            409,
            "memory_precondition_failed_error",
            "content_sha256 does not match the stored content",
            **{"x-should-retry": "false"},
        )

    # -- dreams ---------------------------------------------------------------------------

    def _create_dream(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("inputs") or []
        stores = [i for i in inputs if i.get("type") == "memory_store"]
        sessions = [i for i in inputs if i.get("type") == "sessions"]
        if len(stores) != 1 or len(sessions) != 1:
            raise FakeManagedError(
                400, "invalid_request_error", "need one memory_store and one sessions input"
            )
        ids = sessions[0]["session_ids"]
        if not 1 <= len(ids) <= 100 or len(set(ids)) != len(ids):
            raise FakeManagedError(400, "invalid_request_error", "session_ids: 1-100 unique ids")
        if stores[0]["memory_store_id"] not in self.stores:
            raise FakeManagedError(404, "not_found_error", "memory store")
        model = body.get("model") or MODEL["id"]
        dream = {
            "type": "dream",
            "id": self._id("drm"),
            "status": "pending",
            "created_at": self._now(),
            "ended_at": None,
            "archived_at": None,
            "error": None,
            "inputs": [
                {"type": "memory_store", "memory_store_id": stores[0]["memory_store_id"]},
                {"type": "sessions", "session_ids": sorted(ids)},
            ],
            "instructions": body.get("instructions"),
            "model": {"id": model, "speed": "standard"} if isinstance(model, str) else model,
            "output_behavior": body.get("output_behavior") or {"type": "create_new"},
            "outputs": [],
            "session_id": None,
            "usage": {
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        self.dreams[dream["id"]] = dream
        return dream

    def dream_running(self, dream_id: str) -> None:
        with self.lock:
            self.dreams[dream_id].update(status="running", session_id=self._id("sesn"))

    def dream_completed(self, dream_id: str, *, memories: dict[str, str]) -> str:
        """Finish a dream: its output is a new store holding `memories` (path → content)."""
        with self.lock:
            store_id = self.add_store(name="dream-output", memories=memories)
            self.dreams[dream_id].update(
                status="completed",
                ended_at=self._now(),
                outputs=[{"type": "memory_store", "memory_store_id": store_id}],
                usage={
                    "input_tokens": 48_000,
                    "output_tokens": 3_500,
                    "cache_creation_input_tokens": 2_000,
                    "cache_read_input_tokens": 10_000,
                },
            )
            return store_id

    def dream_failed(
        self, dream_id: str, *, kind: str = "timeout", message: str = "took too long"
    ) -> None:
        with self.lock:
            self.dreams[dream_id].update(
                status="failed",
                ended_at=self._now(),
                error={"type": kind, "message": message},
                usage={
                    "input_tokens": 9_000,
                    "output_tokens": 100,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            )

    # -- request dispatch -----------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        q = {k: v[-1] for k, v in query.items()}
        with self.lock:
            fault = next((f for f in self.faults if f[:2] == (method, path)), None)
            if fault is not None:
                self.faults.remove(fault)
                raise FakeManagedError(fault[2], "api_error", "Internal server error")
            match (method, parts):
                case ("GET", ["agents", agent_id]):
                    if agent_id not in self.agents:
                        raise FakeManagedError(404, "not_found_error", agent_id)
                    return self.agents[agent_id][-1]
                case ("POST", ["agents", agent_id]):
                    return self._update_agent(agent_id, body)
                case ("GET", ["sessions"]):
                    return self._list_sessions(q)
                case ("GET", ["sessions", session_id]):
                    if session_id not in self.sessions:
                        raise FakeManagedError(404, "not_found_error", session_id)
                    return self.sessions[session_id]
                case ("GET", ["sessions", session_id, "events"]):
                    if session_id not in self.events:
                        raise FakeManagedError(404, "not_found_error", session_id)
                    return self._page(self.events[session_id], q)
                case ("GET", ["memory_stores", store_id]):
                    if store_id not in self.stores:
                        raise FakeManagedError(404, "not_found_error", store_id)
                    return self.stores[store_id]
                case ("POST", ["memory_stores", store_id, "archive"]):
                    if store_id not in self.stores:
                        raise FakeManagedError(404, "not_found_error", store_id)
                    store = self.stores[store_id]
                    if store["archived_at"] is None:  # archiving twice returns it unchanged
                        store["archived_at"] = store["updated_at"] = self._now()
                    return store
                case ("GET", ["memory_stores", store_id, "memories"]):
                    if store_id not in self.memories:
                        raise FakeManagedError(404, "not_found_error", store_id)
                    prefix = q.get("path_prefix", "")
                    items = [
                        self._memory_view(m, q.get("view", "basic"))
                        for m in sorted(self.memories[store_id].values(), key=lambda m: m["path"])
                        if m["path"].startswith(prefix)
                    ]
                    return self._page(items, q)
                case ("POST", ["memory_stores", store_id, "memories"]):
                    memory = self._create_memory(store_id, body["path"], body["content"])
                    return self._memory_view(memory, q.get("view", "basic"))
                case ("GET", ["memory_stores", store_id, "memories", memory_id]):
                    return self._memory_view(
                        self._memory(store_id, memory_id), q.get("view", "full")
                    )
                case ("POST", ["memory_stores", store_id, "memories", memory_id]):
                    memory = self._memory(store_id, memory_id)
                    self._writable(store_id)
                    content = body.get("content", memory["content"])
                    new_path = body.get("path", memory["path"])
                    pre = body.get("precondition")
                    # Like the real API: a failed precondition is a 409 even when the write
                    # would change nothing (a retry re-sending the old hash is refused).
                    if pre and pre.get("content_sha256") != memory["content_sha256"]:
                        raise self._precondition_failed()
                    if content != memory["content"] or new_path != memory["path"]:
                        self._write_memory(memory, content, new_path, operation="modified")
                    return self._memory_view(memory, q.get("view", "basic"))
                case ("DELETE", ["memory_stores", store_id, "memories", memory_id]):
                    memory = self._memory(store_id, memory_id)
                    self._writable(store_id)
                    expected = q.get("expected_content_sha256")
                    if expected is not None and expected != memory["content_sha256"]:
                        raise self._precondition_failed()
                    del self.memories[store_id][memory_id]
                    memory["updated_at"] = self._now()
                    self._version(memory, "deleted")
                    return {"type": "memory_deleted", "id": memory_id}
                case ("POST", ["dreams"]):
                    return self._create_dream(body)
                case ("GET", ["dreams", dream_id]):
                    if dream_id not in self.dreams:
                        raise FakeManagedError(404, "not_found_error", dream_id)
                    return self.dreams[dream_id]
                case ("POST", ["dreams", dream_id, "cancel"]):
                    dream = self.dreams[dream_id]
                    if dream["status"] not in TERMINAL_DREAM:
                        dream.update(status="canceled", ended_at=self._now())
                    return dream
            raise FakeManagedError(404, "not_found_error", f"{method} {path}")

    @staticmethod
    def _memory_view(memory: dict[str, Any], view: str) -> dict[str, Any]:
        return {**memory, "content": memory["content"] if view == "full" else None}

    def _list_sessions(self, q: dict[str, str]) -> dict[str, Any]:
        items = list(self.sessions.values())
        if "agent_id" in q:
            items = [s for s in items if s["agent"]["id"] == q["agent_id"]]
        for key, test in (
            ("created_at[gte]", lambda a, b: a >= b),
            ("created_at[gt]", lambda a, b: a > b),
        ):
            if key in q:
                bound = _parse_time(q[key])
                items = [s for s in items if test(_parse_time(s["created_at"]), bound)]
        items.sort(key=lambda s: s["created_at"], reverse=q.get("order", "desc") == "desc")
        page = self._page(items, q)
        page["prev_page"] = None
        return page

    @staticmethod
    def _page(items: list[dict[str, Any]], q: dict[str, str]) -> dict[str, Any]:
        start = int(q.get("page", "0") or 0)
        limit = int(q.get("limit", "20"))
        chunk = items[start : start + limit]
        more = start + limit < len(items)
        return {"data": chunk, "next_page": str(start + limit) if more else None}


def _handler_for(fake: FakeManaged) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            query: dict[str, list[str]] = {
                k.removesuffix("[]") if k.endswith("[]") else k: v
                for k, v in parse_qs(url.query, keep_blank_values=True).items()
            }
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            fake.requests.append(
                {
                    "method": self.command,
                    "path": url.path,
                    "query": query,
                    "body": body,
                    "beta": self.headers.get("anthropic-beta"),
                    "workspace": self.headers.get("anthropic-workspace-id"),
                }
            )
            token = self.headers.get("x-api-key") or (
                self.headers.get("authorization") or ""
            ).removeprefix("Bearer ")
            try:
                if token != fake.api_key:
                    raise FakeManagedError(401, "authentication_error", "invalid x-api-key")
                payload, status, headers = fake.handle(self.command, url.path, query, body), 200, {}
            except FakeManagedError as exc:
                payload = {"type": "error", "error": {"type": exc.kind, "message": exc.message}}
                status, headers = exc.status, {"x-should-retry": "false", **exc.headers}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_{len(fake.requests):04d}")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _dispatch

    return Handler


def chat_turns(
    question: str, answer: str, *, tool: str | None = None, tool_result: str = ""
) -> list[dict[str, Any]]:
    """Session events for: user asks, agent (optionally) calls a tool, agent answers."""
    turns: list[dict[str, Any]] = [
        {"type": "user.message", "content": [{"type": "text", "text": question}]}
    ]
    if tool:
        turns += [
            {"type": "agent.thinking"},
            {
                "type": "agent.tool_use",
                "id": "sevt_tool_" + tool,
                "name": tool,
                "input": {"q": question},
            },
            {
                "type": "agent.tool_result",
                "tool_use_id": "sevt_tool_" + tool,
                "content": [{"type": "text", "text": tool_result}],
            },
        ]
    turns.append({"type": "agent.message", "content": [{"type": "text", "text": answer}]})
    return turns


def failed_outcome(explanation: str = "The refund window was stated wrongly.") -> dict[str, Any]:
    return {
        "description": "Answer the refund question correctly",
        "rubric": "- states the 30-day window\n- offers the refund form",
        "result": "failed",
        "explanation": explanation,
    }


# -- pytest fixtures (tests/conftest.py loads this module as a plugin) -----------------------------

import pytest  # noqa: E402

API_KEY_ENV = "REVERIE_TEST_MANAGED_KEY"


@pytest.fixture
def fake_managed(settings: Any, monkeypatch: Any) -> Any:
    """A running fake; the app's Managed Agents client points at it with a per-workspace key."""
    fake = FakeManaged().start()
    monkeypatch.setenv(API_KEY_ENV, fake.api_key)
    settings.REVERIE_MANAGED_BASE_URL = fake.base_url
    settings.REVERIE_MANAGED_API_KEYS = f"northwind={API_KEY_ENV}"
    settings.ANTHROPIC_API_KEY = ""
    yield fake
    fake.stop()


@pytest.fixture
def managed_link(agent: Any, fake_managed: FakeManaged) -> Any:
    """The `agent` fixture linked to a fake Managed Agent with a three-memory live store."""
    from dreams.managed.services import link_agent

    remote_agent = fake_managed.add_agent(system=agent.stable_version.system_prompt)
    store = fake_managed.add_store(
        memories={
            "/policies/refunds.md": "Refunds within 30 days.",
            "/policies/shipping.md": "Ships in 2 days.",
            "/notes/old.md": "Legacy note.",
        }
    )
    return link_agent(agent=agent, managed_agent_id=remote_agent, memory_store_id=store)
