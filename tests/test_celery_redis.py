"""With Redis at REDIS_URL, a real Celery worker consumes the broker and runs a project task."""

import os
import time
import uuid
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.db import connection

from agents.models import Run
from agents.tasks import recount_steps
from config.celery import app as celery_app
from tests.factories import RunFactory

pytestmark = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set (no Redis broker to test)"
)


@pytest.fixture
def broker_worker(eager_celery: Any) -> Any:
    """A worker thread on the Redis broker, consuming a queue no other process listens to."""
    queue = f"reverie-test-{uuid.uuid4().hex[:12]}"
    celery_app.conf.task_always_eager = False  # undo the suite's autouse eager mode
    assert celery_app.conf.broker_url.startswith("redis://")
    queues = celery_app.amqp.queues
    consumed_before = queues._consume_from
    try:
        with start_worker(
            celery_app, pool="solo", perform_ping_check=False, queues=[queue], shutdown_timeout=20
        ):
            yield queue
    finally:
        # start_worker narrows what this app consumes; later workers in the run need the default.
        queues._consume_from = consumed_before
        celery_app.conf.task_always_eager = True
        # Leave Redis as found: the queue and the exchange bindings kombu declared for it.
        redis.Redis.from_url(os.environ["REDIS_URL"]).delete(
            queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
        )


@pytest.mark.django_db(transaction=True)  # the worker thread reads committed rows only
def test_a_worker_on_redis_runs_a_project_task(broker_worker):
    run = RunFactory(step_count=0)  # its messages hold one assistant turn
    assert connection.in_atomic_block is False

    recount_steps.apply_async(args=[run.pk], queue=broker_worker)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if Run.objects.get(pk=run.pk).step_count == 1:
            break
        time.sleep(0.1)
    assert Run.objects.get(pk=run.pk).step_count == 1
