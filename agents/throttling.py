"""Per-key API rate limits (DRF throttles) with `429`, `Retry-After` and rate-limit headers.

A fixed window counter per API key (signed-in members: per user) in Django's cache: one `INCR`
a request, atomic on Redis, so the limit holds across gunicorn workers and machines when
`REVERIE_CACHE_URL` / `REDIS_URL` is set; per process in the embedded mode (local memory).
The config endpoint has its own, much higher budget (`ConfigRateThrottle`), so a busy agent's
config fetches never use up the budget of its runs and feedback, nor the other way round; the
OTLP receiver (plain Django, not DRF) has its own too (`OtlpRateThrottle.allow_key`). Anonymous
callers are counted per client address (agents/proxies.py: never a forgeable header by default).
"""

import math
import time
import zlib
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from rest_framework.throttling import SimpleRateThrottle

from agents.models import ApiKey
from agents.proxies import client_address
from config.env import parse_rate

# Set on the Django request by the throttle, turned into headers by RateLimitHeadersMiddleware.
REQUEST_ATTRIBUTE = "reverie_rate_limit"


def key_ident(key: ApiKey) -> str:
    # The hash, not the id: ids are reused after a rollback (tests), hashes never.
    return f"key:{key.key_hash[:24]}"


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per window for each API key (and each signed-in user): REVERIE_API_RATE_LIMIT."""

    scope = "api"
    setting = "REVERIE_API_RATE_LIMIT"

    def __init__(self) -> None:
        limit = parse_rate(self.setting, getattr(settings, self.setting))
        self.num_requests: int | None
        self.duration: int | None
        self.num_requests, self.duration = limit if limit else (None, None)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        auth = getattr(request, "auth", None)
        if isinstance(auth, ApiKey):
            return key_ident(auth)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.pk is not None:
            return f"user:{user.pk}"
        return f"ip:{self.get_ident(request)}"

    def get_ident(self, request: Any) -> str:
        """The client address, X-Forwarded-For only from REVERIE_TRUSTED_PROXIES (DRF's own
        believes the header from anyone, so an anonymous caller could pick a fresh budget)."""
        return client_address(getattr(request, "_request", request))

    def allow_request(self, request: Any, view: Any) -> bool:
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        return self._count(request, ident)

    def _count(self, request: Any, ident: str) -> bool:
        """Count one request of `ident` in its current window; False when over the limit. The
        window's figures go on the Django request for RateLimitHeadersMiddleware."""
        if self.num_requests is None or self.duration is None:
            return True
        now = time.time()
        # Each key's windows start at its own offset, so keys don't all reset at once.
        offset = zlib.crc32(ident.encode()) % self.duration
        window = int((now - offset) // self.duration) * self.duration + offset
        bucket = f"rl:{self.scope}:{ident}:{window}"
        count = _increment(bucket, timeout=self.duration + 5)
        self.reset_at = window + self.duration
        self.now = now
        info = {
            "limit": self.num_requests,
            "remaining": max(0, self.num_requests - count),
            "reset": max(1, math.ceil(self.reset_at - now)),
            "reset_at": int(self.reset_at),
            "window": self.duration,
        }
        setattr(getattr(request, "_request", request), REQUEST_ATTRIBUTE, info)
        return count <= self.num_requests

    def wait(self) -> float:
        return max(1, math.ceil(self.reset_at - self.now))


class ConfigRateThrottle(ApiKeyRateThrottle):
    """The config endpoint's own budget per key: REVERIE_CONFIG_RATE_LIMIT (separate, high)."""

    scope = "config"
    setting = "REVERIE_CONFIG_RATE_LIMIT"


class OtlpRateThrottle(ApiKeyRateThrottle):
    """The OTLP trace receiver's own budget per key: REVERIE_OTLP_RATE_LIMIT."""

    scope = "otlp"
    setting = "REVERIE_OTLP_RATE_LIMIT"

    def allow_key(self, request: Any, key: ApiKey) -> bool:
        """For views outside DRF: count a request authenticated with `key`."""
        return self._count(request, key_ident(key))


def _increment(bucket: str, *, timeout: int) -> int:
    """Count one request in `bucket`: on Redis one pipelined INCR + EXPIRE NX (one round trip;
    Django's `incr` makes two), elsewhere the cache's own add/incr."""
    redis_client = _redis_client()
    if redis_client is not None:
        key = cache.make_and_validate_key(bucket)
        pipe = redis_client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, timeout, nx=True)
        count, _ = pipe.execute()
        return int(count)
    try:
        return cache.incr(bucket)
    except ValueError:  # first request of the window
        if cache.add(bucket, 1, timeout=timeout):
            return 1
        return cache.incr(bucket)


def _redis_client() -> Any:
    """The redis-py client behind Django's RedisCache, or None for other backends."""
    from django.core.cache.backends.redis import RedisCache

    backend = caches["default"]
    if isinstance(backend, RedisCache):
        return backend._cache.get_client(write=True)
    return None


class RateLimitHeadersMiddleware:
    """Adds `RateLimit-*` (IETF draft) and `X-RateLimit-*` headers to rate-limited responses."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        info = getattr(request, REQUEST_ATTRIBUTE, None)
        if info is not None:
            response["RateLimit-Limit"] = str(info["limit"])
            response["RateLimit-Remaining"] = str(info["remaining"])
            response["RateLimit-Reset"] = str(info["reset"])
            response["RateLimit-Policy"] = f"{info['limit']};w={info['window']}"
            response["X-RateLimit-Limit"] = str(info["limit"])
            response["X-RateLimit-Remaining"] = str(info["remaining"])
            response["X-RateLimit-Reset"] = str(info["reset_at"])
        return response
