"""Sandbox environments: an agent's tools served by an MCP server on staging, one session a replay.

An agent may name an environment (`Agent.environment_url`): an MCP server over streamable
HTTP that serves the agent's tools against a staging copy of its systems. Each replay opens
a fresh session with the official `mcp` SDK's client. The convention for environment authors
(README, "Sandbox environments"):

* **State per session.** Reverie connects with the initialize handshake (protocol 2025-11-25,
  `mode="legacy"`), so the server hands out an `Mcp-Session-Id` and every request of one
  replay carries it; the server keys its sandbox state by that id (the 2026-07-28 protocol has
  no sessions, so a stateful server must not rely on it). The session ends with a DELETE.
* **`reverie_reset`** (optional): called first with ``{"snapshot": …, "run_id": …}`` — the
  run's recorded snapshot (`Run.metadata["snapshot"]`, else the whole metadata) and its
  external id — so the sandbox starts from the state the run saw.
* **`reverie_check`** (optional): called last with ``{}``; answers ``{"verdict": "pass" |
  "fail", "reason": "…"}`` (structured content or JSON text) on the sandbox's final state —
  the replay's grade, ahead of expectations.

The replay engine is sync code in Celery tasks: `EnvironmentSession` drives the async client
from a private event loop thread (anyio's blocking portal), every request bounded by
REVERIE_ENVIRONMENT_TIMEOUT_SECONDS. The URL is checked like a webhook target (no private
address unless REVERIE_ENVIRONMENT_ALLOWED_HOSTS allows it) and the connection goes to the
checked address. A tool that fails is a tool error; a server that cannot be reached, times out
or drops the connection raises `EnvironmentUnavailable`.
"""

import contextlib
import functools
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from anyio.from_thread import BlockingPortal, start_blocking_portal
from django.conf import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from agents.targets import TargetRefused, pinned_url, resolve_target

RESET_TOOL = "reverie_reset"
CHECK_TOOL = "reverie_check"
RESERVED = (RESET_TOOL, CHECK_TOOL)
CLIENT_NAME = "reverie-replay"


class EnvironmentUnavailable(Exception):
    """The environment could not be reached, refused, timed out or dropped the session."""


@dataclass(frozen=True)
class ToolAnswer:
    content: Any  # a string, or a list of Anthropic content blocks
    is_error: bool


@dataclass(frozen=True)
class FinalCheck:
    verdict: str  # pass | fail
    reason: str


def _flatten(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap transport errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    leaf = _flatten(exc)
    text = str(leaf) or type(leaf).__name__
    return f"{type(leaf).__name__}: {text}"[:500]


def tool_answer(result: Any) -> ToolAnswer:
    """An MCP CallToolResult as an Anthropic tool_result content (text joined, else blocks)."""
    blocks: list[dict[str, Any]] = []
    for item in result.content or []:
        data = item.model_dump(mode="json", by_alias=True, exclude_none=True)
        if data.get("type") == "text":
            blocks.append({"type": "text", "text": data.get("text", "")})
        elif data.get("type") == "image" and data.get("data"):
            blocks.append(
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": data.get("mimeType", "image/png"),
                        "data": data["data"],
                    },
                }
            )
        else:
            blocks.append({"type": "text", "text": json.dumps(data, sort_keys=True)})
    if not blocks and result.structured_content is not None:
        blocks.append({"type": "text", "text": json.dumps(result.structured_content)})
    is_error = bool(result.is_error)
    if all(b["type"] == "text" for b in blocks):
        return ToolAnswer("".join(b["text"] for b in blocks), is_error)
    return ToolAnswer(blocks, is_error)


def final_check(result: Any) -> FinalCheck | None:
    """The verdict of a `reverie_check` answer, or None when it gave none."""
    if result.is_error:
        return None
    data = result.structured_content
    if not isinstance(data, dict) or "verdict" not in data:
        text = tool_answer(result).content
        try:
            data = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            data = None
    if not isinstance(data, dict):
        return None
    verdict = str(data.get("verdict", "")).lower()
    if verdict not in ("pass", "fail"):
        return None
    return FinalCheck(verdict, str(data.get("reason", ""))[:2000])


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx2's default verifying context, built once: building it costs ~25 ms a session."""
    return httpx2.create_ssl_context(trust_env=False)


def _pinned_http_client(url: str, timeout: float) -> tuple[str, httpx2.AsyncClient]:
    """The URL to request (host replaced by the checked address) and a client that sends the
    original Host header and TLS server name; no proxies (they would resolve the host again)."""
    try:
        _, address, _ = resolve_target(
            url,
            what="environment",
            allowed_hosts=settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS,
            hint="add the host to REVERIE_ENVIRONMENT_ALLOWED_HOSTS to allow it",
        )
    except (TargetRefused, ConnectionError) as exc:
        raise EnvironmentUnavailable(f"environment URL refused: {exc}") from exc
    pinned, host = pinned_url(url, address)
    hostname = urlsplit(url).hostname or ""
    https = urlsplit(url).scheme == "https"

    async def name_the_server(request: httpx2.Request) -> None:
        if https:
            request.extensions["sni_hostname"] = hostname

    client = httpx2.AsyncClient(
        timeout=httpx2.Timeout(timeout),
        verify=_ssl_context(),
        headers={"host": host},
        trust_env=False,
        follow_redirects=False,
        event_hooks={"request": [name_the_server]},
    )
    return pinned, client


class EnvironmentSession:
    """One MCP session for one replay, driven synchronously (usable from sync and thread code).

    Without a `portal` the session runs its client on a private event loop thread. With one
    (an anyio `BlockingPortal` opened on a running event loop, see `replay.replay_many`), the
    client runs on that loop, so many replays in worker threads share one loop: each still
    has its own `Client` and MCP session, entered on open and exited (DELETE) on close."""

    def __init__(
        self, url: str, *, timeout: float | None = None, portal: BlockingPortal | None = None
    ) -> None:
        self.url = url
        self._shared_portal = portal
        self.timeout = (
            timeout if timeout is not None else settings.REVERIE_ENVIRONMENT_TIMEOUT_SECONDS
        )
        self.tools: set[str] = set()
        self._stack: contextlib.ExitStack | None = None
        self._portal: Any = None
        self._client: Client | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (handshake, tool list); EnvironmentUnavailable when that fails."""
        if self._client is not None:
            return
        pinned, http = _pinned_http_client(self.url, self.timeout)
        stack = contextlib.ExitStack()
        try:
            self._portal = self._shared_portal or stack.enter_context(start_blocking_portal())
            stack.callback(self._portal.call, http.aclose)
            client = Client(
                streamable_http_client(pinned, http_client=http),
                mode="legacy",  # the session-based handshake: state lives per Mcp-Session-Id
                read_timeout_seconds=self.timeout,  # connect and writes: the httpx2 timeout
                cache=None,
            )
            self._client = stack.enter_context(self._portal.wrap_async_context_manager(client))
            listing = self._call(lambda c: c.list_tools())
            self.tools = {tool.name for tool in listing.tools}
        except EnvironmentUnavailable:
            self._client = None
            self._close_stack(stack)
            raise
        except BaseException as exc:  # noqa: BLE001 - anything on connect means "unavailable"
            self._client = None
            self._close_stack(stack)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise EnvironmentUnavailable(f"cannot open a session: {_describe(exc)}") from None
        self._stack = stack

    def _close_stack(self, stack: contextlib.ExitStack) -> None:
        with contextlib.suppress(BaseException):
            stack.close()

    def close(self) -> None:
        """End the session (DELETE) and stop the loop thread; never raises."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            self._close_stack(stack)

    def __enter__(self) -> "EnvironmentSession":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------

    def _call(self, request: Callable[[Client], Any]) -> Any:
        client = self._client
        if client is None or self._portal is None:
            raise EnvironmentUnavailable("the session is not open")
        timeout = self.timeout

        async def bounded() -> Any:
            with anyio.fail_after(timeout):
                return await request(client)

        try:
            return self._portal.call(bounded)
        except TimeoutError:
            raise EnvironmentUnavailable(f"no answer within {timeout:g} s") from None
        except Exception as exc:
            raise EnvironmentUnavailable(_describe(exc)) from None

    def call_tool(self, name: str, arguments: dict[str, Any]) -> ToolAnswer:
        """Run one tool call; a failing tool is a tool error (is_error), not an exception."""
        result = self._call(lambda c: c.call_tool(name, arguments))
        return tool_answer(result)

    def reset(self, *, snapshot: Any, run_id: str) -> bool:
        """Reset the sandbox to the run's snapshot when the server offers `reverie_reset`."""
        if RESET_TOOL not in self.tools:
            return False
        answer = self.call_tool(RESET_TOOL, {"snapshot": snapshot, "run_id": run_id})
        if answer.is_error:
            raise EnvironmentUnavailable(f"{RESET_TOOL} failed: {str(answer.content)[:300]}")
        return True

    def check(self) -> FinalCheck | None:
        """The final-state verdict when the server offers `reverie_check`."""
        if CHECK_TOOL not in self.tools:
            return None
        return final_check(self._call(lambda c: c.call_tool(CHECK_TOOL, {})))


def snapshot_of(metadata: Any) -> Any:
    """What `reverie_reset` receives: `metadata["snapshot"]` when present, else the metadata."""
    if isinstance(metadata, dict) and "snapshot" in metadata:
        return metadata["snapshot"]
    return metadata or {}


def same_result(recorded: Any, observed: Any) -> bool:
    """Whether two tool results say the same (JSON compared as data, text by its words)."""

    def norm(value: Any) -> Any:
        if isinstance(value, list):
            texts = [b.get("text", "") for b in value if isinstance(b, dict)]
            if len(texts) == len(value):
                value = "".join(texts)
            else:
                return json.dumps(value, sort_keys=True)
        if isinstance(value, str):
            try:
                return json.dumps(json.loads(value), sort_keys=True)
            except ValueError:
                return " ".join(value.split())
        return json.dumps(value, sort_keys=True)

    return norm(recorded) == norm(observed)
