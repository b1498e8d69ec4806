"""`/healthz`: database, broker and beat freshness, 200/503, JSON, no auth, never redirected."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config import health

REDIS = "redis://127.0.0.1:6379/9"
REFUSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a real refused connection


def redis_answers() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def beat_ran(seconds_ago: float) -> None:
    every = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=f"probe-{seconds_ago}",
        task="reviews.check_rollouts",
        interval=every,
        last_run_at=timezone.now() - timedelta(seconds=seconds_ago),
    )


@pytest.fixture(autouse=True)
def fresh_clients():
    health._redis_clients.clear()
    yield
    health._redis_clients.clear()


@pytest.mark.django_db
def test_embedded_install_is_healthy_without_signing_in(client, settings):
    settings.REDIS_URL = ""  # the embedded mode, also when the suite runs against Redis
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "beat"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_refused_broker_answers_503_naming_the_broker(client, settings):
    settings.REDIS_URL = REFUSED
    beat_ran(seconds_ago=10)

    response = client.get("/healthz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["beat"]["ok"]
    assert not checks["broker"]["ok"]
    assert "ConnectionError" in checks["broker"]["error"]


@pytest.mark.django_db
def test_beat_that_never_ran_or_went_quiet_answers_503(client, settings):
    settings.REDIS_URL = REFUSED
    settings.REVERIE_HEALTH_BEAT_MAX_AGE_SECONDS = 600

    never = client.get("/healthz").json()["checks"]["beat"]
    beat_ran(seconds_ago=3600)
    stale = client.get("/healthz")

    assert never == {**never, "ok": False, "error": "beat has never run a periodic task"}
    assert stale.status_code == 503
    assert stale.json()["checks"]["beat"]["age_seconds"] >= 3600


@pytest.mark.django_db
@pytest.mark.skipif(not redis_answers(), reason="needs Redis on 127.0.0.1:6379 (a real PING)")
def test_live_redis_and_fresh_beat_answer_200(client, settings):
    settings.REDIS_URL = REDIS
    beat_ran(seconds_ago=30)

    response = client.get("/healthz")

    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["beat"]["age_seconds"] < 600


@pytest.mark.django_db
def test_healthz_is_not_redirected_to_https_and_refuses_writes(client, settings):
    settings.REDIS_URL = ""
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/login/").status_code == 301  # everything else is redirected
    assert client.post("/healthz").status_code == 405


def test_deployment_docs_use_healthz_as_the_liveness_check():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    deploy = root / "config" / "deploy"
    assert "/healthz" in (deploy / "Procfile").read_text()
    assert "/healthz" in (deploy / "reverie-web.service").read_text()
    assert "/healthz" in (root / "README.md").read_text().split("## Deployment")[1]


@pytest.mark.django_db(transaction=True)  # the beat thread has its own database connection
def test_under_rundemo_the_in_process_beat_is_judged_by_its_recorded_runs(client, settings):
    """`manage.py rundemo` runs beat's schedule in-process (eager): /healthz must not say "no
    beat", and its freshness comes from the heartbeat its scheduler records, as beat's does."""
    import time

    from config.beat import Scheduler, last_heartbeat
    from config.celery import embedded_beat_running, start_embedded_beat

    settings.REDIS_URL = ""
    assert client.get("/healthz").json()["checks"]["beat"]["detail"] == (
        "embedded mode: no beat process"
    )
    beat = start_embedded_beat()
    try:
        deadline = time.monotonic() + 60
        while last_heartbeat() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        response = client.get("/healthz")
        assert embedded_beat_running()
    finally:
        beat.stop()

    assert isinstance(beat.service.scheduler, Scheduler)
    check = response.json()["checks"]["beat"]
    assert response.status_code == 200, check
    assert check["ok"] and check["detail"] == "in-process (rundemo)"
    assert 0 <= check["age_seconds"] < 600
    assert not embedded_beat_running()


@pytest.mark.django_db
def test_an_in_process_beat_whose_runs_went_quiet_answers_503(client, settings):
    from config import celery

    settings.REDIS_URL = ""
    beat_ran(seconds_ago=3600)

    class Alive:
        def is_alive(self) -> bool:
            return True

    celery._embedded_beats.append(Alive())
    try:
        response = client.get("/healthz")
    finally:
        celery._embedded_beats.pop()

    assert response.status_code == 503
    assert response.json()["checks"]["beat"]["detail"] == "in-process (rundemo)"


@pytest.mark.django_db
def test_beat_s_heartbeat_makes_it_fresh_before_its_first_sync(client, settings):
    """django-celery-beat writes `last_run_at` only at its syncs (minutes apart): a beat that
    just started is fresh by its heartbeat, which its scheduler records as it ticks."""
    from celery.beat import Service

    from config.beat import Scheduler
    from config.celery import app as celery_app

    settings.REDIS_URL = REFUSED  # production mode's beat check (the broker check fails apart)
    assert client.get("/healthz").json()["checks"]["beat"]["ok"] is False

    scheduler = Service(celery_app, scheduler_cls=Scheduler).get_scheduler(lazy=True)
    scheduler.heartbeat()

    check = client.get("/healthz").json()["checks"]["beat"]
    assert check["ok"] and check["age_seconds"] < 60
    assert not PeriodicTask.objects.exclude(last_run_at=None).exists()  # nothing synced yet
