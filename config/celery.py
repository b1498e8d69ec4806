"""The Celery app: Redis broker when REDIS_URL is set, eager in-process tasks otherwise."""

import logging
import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("reverie", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
logger = logging.getLogger(__name__)


def enqueue_on_commit(signature: Any, *, what: str) -> None:
    """Send a task once the transaction commits; a broker outage is logged, never raised.

    The database is the source of truth: the row the task would work on is already stored in
    its waiting state, and beat's sweepers (`dreams.resume_stale_cycles`,
    `dreams.resume_stale_experiments`) find it again once the broker is back.
    """
    from django.db import transaction

    def send() -> None:
        try:
            signature.apply_async()
        except Exception as exc:  # kombu's OperationalError, a refused connection, a timeout
            if app.conf.task_always_eager:
                raise  # in-process tasks: the error is the task's own, not the broker's
            logger.warning("broker unavailable, %s left for the sweeper: %s", what, exc)

    transaction.on_commit(send)


_embedded_beats: list[Any] = []


def embedded_beat_running() -> bool:
    """Whether beat's schedule runs in a thread of this process (`manage.py rundemo`)."""
    return any(beat.is_alive() for beat in _embedded_beats)


def start_embedded_beat() -> Any:
    """Run beat's schedule (django-celery-beat's database schedule, as `celery beat` would) in a
    daemon thread of this process. In the embedded mode tasks are eager, so each due task runs
    in that thread: the demo's canary checks, sweepers and dream schedules, with no worker.
    Its scheduler records each run's `last_run_at` in the database exactly as `celery beat`
    does, so /healthz judges its freshness the same way. Returns the thread; `.stop()` ends it."""
    import threading

    from celery.beat import Service
    from django.db import connections

    # Register every app's tasks (a worker does this at start), so beat runs them here eagerly
    # instead of sending them to a broker nobody reads.
    app.loader.import_default_modules()

    class EmbeddedBeat(threading.Thread):
        def __init__(self) -> None:
            super().__init__(name="beat", daemon=True)
            # The configured scheduler (django-celery-beat's database schedule), as `celery
            # beat` uses; a short max interval so stop() returns within a second.
            self.service = Service(app, max_interval=1, scheduler_cls=app.conf.beat_scheduler)

        def run(self) -> None:
            app.set_current()
            try:
                self.service.start()
            finally:
                connections.close_all()  # this thread's database connections

        def stop(self) -> None:
            self.service.stop(wait=True)
            self.join(timeout=10)
            if not self.is_alive() and self in _embedded_beats:
                _embedded_beats.remove(self)

    beat = EmbeddedBeat()
    beat.start()
    _embedded_beats.append(beat)
    return beat
