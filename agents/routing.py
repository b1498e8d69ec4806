"""Sticky routing between an agent's stable and canary config versions.

A key's bucket is `sha256(routing_salt + ":" + key)` read as an integer modulo 10,000. The key
goes to the canary when its bucket is below `canary_percent × 100`, so raising the percent
only adds buckets: a key in the canary at 5% is still there at 25% (monotonic growth).
Requests without a key always get the stable version: they cannot be kept sticky, so sending
them to the canary would flip a caller between versions from one request to the next.
"""

import hashlib
from dataclasses import dataclass

BUCKETS = 10_000
STABLE = "stable"
CANARY = "canary"


def bucket_for(*, salt: str, key: str) -> int:
    """The key's bucket in [0, 10000): stable across processes, machines and releases."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_canary(*, salt: str, key: str | None, percent: int) -> bool:
    if key is None or key == "" or percent <= 0:
        return False
    if percent >= 100:
        return True
    return bucket_for(salt=salt, key=key) < percent * (BUCKETS // 100)


@dataclass(frozen=True)
class RoutingState:
    """The routing fields of an agent, as read in one query by the config endpoint."""

    salt: str
    stable_version_id: int | None
    canary_version_id: int | None
    canary_percent: int


def choose_arm(state: RoutingState, *, key: str | None) -> tuple[str, int | None]:
    """(arm, version id) for a key; the canary only when one is set and the key falls in it."""
    if state.canary_version_id is not None and in_canary(
        salt=state.salt, key=key, percent=state.canary_percent
    ):
        return CANARY, state.canary_version_id
    return STABLE, state.stable_version_id
