"""Dreaming fixtures: the model gateway (real when installed) and the seeded demo agent."""

import importlib.util
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from agents.models import Agent

GATEWAY_INSTALLED = importlib.util.find_spec("dreams.llm") is not None


@pytest.fixture(autouse=True)
def dream_gateway(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real gateway once dreams/llm.py exists; until then the temporary stub (see its docstring)."""
    if GATEWAY_INSTALLED:
        from dreams.llm import get_gateway

        return get_gateway()
    from tests.dreams._gateway_stub import StubGateway

    stub = StubGateway()
    monkeypatch.setattr("dreams.dreamer.get_dream_gateway", lambda: stub)
    return stub


@pytest.fixture
def demo_agent(db: Any) -> Agent:
    call_command("seed_demo", "--runs", "160", stdout=StringIO())
    return Agent.objects.select_related("stable_version", "workspace").get(slug="refunds-desk")
