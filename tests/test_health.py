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
