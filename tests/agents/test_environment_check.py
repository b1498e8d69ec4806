"""The admin's "Test connection" for an agent's sandbox environment URL: checked like every
environment URL (SSRF), one MCP session opened, its tools listed and compared with the agent's;
a refused, unreachable or non-MCP URL is a clear error. Against the project's own MCP sandbox
(dreams/demo_desk/sandbox.py) on loopback, and against a port nobody listens on."""

import os
import socket

import pytest
from django.contrib.auth import get_user_model

from agents.environment_probe import probe_environment
from tests.factories import ConfigVersionFactory

pytestmark = pytest.mark.django_db

CHECK_URL = "/admin/agents/agent/environment-check/"


def _port(offset: int) -> int:
    """A port in this helper's range (18800–18899), apart per xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 18800 + 10 * int(worker.removeprefix("gw") or 0) + offset


@pytest.fixture(scope="module")
def sandbox():
    from dreams.demo_desk.sandbox import SandboxServer

    with SandboxServer(port=_port(0)) as server:
        yield server


@pytest.fixture
def loopback(settings):
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def closed_port() -> int:
    """A port in range with nothing listening on it."""
    port = _port(5)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is in use"
    return port


def test_the_sandbox_answers_with_its_tools_and_both_reverie_tools(sandbox, loopback):
    probe = probe_environment(sandbox.url, agent_tools=["lookup_employee", "lookup_order"])
    assert probe.ok, probe.error
    assert probe.tools == [
        "get_access_policy",
        "grant_access",
        "lookup_employee",
        "reverie_check",
        "reverie_reset",
    ]
    assert probe.has_reset and probe.has_check
    assert probe.missing == ["lookup_order"]


def test_an_unreachable_port_is_a_clear_error(loopback, closed_port, settings):
    settings.REVERIE_ENVIRONMENT_TIMEOUT_SECONDS = 5
    probe = probe_environment(f"http://127.0.0.1:{closed_port}/mcp")
    assert not probe.ok and probe.tools == []
    assert probe.error.startswith(f"Nothing answers at 127.0.0.1:{closed_port}")
    assert "ConnectError" in probe.error


def test_a_loopback_url_outside_the_allow_list_is_refused_before_connecting(sandbox, settings):
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = []
    probe = probe_environment(sandbox.url)
    assert not probe.ok
    assert "private, loopback or reserved" in probe.error
    assert "REVERIE_ENVIRONMENT_ALLOWED_HOSTS" in probe.error


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "Enter the environment URL first."),
        ("ftp://example.org/mcp", "http(s)"),
        ("http://169.254.169.254/latest", "private, loopback or reserved"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url, says):
    probe = probe_environment(url)
    assert not probe.ok and says in probe.error


def test_a_server_that_is_not_mcp_is_a_clear_error(live_server, loopback, settings):
    settings.REVERIE_ENVIRONMENT_TIMEOUT_SECONDS = 5
    probe = probe_environment(live_server.url + "/healthz")
    assert not probe.ok and probe.error.startswith("Cannot open an MCP session")


def test_the_admin_action_reports_the_tools_and_what_the_agent_lacks(
    admin_client, agent, sandbox, loopback
):
    version = ConfigVersionFactory(
        agent=agent, number=2, tools=[{"name": "lookup_employee"}, {"name": "issue_refund"}]
    )
    agent.stable_version = version
    agent.save(update_fields=["stable_version"])
    page = admin_client.get(f"/admin/agents/agent/{agent.pk}/change/").content.decode()
    assert f'data-environment-check="{CHECK_URL}"' in page
    assert f'data-agent="{agent.pk}"' in page and "agents/environment_check.js" in page

    response = admin_client.post(CHECK_URL, {"environment_url": sandbox.url, "agent": agent.pk})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Connected." in html and "5 tools" in html
    assert "<code>reverie_reset</code> offered" in html
    assert "<code>reverie_check</code> offered" in html
    assert "does not serve: <code>issue_refund</code>" in html
    agent.refresh_from_db()
    assert agent.environment_url == ""  # a test, not a save


def test_the_admin_action_shows_an_unreachable_port_as_failed(
    admin_client, loopback, closed_port, settings
):
    settings.REVERIE_ENVIRONMENT_TIMEOUT_SECONDS = 5
    response = admin_client.post(
        CHECK_URL, {"environment_url": f"http://127.0.0.1:{closed_port}/mcp"}
    )
    html = response.content.decode()
    assert response.status_code == 200 and "Connection failed." in html
    assert "ConnectError" in html and 'role="alert"' in html


def test_the_admin_action_escapes_what_the_server_or_the_url_says(admin_client):
    response = admin_client.post(CHECK_URL, {"environment_url": "ftp://<script>x</script>/"})
    assert b"<script>" not in response.content


def test_only_staff_who_may_edit_agents_can_probe(client, admin_client, workspace):
    assert admin_client.get(CHECK_URL).status_code == 405
    assert client.post(CHECK_URL, {"environment_url": "http://x"}).status_code == 302  # login
    staff = get_user_model().objects.create_user("stan", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.post(CHECK_URL, {"environment_url": "http://x"}).status_code == 403
