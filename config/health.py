"""`GET /healthz`: is this installation alive? Database, broker and beat, cheaply, without auth.

Answers 200 when every check passes and 503 otherwise, with one JSON object naming each check, so
a load balancer, `curl -f` in a systemd timer or a Kubernetes probe can use it as is. Nothing
here reveals data: only the check names, ok/failed, timings and the beat's age in seconds.
"""

import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

_redis_clients: dict[str, Any] = {}


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = check()
    except Exception as exc:  # a health check reports failures, it never raises them
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def check_broker() -> dict[str, Any]:
    """A Redis PING with a short timeout (one pooled client per process); eager mode has none."""
    url = settings.REDIS_URL
    if not url:
        return {"ok": True, "detail": "embedded mode: tasks run in-process"}
    client = _redis_clients.get(url)
    if client is None:
        import redis

        timeout = settings.REVERIE_HEALTH_TIMEOUT_SECONDS
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        _redis_clients[url] = client
    client.ping()
    return {"ok": True}


def check_beat(*, now: Any = None) -> dict[str, Any]:
    """Beat is fresh when its heartbeat (config/beat.py, every few seconds in the shared cache)
    or some enabled periodic task's `last_run_at` (written at its syncs) is recent. The embedded
    mode has no beat process, unless `manage.py rundemo` runs beat's schedule in this process:
    it runs the same scheduler, which records the same heartbeat, so it is judged the same way."""
    from config.celery import embedded_beat_running

    extra: dict[str, Any] = {}
    if not settings.REDIS_URL:
        if not embedded_beat_running():
            return {"ok": True, "detail": "embedded mode: no beat process"}
        extra = {"detail": "in-process (rundemo)"}
    from django_celery_beat.models import PeriodicTask

    from config.beat import last_heartbeat

    recorded = PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
    ticks = [when for when in (recorded, last_heartbeat()) if when is not None]
    last = max(ticks) if ticks else None
    limit = settings.REVERIE_HEALTH_BEAT_MAX_AGE_SECONDS
    if last is None:
        return {
            "ok": False,
            "error": "beat has never run a periodic task",
            "max_age": limit,
            **extra,
        }
    age = max(0, round(((now or timezone.now()) - last).total_seconds()))
    if age > limit:
        return {
            "ok": False,
            "error": f"no periodic task ran for {age} s (limit {limit} s): is beat running?",
            "age_seconds": age,
            "max_age": limit,
            **extra,
        }
    return {"ok": True, "age_seconds": age, "max_age": limit, **extra}


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 `{"status": "ok", "checks": {...}}` when database, broker and beat are fine, else 503."""
    checks = {
        "database": _timed(check_database),
        "broker": _timed(check_broker),
        "beat": _timed(check_beat),
    }
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "failing", "checks": checks}, status=200 if ok else 503
    )
