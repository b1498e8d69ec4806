"""Typed readers for environment variables; a bad value fails loudly at start-up."""

import ipaddress
import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str) -> list[str]:
    """Comma-separated IP addresses or networks (`127.0.0.1,10.0.0.0/8`), each checked."""
    entries = env_list(name)
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"{name} must list IP addresses or networks (127.0.0.1,10.0.0.0/8), got {entry!r}"
            ) from exc
    return entries


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$", re.I)
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(name: str, raw: str) -> tuple[int, int] | None:
    """`"1200/min"` → (1200, 60) requests per seconds; `"off"` → None; else ImproperlyConfigured."""
    if raw.strip().lower() in ("off", "none", "0", ""):
        return None
    match = RATE.match(raw)
    if not match or int(match.group(1)) < 1:
        raise ImproperlyConfigured(
            f"{name} must look like 1200/min (per s, min, hour or day) or off, got {raw!r}"
        )
    return int(match.group(1)), PERIODS[match.group(2)[0].lower()]


def env_rate(name: str, default: str) -> str:
    """A rate limit such as `1200/min` (or `off`), checked at start-up."""
    raw = os.environ.get(name, default)
    parse_rate(name, raw)
    return raw.strip()
