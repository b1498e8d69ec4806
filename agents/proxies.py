"""The client's address behind reverse proxies: `X-Forwarded-For` only from trusted proxies.

`REVERIE_TRUSTED_PROXIES` lists the proxies' addresses or networks (`127.0.0.1,10.0.0.0/8`);
empty by default, so the header is never trusted and the client is `REMOTE_ADDR`. When the peer
(`REMOTE_ADDR`) is a trusted proxy, the header is read from the right: each hop a trusted proxy
appended is skipped, and the first address no trusted proxy vouches for is the client. Anything
left of it was written by the client and may be forged, so it is never used. Sign-in lockouts
(agents/login.py) and the API throttles' anonymous identity (agents/throttling.py) both ask here.
"""

import ipaddress
from functools import lru_cache
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = raw.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:5123"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address: Any, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(request: Any) -> str:
    """The client's IP address for throttling: `REMOTE_ADDR`, or, when that peer is a trusted
    proxy, the nearest `X-Forwarded-For` hop that is not a trusted proxy."""
    if request is None:
        return "unknown"
    meta = request.META
    remote = meta.get("REMOTE_ADDR") or ""
    networks = _networks(tuple(settings.REVERIE_TRUSTED_PROXIES))
    peer = _address(remote)
    if not networks or not _trusted(peer, networks):
        return str(peer) if peer is not None else (remote or "unknown")
    client = peer
    for hop in reversed(meta.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        if not hop.strip():
            continue
        address = _address(hop)
        if address is None:
            break  # a garbled hop: stop at the last address a trusted proxy vouched for
        client = address
        if not _trusted(address, networks):
            break
    return str(client)
