"""Per-key API rate limits: 429 with Retry-After and rate-limit headers; the config endpoint's
budget is its own; counters are shared through Django's cache (Redis across processes)."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from agents import services
from agents.models import ApiKey
from agents.routing_api import clear_caches

ROOT = Path(__file__).resolve().parent.parent.parent
REDIS = "redis://127.0.0.1:6379/9"


@pytest.fixture(autouse=True)
def small_limits(settings):
    settings.REVERIE_API_RATE_LIMIT = "3/hour"
    settings.REVERIE_CONFIG_RATE_LIMIT = "5/hour"
    clear_caches()
    yield
    clear_caches()


def key_client(workspace, scope="admin") -> APIClient:
    _, raw = services.create_api_key(
        workspace=workspace, name=f"k-{uuid.uuid4().hex[:6]}", scope=scope
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_key_over_its_limit_gets_429_with_retry_after_and_headers(workspace, agent):
    api = key_client(workspace)

    answers = [api.get("/api/v1/agents") for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert [a["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[0]["RateLimit-Limit"] == answers[0]["X-RateLimit-Limit"] == "3"
    assert answers[0]["RateLimit-Policy"] == "3;w=3600"
    refused = answers[3]
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert 1 <= int(refused["RateLimit-Reset"]) <= 3600
    assert refused.json()["error"]["code"] == "throttled"


def test_each_key_has_its_own_budget(workspace, agent):
    first, second = key_client(workspace), key_client(workspace)

    for _ in range(3):
        first.get("/api/v1/agents")

    assert first.get("/api/v1/agents").status_code == 429
    assert second.get("/api/v1/agents").status_code == 200


def test_the_config_endpoint_budget_is_separate_and_its_own(workspace, agent):
    api = key_client(workspace, scope="ingest")
    for _ in range(3):
        api.post("/api/v1/feedback", {}, format="json")  # any answer counts against the budget
    assert api.post("/api/v1/feedback", {}, format="json").status_code == 429

    config = [api.get("/api/v1/agents/support/config?key=u1") for _ in range(6)]

    assert [c.status_code for c in config] == [200] * 5 + [429]
    assert config[0]["RateLimit-Limit"] == "5"
    assert "Retry-After" in config[5]


def test_off_means_no_limit_and_no_headers(workspace, agent, settings):
    settings.REVERIE_API_RATE_LIMIT = "off"
    api = key_client(workspace)

    answers = [api.get("/api/v1/agents") for _ in range(5)]

    assert {a.status_code for a in answers} == {200}
    assert "RateLimit-Limit" not in answers[0]


def test_a_bad_rate_stops_start_up_naming_the_variable():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "REVERIE_API_RATE_LIMIT": "lots"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "REVERIE_API_RATE_LIMIT must look like 1200/min" in result.stderr


def redis_answers() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.mark.skipif(not redis_answers(), reason="needs Redis on 127.0.0.1:6379: the shared cache")
def test_requests_counted_by_another_process_share_the_budget(workspace, agent, settings):
    prefix = "reverie"  # the subprocess's (settings.py); the bucket holds this key's own hash
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS,
            "KEY_PREFIX": prefix,
        }
    }
    api = key_client(workspace)
    assert api.get("/api/v1/agents").status_code == 200
    key_hash = ApiKey.objects.latest("id").key_hash[:24]
    bucket = next(k for k in _redis_keys(prefix) if f":rl:api:key:{key_hash}" in k).split(":", 2)[2]

    # Another web worker (a separate process with the same cache settings) serves two requests.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from agents.throttling import _increment; "
            f"print(_increment({bucket!r}, timeout=60), _increment({bucket!r}, timeout=60))",
        ],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "REVERIE_CACHE_URL": REDIS,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["2", "3"]

    assert api.get("/api/v1/agents").status_code == 429
    import redis

    client = redis.Redis.from_url(REDIS)
    assert 0 < client.ttl(f"{prefix}:1:{bucket}") <= 3600 + 5  # the counter expires with its window
    client.delete(f"{prefix}:1:{bucket}")


def _redis_keys(prefix: str) -> list[str]:
    import redis

    return [k.decode() for k in redis.Redis.from_url(REDIS).keys(f"{prefix}:*")]


OTLP = "/api/otel/v1/traces"


def otlp_post(client, raw_key: str):
    """An empty OTLP/JSON export (`{}`: no spans, a valid request the receiver answers 200)."""
    return client.post(
        OTLP, b"{}", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw_key}"
    )


def raw_key(workspace, scope="ingest") -> str:
    return services.create_api_key(
        workspace=workspace, name=f"k-{uuid.uuid4().hex[:6]}", scope=scope
    )[1]


def test_otlp_exports_are_limited_per_key_with_the_api_headers(client, workspace, settings):
    settings.REVERIE_OTLP_RATE_LIMIT = "2/hour"
    key, other = raw_key(workspace), raw_key(workspace)

    answers = [otlp_post(client, key) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a["RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    assert [a["X-RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    assert answers[0]["RateLimit-Limit"] == answers[0]["X-RateLimit-Limit"] == "2"
    assert answers[0]["RateLimit-Policy"] == "2;w=3600"
    refused = answers[2]
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["code"] == 429  # a google.rpc.Status, as OTLP/HTTP asks
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert int(refused["Retry-After"]) == int(refused["RateLimit-Reset"])
    assert otlp_post(client, other).status_code == 200  # each key has its own budget


def test_the_otlp_budget_is_separate_from_the_api_budget(client, workspace, settings):
    settings.REVERIE_OTLP_RATE_LIMIT = "2/hour"  # the API's is 3/hour (small_limits)
    key = raw_key(workspace)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    for _ in range(3):
        api.post("/api/v1/feedback", {}, format="json")
    assert api.post("/api/v1/feedback", {}, format="json").status_code == 429

    assert [otlp_post(client, key).status_code for _ in range(3)] == [200, 200, 429]


def test_otlp_off_means_no_limit_and_refused_keys_are_not_counted(client, workspace, settings):
    settings.REVERIE_OTLP_RATE_LIMIT = "1/hour"
    read_only = raw_key(workspace, scope="read")
    assert [otlp_post(client, read_only).status_code for _ in range(2)] == [403, 403]

    settings.REVERIE_OTLP_RATE_LIMIT = "off"
    key = raw_key(workspace)
    answers = [otlp_post(client, key) for _ in range(3)]
    assert {a.status_code for a in answers} == {200}
    assert "RateLimit-Limit" not in answers[0]
