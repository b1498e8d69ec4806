"""The admin's "Test connection" beside an agent's environment URL, in the browser: the project's
MCP sandbox answers with its tools; a port nobody listens on is a clear failure."""

import os
import socket

import pytest
from playwright.sync_api import expect

from agents.models import Membership
from tests.factories import ConfigVersionFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.browser


def _port(offset: int) -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 18800 + 10 * int(worker.removeprefix("gw") or 0) + offset


@pytest.fixture
def sandbox():
    from dreams.demo_desk.sandbox import SandboxServer

    with SandboxServer(port=_port(1)) as server:
        yield server


def test_test_connection_lists_the_tools_then_reports_an_unreachable_port(
    page, live_server, login, shot, agent, sandbox, settings
):
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.REVERIE_ENVIRONMENT_TIMEOUT_SECONDS = 5
    version = ConfigVersionFactory(
        agent=agent, number=2, tools=[{"name": "lookup_employee"}, {"name": "issue_refund"}]
    )
    agent.stable_version = version
    agent.save(update_fields=["stable_version"])
    admin = UserFactory(username="ada-admin", is_staff=True, is_superuser=True)
    MembershipFactory(user=admin, workspace=agent.workspace, role=Membership.Role.ADMIN)
    login("ada-admin")
    page.goto(f"{live_server.url}/admin/agents/agent/{agent.pk}/change/")
    page.fill("input[name=environment_url]", sandbox.url)
    page.click("text=Test connection")
    result = page.locator(".environment-check-result")
    expect(result.locator(".environment-check.ok")).to_be_visible()
    expect(result).to_contain_text("5 tools")
    expect(result.locator("#check-reset")).to_contain_text("reverie_reset offered")
    expect(result.locator("#check-missing")).to_contain_text("issue_refund")
    result.scroll_into_view_if_needed()
    shot("admin-environment-ok")

    port = _port(6)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    page.fill("input[name=environment_url]", f"http://127.0.0.1:{port}/mcp")
    page.click("text=Test connection")
    expect(result.locator(".environment-check.failed")).to_contain_text("ConnectError")
    shot("admin-environment-failed")
    agent.refresh_from_db()
    assert agent.environment_url == ""  # testing saves nothing
