"""Dreaming fixtures: the seeded demo agent and the loopback fake Messages API."""

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from agents.models import Agent
from tests.fake_anthropic import fake_anthropic, fake_gateway_settings  # noqa: F401
from tests.ports import port


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


def sandbox_port(offset: int = 0) -> int:
    """A port in this helper's range (18640–18659), one per xdist worker."""
    import os

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return port(18640 + 4 * int(worker.removeprefix("gw") or 0) + offset)


@pytest.fixture(scope="session")
def access_sandbox() -> Any:
    """The project's own MCP sandbox (the access desk's), served on loopback for the session."""
    from dreams.demo_desk.sandbox import SandboxServer

    with SandboxServer(port=sandbox_port()) as server:
        yield server


@pytest.fixture
def loopback_environments(settings: Any) -> None:
    """Loopback environment URLs are allowed, as a staging allow-list would allow them."""
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = ["127.0.0.1"]
