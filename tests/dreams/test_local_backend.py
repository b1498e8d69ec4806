"""REVERIE_MODEL_BACKEND=local: reached as Claude is (base URL, a dummy key), priced at $0,
labelled "local model" on pages. The loopback fake stands in for the adapter."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from dreams import cycles
from dreams.llm import get_gateway
from dreams.models import DreamCycle, ModelCall

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_settings(fake_anthropic: Any, settings: Any) -> Any:
    settings.REVERIE_MODEL_BACKEND = "local"
    settings.ANTHROPIC_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = fake_anthropic.url
    settings.REVERIE_MODEL_MAX_RETRIES = 0
    return fake_anthropic


def test_local_calls_go_to_the_base_url_with_a_dummy_key_and_cost_nothing(agent, local_settings):
    get_gateway().create_message(
        agent=agent,
        purpose="dream",
        model="claude-sonnet-5-5",
        messages=[{"role": "user", "content": "Hello"}],
    )

    (request,) = local_settings.message_requests
    assert request.headers.get("authorization") == "Bearer local"
    call = ModelCall.objects.get(agent=agent)
    assert call.backend == "local" and call.ok and call.input_tokens > 0
    assert call.cost_usd == 0  # a priced model name, but the local backend spends nothing


def test_pages_say_local_model(demo_agent, local_settings, client):
    cycle = cycles.start_cycle(agent=demo_agent, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)
    cycles.run_cycle(cycle_id=cycle.pk)
    client.force_login(get_user_model().objects.get(username="demo"))

    html = client.get(f"/dreams/{cycle.pk}/").content.decode()

    assert "Local model." in html  # the banner
    assert '<span class="pill pill-sim">local model</span>' in html
    assert "(the local model costs nothing)" in html
    assert "simulated model" not in html
