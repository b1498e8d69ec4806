"""An agent's sandbox environment URL is checked like a webhook target: a clear 400 naming
`environment_url` for a bad scheme, a missing host, or a private / loopback address outside
REVERIE_ENVIRONMENT_ALLOWED_HOSTS; a listed staging host is accepted."""

import pytest

from agents.models import Agent, environment_url_problem
from agents.targets import TargetRefused, resolve_target

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://staging.example/mcp", "http(s)"),
        ("not a url", "Enter a valid URL"),
        ("http://127.0.0.1:8765/mcp", "REVERIE_ENVIRONMENT_ALLOWED_HOSTS"),
        ("http://10.1.2.3/mcp", "private, loopback or reserved"),
        ("http://[::1]:8765/mcp", "private, loopback or reserved"),
        ("http://169.254.169.254/latest", "private, loopback or reserved"),
        ("http://[::ffff:192.168.0.1]/mcp", "private, loopback or reserved"),
    ],
)
def test_a_bad_environment_url_is_a_400_naming_the_field(api, agent, url, says):
    response = api.patch("/api/v1/agents/support", {"environment_url": url}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == ["environment_url"]
    assert says in error["fields"]["environment_url"][0]
    agent.refresh_from_db()
    assert agent.environment_url == ""


def test_a_public_environment_url_is_accepted_and_audited(api, agent):
    response = api.patch(
        "/api/v1/agents/support", {"environment_url": "https://93.184.216.34/mcp"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["environment_url"] == "https://93.184.216.34/mcp"
    agent.refresh_from_db()
    assert agent.environment_url == "https://93.184.216.34/mcp"


def test_the_allow_list_admits_a_private_staging_host(api, agent, settings):
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = ["10.0.0.0/8", "127.0.0.1"]

    for url in ("http://10.1.2.3/mcp", "http://127.0.0.1:8765/mcp"):
        response = api.patch("/api/v1/agents/support", {"environment_url": url}, format="json")
        assert response.status_code == 200, response.json()
    # Networks and addresses in the list, nothing else: another private range stays refused.
    response = api.patch(
        "/api/v1/agents/support", {"environment_url": "http://192.168.1.9/mcp"}, format="json"
    )
    assert response.status_code == 400


def test_clearing_the_environment_url_is_allowed(api, agent):
    Agent.objects.filter(pk=agent.pk).update(environment_url="https://93.184.216.34/mcp")

    response = api.patch("/api/v1/agents/support", {"environment_url": ""}, format="json")

    assert response.status_code == 200
    assert response.json()["environment_url"] == ""


def test_the_model_check_guards_the_admin_and_services_too(settings):
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = []
    assert "private" in environment_url_problem("http://127.0.0.1/mcp")
    assert environment_url_problem("https://93.184.216.34/mcp") == ""


def test_webhooks_and_environments_share_one_target_check(settings):
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(TargetRefused, match="REVERIE_WEBHOOKS_ALLOW_PRIVATE"):
        resolve_target("http://127.0.0.1:9/hooks")
    assert resolve_target("http://127.0.0.1:9/x", allowed_hosts=["127.0.0.0/8"])[1] == "127.0.0.1"
