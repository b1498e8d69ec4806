"""Reaching an agent's sandbox environment (an MCP server over streamable HTTP) safely, and the
admin's "Test connection" probe of one.

The connection goes to the address the SSRF check (`agents.targets`) approved, with the
original Host header and TLS server name, no proxies and no redirects. `dreams.environments`
opens its replay sessions through `pinned_http_client`; `probe_environment` opens one session,
lists the tools and ends it, so a person setting the URL sees at once whether replays could use it.
"""

import functools
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import httpx2
from django.conf import settings

from agents.targets import TargetRefused, pinned_url, resolve_target

# The optional tools of the environment convention (README, "Sandbox environments").
RESET_TOOL = "reverie_reset"
CHECK_TOOL = "reverie_check"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """httpx2's default verifying context, built once: building it costs ~25 ms a session."""
    return httpx2.create_ssl_context(trust_env=False)


def pinned_http_client(url: str, timeout: float) -> tuple[str, httpx2.AsyncClient]:
    """The URL to request (host replaced by the checked address) and a client that sends the
    original Host header and TLS server name; TargetRefused or ConnectionError when the URL may
    not be called."""
    _, address, _ = resolve_target(
        url,
        what="environment",
        allowed_hosts=settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS,
        hint="add the host to REVERIE_ENVIRONMENT_ALLOWED_HOSTS to allow it",
    )
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


@dataclass(frozen=True)
class Probe:
    """What a test connection found: the tools served, or why there are none."""

    url: str
    ok: bool
    error: str = ""
    tools: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # the agent's tools the server lacks

    @property
    def has_reset(self) -> bool:
        return RESET_TOOL in self.tools

    @property
    def has_check(self) -> bool:
        return CHECK_TOOL in self.tools


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def probe_environment(
    url: str, *, agent_tools: list[str] | None = None, timeout: float | None = None
) -> Probe:
    """Open one MCP session at `url` (checked like every environment URL), list its tools and
    end the session. Never raises: a refused, unreachable or broken server is `ok=False` with
    the reason."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    url = (url or "").strip()
    if not url:
        return Probe(url, ok=False, error="Enter the environment URL first.")
    limit = timeout if timeout is not None else settings.REVERIE_ENVIRONMENT_TIMEOUT_SECONDS
    try:
        pinned, http = pinned_http_client(url, limit)
    except TargetRefused as exc:
        return Probe(url, ok=False, error=f"Refused: {exc}.")
    except ConnectionError as exc:
        return Probe(url, ok=False, error=f"The host does not resolve: {exc}.")

    async def list_tools() -> list[str]:
        async with http:
            client = Client(
                streamable_http_client(pinned, http_client=http),
                mode="legacy",  # the session handshake replays use
                read_timeout_seconds=limit,
                cache=None,
            )
            with anyio.fail_after(limit):
                async with client:
                    listing = await client.list_tools()
        return sorted(tool.name for tool in listing.tools)

    try:
        tools = anyio.run(list_tools)
    except TimeoutError:
        return Probe(url, ok=False, error=f"No answer within {limit:g} s.")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
        leaf = _leaf(exc)
        if isinstance(leaf, TimeoutError):
            return Probe(url, ok=False, error=f"No answer within {limit:g} s.")
        text = str(leaf) or type(leaf).__name__
        if isinstance(leaf, httpx2.ConnectError):
            where = urlsplit(url).netloc.rsplit("@", 1)[-1]
            return Probe(
                url,
                ok=False,
                error=f"Nothing answers at {where}: is the server running and the port right? "
                f"(ConnectError: {text})"[:500],
            )
        return Probe(
            url, ok=False, error=f"Cannot open an MCP session: {type(leaf).__name__}: {text}"[:500]
        )
    missing = sorted(set(agent_tools or []) - set(tools))
    return Probe(url, ok=True, tools=tools, missing=missing)
