"""Outgoing URL targets: the one check every URL Reverie calls out to goes through.

Webhooks (reviews, rollouts) and sandbox environments (dreams) name URLs that Reverie's
workers request. A target must be http(s) with a host, and may not resolve to a private,
loopback, link-local or reserved address (SSRF) unless the caller allows it: webhooks by
REVERIE_WEBHOOKS_ALLOW_PRIVATE, environments by the REVERIE_ENVIRONMENT_ALLOWED_HOSTS
allow-list (host names, addresses or networks of private staging hosts). The caller then
connects to the address that was checked (no second DNS lookup).
"""

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit


class TargetRefused(Exception):
    """The URL may not be called (scheme, private address, …); the message says why."""


def refused_address(address: str) -> bool:
    """Whether an IP address is private, loopback, link-local, reserved or multicast."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _allowed(hostname: str, address: str, allowed_hosts: Iterable[str]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    for entry in allowed_hosts:
        entry = entry.strip()
        if not entry:
            continue
        if entry.lower() == hostname.lower():
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name, not an address or network
    return False


def resolve_target(
    url: str,
    *,
    what: str = "webhook",
    allow_private: bool = False,
    allowed_hosts: Iterable[str] = (),
    hint: str = "set REVERIE_WEBHOOKS_ALLOW_PRIVATE to allow it",
) -> tuple[str, str, int]:
    """(scheme, checked IP address, port) for `url`, or TargetRefused.

    A host that does not resolve raises ConnectionError (it may resolve later).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"{what} URLs must be http(s) with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused(f"{what} URL has a bad port: {exc}") from None
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConnectionError(f"cannot resolve {parts.hostname}: {exc}") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    allowed_hosts = list(allowed_hosts)
    if not allow_private:
        refused = [
            a
            for a in addresses
            if refused_address(a) and not _allowed(parts.hostname, a, allowed_hosts)
        ]
        if refused:
            raise TargetRefused(
                f"{parts.hostname} resolves to a private, loopback or reserved address "
                f"({refused[0]}); {hint}"
            )
    return parts.scheme, addresses[0], port


def pinned_url(url: str, address: str) -> tuple[str, str]:
    """`url` with its host replaced by the checked `address`, and the Host header to send."""
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl(), parts.netloc.rsplit("@", 1)[-1]
