"""End to end: what the config endpoint answers as a rollout starts, advances and halts."""

from datetime import timedelta

import pytest

from agents.routing_api import clear_caches
from rollouts import services
from tests.rollouts.fixtures import approved_proposal

pytestmark = pytest.mark.django_db

KEYS = [f"customer-{i}" for i in range(600)]


@pytest.fixture(autouse=True)
def fresh_routing(settings):
    settings.REVERIE_CONFIG_ROUTING_CACHE_SECONDS = 0
    clear_caches()


def arms(api, slug):
    return {k: api.get(f"/api/v1/agents/{slug}/config?key={k}").json()["version"] for k in KEYS}


def test_the_endpoint_follows_the_rollout_and_keys_stay_in_the_canary(api, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=0, min_duration=timedelta(0)
    )
    candidate = rollout.to_version.number
    at_5 = {k for k, v in arms(api, agent.slug).items() if v == candidate}
    services.approve_stage(rollout_id=rollout.pk, actor=owner)
    at_25 = {k for k, v in arms(api, agent.slug).items() if v == candidate}
    assert at_5 < at_25  # every key in the canary at 5% is still there at 25%
    assert 0.01 < len(at_5) / len(KEYS) < 0.10 and 0.18 < len(at_25) / len(KEYS) < 0.32
    assert api.get(f"/api/v1/agents/{agent.slug}/config").json()["version"] == 1  # no key

    services.halt_rollout(rollout_id=rollout.pk, actor=owner, reason="test")
    assert set(arms(api, agent.slug).values()) == {1}


def test_completing_a_rollout_serves_the_candidate_to_everyone(api, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=0, min_duration=timedelta(0)
    )
    for _ in range(3):
        services.approve_stage(rollout_id=rollout.pk, actor=owner)
    answer = api.get(f"/api/v1/agents/{agent.slug}/config").json()
    assert (answer["arm"], answer["version"]) == ("stable", rollout.to_version.number)
