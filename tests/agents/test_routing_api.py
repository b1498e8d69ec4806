"""The config endpoint: routing, tenancy and auth, ETag / 304, the kill switch."""

import pytest
from django.utils import timezone

from agents.models import ApiKey
from agents.routing import in_canary
from agents.routing_api import clear_caches
from tests.factories import ConfigVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_caches(settings):
    settings.REVERIE_CONFIG_ROUTING_CACHE_SECONDS = 0
    clear_caches()
    yield
    clear_caches()


def url(slug: str = "support", key: str | None = None) -> str:
    base = f"/api/v1/agents/{slug}/config"
    return f"{base}?key={key}" if key is not None else base


@pytest.fixture
def canary_agent(agent):
    canary = ConfigVersionFactory(
        agent=agent,
        number=2,
        system_prompt="Cite the order number.",
        memory_documents={"faq.md": "x"},
    )
    agent.canary_version = canary
    agent.canary_percent = 25
    agent.save(update_fields=["canary_version", "canary_percent"])
    return agent


def keys_by_arm(agent, n=200):
    canary = [
        f"k{i}"
        for i in range(n)
        if in_canary(salt=agent.routing_salt, key=f"k{i}", percent=agent.canary_percent)
    ]
    stable = [f"k{i}" for i in range(n) if f"k{i}" not in set(canary)]
    return stable, canary


def test_a_request_without_an_api_key_is_401(client, agent):
    response = client.get(url())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_or_revoked_key_is_401(api, api_key, agent):
    from rest_framework.test import APIClient

    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Bearer rv_not-a-real-key")
    assert stranger.get(url()).status_code == 401
    assert api.get(url()).status_code == 200
    ApiKey.objects.update(revoked_at=timezone.now())
    clear_caches()  # otherwise revocation takes effect within REVERIE_CONFIG_AUTH_CACHE_SECONDS
    assert api.get(url()).status_code == 401


def test_another_workspaces_agent_is_404(outsider_api, agent):
    response = outsider_api.get(url())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_logged_in_user_without_a_key_is_401(client, owner, agent):
    client.force_login(owner)
    assert client.get(url()).status_code == 401


def test_the_answer_carries_everything_needed_to_run_the_version(api, canary_agent):
    stable_keys, canary_keys = keys_by_arm(canary_agent)
    body = api.get(url(key=canary_keys[0])).json()
    assert body["arm"] == "canary"
    assert body["version"] == 2
    assert body["system_prompt"] == "Cite the order number."
    assert body["memory_documents"] == {"faq.md": "x"}
    assert body["tools"] == [] and body["model"] == "claude-sonnet-5-5"
    assert body["content_hash"] == canary_agent.canary_version.content_hash
    stable = api.get(url(key=stable_keys[0])).json()
    assert (stable["arm"], stable["version"]) == ("stable", 1)


def test_a_key_gets_the_same_arm_every_time_and_no_key_gets_stable(api, canary_agent):
    _, canary_keys = keys_by_arm(canary_agent)
    arms = {api.get(url(key=canary_keys[0])).json()["arm"] for _ in range(5)}
    assert arms == {"canary"}
    assert api.get(url()).json()["arm"] == "stable"


def test_the_split_seen_through_the_endpoint_matches_the_percent(api, canary_agent):
    arms = [api.get(url(key=f"user-{i}")).json()["arm"] for i in range(400)]
    share = arms.count("canary") / len(arms)
    # 25% of 400: binomial sd is 2.2 points; 4 sd either side.
    assert 0.16 < share < 0.34


def test_if_none_match_with_the_etag_answers_304(api, canary_agent):
    first = api.get(url(key="someone"))
    etag = first["ETag"]
    assert etag.startswith('"') and first["Cache-Control"] == "private, no-cache"
    again = api.get(url(key="someone"), HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    assert api.get(url(key="someone"), HTTP_IF_NONE_MATCH=f"W/{etag}").status_code == 304
    assert api.get(url(key="someone"), HTTP_IF_NONE_MATCH='"stale"').status_code == 200


def test_the_etag_changes_when_the_key_moves_to_another_version(api, canary_agent):
    stable_keys, _ = keys_by_arm(canary_agent)
    key = stable_keys[0]
    etag = api.get(url(key=key))["ETag"]
    canary_agent.canary_percent = 100
    canary_agent.save(update_fields=["canary_percent"])
    moved = api.get(url(key=key), HTTP_IF_NONE_MATCH=etag)
    assert moved.status_code == 200
    assert moved.json()["arm"] == "canary"
    assert moved["ETag"] != etag


def test_a_paused_agent_answers_423_with_an_actionable_body(api, agent):
    agent.is_paused = True
    agent.save(update_fields=["is_paused"])
    response = api.get(url(key="someone"))
    assert response.status_code == 423
    assert response.json()["error"]["code"] == "agent_paused"
    assert int(response["Retry-After"]) > 0


def test_an_agent_without_a_stable_version_answers_409(api, agent):
    agent.stable_version = None
    agent.save(update_fields=["stable_version"])
    response = api.get(url())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_stable_version"


def test_the_endpoint_is_in_the_schema(client):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/agents/{slug}/config"]["get"]
    assert {"200", "304", "401", "404", "423"} <= set(operation["responses"])


def test_a_routing_change_is_served_within_the_routing_cache_bound(api, canary_agent, settings):
    stable_keys, _ = keys_by_arm(canary_agent)
    key = stable_keys[0]
    settings.REVERIE_CONFIG_ROUTING_CACHE_SECONDS = 0.3
    assert api.get(url(key=key)).json()["arm"] == "stable"
    canary_agent.canary_percent = 100
    canary_agent.save(update_fields=["canary_percent"])
    assert api.get(url(key=key)).json()["arm"] == "stable"  # still inside the bound
    import time

    time.sleep(0.35)
    assert api.get(url(key=key)).json()["arm"] == "canary"


def test_the_config_endpoint_makes_at_most_one_query_when_warm(
    api, canary_agent, django_assert_num_queries
):
    api.get(url(key="warm"))
    with django_assert_num_queries(1):
        assert api.get(url(key="warm")).status_code == 200


def test_revocation_is_immediate_when_the_key_cache_is_off(api, agent, settings):
    settings.REVERIE_CONFIG_AUTH_CACHE_SECONDS = 0
    assert api.get(url()).status_code == 200
    ApiKey.objects.update(revoked_at=timezone.now())
    assert api.get(url()).status_code == 401
