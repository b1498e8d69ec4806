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
        worker = _embedded_worker
        if app.conf.task_always_eager and worker is not None and worker.is_alive():
            worker.submit(signature)  # the embedded demo: in the background, not the request
            return
        try:
            signature.apply_async()
        except Exception as exc:  # kombu's OperationalError, a refused connection, a timeout
            if app.conf.task_always_eager:
                raise  # in-process tasks: the error is the task's own, not the broker's
            logger.warning("broker unavailable, %s left for the sweeper: %s", what, exc)

    transaction.on_commit(send)


_embedded_worker: "EmbeddedWorker | None" = None


class EmbeddedWorker:
    """One daemon thread that runs, one at a time and in order, the eager tasks services send
    with `enqueue_on_commit` (experiments, dream cycles): the embedded mode's stand-in for a
    worker, so saving an edit returns at once and the page polls the replays' progress.

    Without it (tests, `manage.py` commands) those tasks run inside the request, as before;
    `pause()` holds the queue so a test can look at the page while the work waits.
    """

    def __init__(self) -> None:
        import queue
        import threading

        self._queue: queue.Queue[Any] = queue.Queue()
        self._go = threading.Event()
        self._go.set()
        self._thread = threading.Thread(target=self._run, name="embedded-worker", daemon=True)

    def start(self) -> "EmbeddedWorker":
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, signature: Any) -> None:
        self._queue.put(signature)

    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def join_idle(self, timeout: float = 60.0) -> None:
        """Wait until every submitted task has run (tests and shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._go.set()
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from django.db import close_old_connections, connections

        app.set_current()
        try:
            while True:
                signature = self._queue.get()
                try:
                    if signature is None:
                        return
                    self._go.wait()
                    signature.apply()
                except Exception:  # a task's failure is its own; the next task still runs
                    logger.exception("embedded worker: task %r failed", signature)
                finally:
                    close_old_connections()  # as a worker does between tasks
                    self._queue.task_done()
        finally:
            connections.close_all()  # this thread's database connections


def start_embedded_worker() -> EmbeddedWorker:
    """Start the embedded worker (idempotent); `stop_embedded_worker()` ends it."""
    global _embedded_worker
    if _embedded_worker is None or not _embedded_worker.is_alive():
        app.loader.import_default_modules()
        _embedded_worker = EmbeddedWorker().start()
    return _embedded_worker


def stop_embedded_worker() -> None:
    global _embedded_worker
    worker, _embedded_worker = _embedded_worker, None
    if worker is not None:
        worker.stop()


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
