"""Shared fixtures: the fixed cast (owner, reviewer, viewer, outsider) and API clients."""

import asyncio
import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents import services
from agents.models import Membership
from config.celery import app as celery_app
from tests.factories import (
    AgentFactory,
    ConfigVersionFactory,
    MembershipFactory,
    UserFactory,
    WorkspaceFactory,
)

# Fixtures of the loopback Managed Agents fake (fake_managed, managed_link).
pytest_plugins = ["tests.fake_managed"]


@pytest.fixture(autouse=True)
def eager_celery() -> Any:
    """Tasks run in-process in tests (a dedicated test covers a real Redis worker)."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def no_leftover_event_loop(request: Any) -> Any:
    """Outside the browser tests, no event loop runs in the test's thread, as in a worker or a
    request: Playwright's sync API (session-scoped in tests/browser) leaves its loop set as
    running in this thread, and `async_to_sync` in product code then refuses to run."""
    if request.node.get_closest_marker("browser") or asyncio._get_running_loop() is None:
        yield
        return
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(loop)


@pytest.fixture(autouse=True)
def fresh_cache_namespace(settings: Any) -> None:
    """Rate-limit and sign-in counters start at zero in each test, without flushing a Redis
    database that other test processes (and their brokers) share: a key prefix per test."""
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = caches


@pytest.fixture
def workspace(db: Any) -> Any:
    return WorkspaceFactory(name="Northwind", slug="northwind")


@pytest.fixture
def other_workspace(db: Any) -> Any:
    return WorkspaceFactory(name="Elsewhere", slug="elsewhere")


def _member(workspace: Any, username: str, role: str) -> Any:
    user = UserFactory(username=username)
    MembershipFactory(user=user, workspace=workspace, role=role)
    return user


@pytest.fixture
def owner(workspace: Any) -> Any:
    return _member(workspace, "olive-owner", Membership.Role.ADMIN)


@pytest.fixture
def reviewer(workspace: Any) -> Any:
    return _member(workspace, "riley-reviewer", Membership.Role.REVIEWER)


@pytest.fixture
def second_reviewer(workspace: Any) -> Any:
    return _member(workspace, "sam-reviewer", Membership.Role.REVIEWER)


@pytest.fixture
def viewer(workspace: Any) -> Any:
    return _member(workspace, "vic-viewer", Membership.Role.VIEWER)


@pytest.fixture
def outsider(other_workspace: Any) -> Any:
    return _member(other_workspace, "otto-outsider", Membership.Role.ADMIN)


@pytest.fixture
def agent(workspace: Any) -> Any:
    agent = AgentFactory(workspace=workspace, slug="support", name="Support")
    version = ConfigVersionFactory(agent=agent, number=1)
    agent.stable_version = version
    agent.save(update_fields=["stable_version"])
    return agent


@pytest.fixture
def api_key(workspace: Any) -> str:
    _, raw = services.create_api_key(workspace=workspace, name="tests", scope="admin")
    return raw


@pytest.fixture
def api(api_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return client


@pytest.fixture
def outsider_api(other_workspace: Any) -> APIClient:
    _, raw = services.create_api_key(workspace=other_workspace, name="outsider", scope="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client
