"""Dreaming fixtures: the seeded demo agent and the loopback fake Messages API."""

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from agents.models import Agent
from tests.fake_anthropic import fake_anthropic, fake_gateway_settings  # noqa: F401


@pytest.fixture
def demo_agent(db: Any) -> Agent:
    call_command("seed_demo", "--runs", "160", "--no-dream", stdout=StringIO())
    return Agent.objects.select_related("stable_version", "workspace").get(slug="refunds-desk")


@pytest.fixture
def dream_gateway(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real gateway, pinned so a test can wrap its methods and watch the dreamer's calls."""
    from dreams.llm import get_gateway

    gateway = get_gateway()
    monkeypatch.setattr("dreams.dreamer.get_dream_gateway", lambda: gateway)
    return gateway
