"""The access desk's sandbox environment: a stateful MCP server (streamable HTTP, `mcp` SDK).

It follows Reverie's convention for environments (README, "Sandbox environments"): state
lives per MCP session (`Mcp-Session-Id`, the initialize handshake), `reverie_reset` loads a
run's snapshot, the agent's three tools work on that copy, and `reverie_check` answers the
final-state verdict. No Django here: it runs on its own.

    .venv/bin/python -m dreams.demo_desk.sandbox --port 8765    # http://127.0.0.1:8765/mcp
"""

import argparse
import threading
import time
from collections import OrderedDict
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent

from dreams.demo_desk.directory import Directory, dumps

MAX_SESSIONS = 2000  # sandboxes kept, oldest dropped first (a replay's session is short-lived)
PATH = "/mcp"


class Sandboxes:
    """One `Directory` per MCP session id (thread-safe, bounded)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, Directory] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Directory:
        with self._lock:
            directory = self._items.get(session_id)
            if directory is None:
                directory = self._items[session_id] = Directory()
            self._items.move_to_end(session_id)
            while len(self._items) > MAX_SESSIONS:
                self._items.popitem(last=False)
            return directory

    def reset(self, session_id: str, snapshot: dict[str, Any]) -> Directory:
        with self._lock:
            directory = self._items[session_id] = Directory(snapshot)
            return directory

    def __len__(self) -> int:
        return len(self._items)


def _session(ctx: Context) -> str:
    # Every request after the handshake carries the session id the server handed out.
    return (ctx.headers or {}).get("mcp-session-id", "")


def _answer(text: str, is_error: bool) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=is_error)


def build_server(sandboxes: Sandboxes | None = None) -> MCPServer:
    """The MCP server with the desk's tools and Reverie's reset and check tools."""
    sandboxes = sandboxes if sandboxes is not None else Sandboxes()
    server = MCPServer(
        "northwind-access-sandbox",
        instructions="Staging copy of Northwind's access directory for Reverie replays.",
        log_level="WARNING",
    )

    @server.tool(description="Load a run's recorded snapshot into this session's sandbox.")
    def reverie_reset(snapshot: dict[str, Any], ctx: Context, run_id: str = "") -> CallToolResult:
        directory = sandboxes.reset(_session(ctx), snapshot)
        return _answer(
            dumps({"reset": True, "run_id": run_id, "employees": len(directory.employees)}), False
        )

    @server.tool(description="The final-state verdict of this session's sandbox.")
    def reverie_check(ctx: Context) -> CallToolResult:
        verdict = sandboxes.get(_session(ctx)).check()
        return CallToolResult(
            content=[TextContent(type="text", text=dumps(verdict))], structured_content=verdict
        )

    @server.tool(description="An employee's record: name, team, manager, groups.")
    def lookup_employee(employee_id: str, ctx: Context) -> CallToolResult:
        return _answer(*sandboxes.get(_session(ctx)).lookup_employee(employee_id))

    @server.tool(description="A group's access policy: privileged, max_days, owner.")
    def get_access_policy(group: str, ctx: Context) -> CallToolResult:
        return _answer(*sandboxes.get(_session(ctx)).get_access_policy(group))

    @server.tool(description="Add an employee to a group, for `days` days or (no days) for good.")
    def grant_access(
        employee_id: str, group: str, ctx: Context, days: int | None = None
    ) -> CallToolResult:
        return _answer(*sandboxes.get(_session(ctx)).grant_access(employee_id, group, days))

    return server


class SandboxServer:
    """The sandbox served by uvicorn in a background thread (tests and the demo seeder)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sandboxes = Sandboxes()
        self.mcp = build_server(self.sandboxes)
        app = self.mcp.streamable_http_app(streamable_http_path=PATH, json_response=True, host=host)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="access-sandbox", daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    def open_sessions(self) -> int:
        """MCP sessions the server holds now (a client that closes its session ends it)."""
        return len(self.mcp.session_manager._server_instances)  # noqa: SLF001 - no public count

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def start(self, timeout: float = 10.0) -> "SandboxServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the access sandbox did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def with_latency(app: Any, seconds: float) -> Any:
    """`app` answering every request `seconds` late, as a staging host a network hop away
    would (tests/bench/multiturn.py measures replay concurrency against it)."""

    async def delayed(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await anyio.sleep(seconds)
        await app(scope, receive, send)

    return delayed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--latency-ms", type=float, default=0, help="answer every request this much later"
    )
    args = parser.parse_args()
    app = build_server().streamable_http_app(
        streamable_http_path=PATH, json_response=True, host=args.host
    )
    if args.latency_ms > 0:
        app = with_latency(app, args.latency_ms / 1000)
    print(f"Access sandbox (MCP) at http://{args.host}:{args.port}{PATH}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
