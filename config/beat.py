"""Beat's scheduler: django-celery-beat's database schedule plus a heartbeat for /healthz.

django-celery-beat writes a task's `last_run_at` only when it syncs (every three minutes, and
not before its first sync), so a freshly started beat looked dead to /healthz for minutes. This
scheduler also records a heartbeat in the shared cache (Redis in production) at every tick, at
most every `HEARTBEAT_SECONDS`. `celery -A config beat` and the in-process beat of
`manage.py rundemo` (config/celery.py) both run it, so both are judged the same way.
"""

import logging
import time
from datetime import UTC, datetime

from django.core.cache import cache
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "beat:heartbeat"
HEARTBEAT_SECONDS = 10.0
_KEEP_SECONDS = 7 * 86400  # a heartbeat this old is gone; /healthz then reads the database alone


class Scheduler(DatabaseScheduler):
    """The database schedule (entries, admin, sync) with a heartbeat written as it ticks."""

    _last_heartbeat = float("-inf")

    def tick(self, *args: object, **kwargs: object) -> float:
        interval = super().tick(*args, **kwargs)
        self.heartbeat()
        return interval

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        try:
            cache.set(HEARTBEAT_KEY, time.time(), timeout=_KEEP_SECONDS)
        except Exception as exc:  # the cache being down must not stop the schedule
            logger.warning("beat heartbeat not recorded: %s", exc)
            return
        self._last_heartbeat = now


def last_heartbeat() -> datetime | None:
    """When beat last ticked, from the shared cache; None when no heartbeat is recorded."""
    value = cache.get(HEARTBEAT_KEY)
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None
