"""Agents and config versions over the API: list, create, settings changes with audit, scope."""

from typing import Any

import pytest

from agents.models import Agent, AuditEvent, ConfigVersion
from tests.factories import ConfigVersionFactory

pytestmark = pytest.mark.django_db


def test_agents_are_listed_for_the_callers_workspace_only(api, outsider_api, agent):
    ours = api.get("/api/v1/agents")
    theirs = outsider_api.get("/api/v1/agents")

    assert [a["slug"] for a in ours.json()["results"]] == ["support"]
    assert ours.json()["results"][0]["stable_version"] == 1
    assert "webhook_secret" not in ours.json()["results"][0]
    assert theirs.json()["results"] == []


def test_an_admin_key_creates_an_agent_and_the_audit_log_records_it(api, workspace):
    response = api.post(
        "/api/v1/agents",
        {"slug": "billing", "name": "Billing", "dream_frequency": "weekly"},
        format="json",
    )

    assert response.status_code == 201, response.content
    agent = Agent.objects.get(workspace=workspace, slug="billing")
    assert agent.dream_frequency == "weekly"
    event = AuditEvent.objects.get(action="agent.create")
    assert event.target_id == str(agent.pk)
    assert event.actor_label.startswith("API key tests (rv_")


def test_a_duplicate_slug_is_a_400(api, agent):
    response = api.post("/api/v1/agents", {"slug": "support", "name": "Again"}, format="json")

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["slug"]


def test_a_viewer_session_cannot_create_an_agent(client, viewer, workspace):
    client.force_login(viewer)
    response = client.post(
        "/api/v1/agents", {"slug": "x", "name": "X"}, content_type="application/json"
    )

    assert response.status_code == 403
    assert not Agent.objects.filter(slug="x").exists()


def test_changing_settings_writes_an_audit_event_with_before_and_after(api, agent):
    response = api.patch(
        "/api/v1/agents/support",
        {"failure_threshold": 5, "dream_frequency": "hourly", "webhook_secret": "s3cret"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["failure_threshold"] == 5
    agent.refresh_from_db()
    assert (agent.failure_threshold, agent.dream_frequency) == (5, "hourly")
    event = AuditEvent.objects.get(action="agent.settings")
    assert event.before == {
        "failure_threshold": 20,
        "dream_frequency": "daily",
        "webhook_secret": "",
    }
    assert event.after == {
        "failure_threshold": 5,
        "dream_frequency": "hourly",
        "webhook_secret": "•••",
    }


def test_an_unchanged_patch_writes_no_audit_event(api, agent):
    api.patch("/api/v1/agents/support", {"failure_threshold": 20}, format="json")

    assert not AuditEvent.objects.filter(action="agent.settings").exists()


def test_invalid_settings_are_a_400_and_change_nothing(api, agent):
    response = api.patch(
        "/api/v1/agents/support",
        {"required_approvals": 3, "dream_frequency": "hourly"},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["required_approvals"]
    agent.refresh_from_db()
    assert agent.dream_frequency == "daily"


def test_the_slug_cannot_be_changed(api, agent):
    api.patch("/api/v1/agents/support", {"slug": "renamed"}, format="json")

    assert Agent.objects.filter(slug="support").exists()


def test_a_viewer_session_cannot_patch_an_agent(client, viewer, agent):
    client.force_login(viewer)
    response = client.patch(
        "/api/v1/agents/support", {"failure_threshold": 1}, content_type="application/json"
    )

    assert response.status_code == 403
    agent.refresh_from_db()
    assert agent.failure_threshold == 20


def test_an_owner_session_can_patch_an_agent(client, owner, agent):
    client.force_login(owner)
    response = client.patch(
        "/api/v1/agents/support", {"failure_threshold": 1}, content_type="application/json"
    )

    assert response.status_code == 200
    assert AuditEvent.objects.get(action="agent.settings").actor == owner


def test_set_stable_version_switches_the_stable_version(api, agent):
    ConfigVersionFactory(agent=agent, number=2)
    response = api.patch("/api/v1/agents/support", {"set_stable_version": 2}, format="json")

    assert response.status_code == 200
    assert response.json()["stable_version"] == 2
    agent.refresh_from_db()
    assert agent.stable_version.number == 2
    assert AuditEvent.objects.get(action="agent.set_stable").after["number"] == 2


def test_set_stable_version_to_a_missing_version_changes_nothing(api, agent):
    response = api.patch(
        "/api/v1/agents/support",
        {"set_stable_version": 9, "failure_threshold": 3},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["set_stable_version"]
    agent.refresh_from_db()
    assert (agent.stable_version.number, agent.failure_threshold) == (1, 20)


def test_another_workspace_gets_404_for_our_agent(outsider_api, agent):
    assert outsider_api.get("/api/v1/agents/support").status_code == 404
    patched = outsider_api.patch("/api/v1/agents/support", {"name": "Mine"}, format="json")
    assert patched.status_code == 404
    assert outsider_api.get("/api/v1/agents/support/versions").status_code == 404
    assert outsider_api.get("/api/v1/agents/support/versions/1").status_code == 404
    created = outsider_api.post(
        "/api/v1/agents/support/versions", {"system_prompt": "pwned"}, format="json"
    )
    assert created.status_code == 404
    agent.refresh_from_db()
    assert agent.name == "Support"
    assert agent.versions.count() == 1


# -- Config versions -----------------------------------------------------------------------


def test_creating_a_version_appends_the_next_number_without_touching_stable(api, agent):
    response = api.post(
        "/api/v1/agents/support/versions",
        {
            "system_prompt": "Verify orders first.",
            "memory_documents": {"policies/refunds.md": "30 days"},
            "tools": [{"name": "lookup_order"}],
            "note": "tighter checks",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["number"], body["parent"], body["source"]) == (2, 1, "human")
    version = ConfigVersion.objects.get(agent=agent, number=2)
    assert version.content_hash == ConfigVersion.compute_hash(
        system_prompt="Verify orders first.",
        memory_documents={"policies/refunds.md": "30 days"},
        tools=[{"name": "lookup_order"}],
        model=agent.model,
    )
    assert version.author is None  # created with an API key
    agent.refresh_from_db()
    assert agent.stable_version.number == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"memory_documents": {"a.md": 3}}, "memory_documents"),
        ({"tools": [{"description": "no name"}]}, "tools"),
    ],
)
def test_bad_version_content_is_a_400(api, agent, payload: dict[str, Any], field):
    response = api.post("/api/v1/agents/support/versions", payload, format="json")

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


def test_versions_are_listed_newest_first_and_retrievable(api, agent):
    ConfigVersionFactory(agent=agent, number=2, system_prompt="v2 prompt")

    listed = api.get("/api/v1/agents/support/versions").json()["results"]
    detail = api.get("/api/v1/agents/support/versions/2").json()

    assert [v["number"] for v in listed] == [2, 1]
    assert detail["system_prompt"] == "v2 prompt"
    assert api.get("/api/v1/agents/support/versions/7").status_code == 404


def test_a_viewer_session_cannot_create_a_version(client, viewer, agent):
    client.force_login(viewer)
    response = client.post(
        "/api/v1/agents/support/versions",
        {"system_prompt": "x"},
        content_type="application/json",
    )

    assert response.status_code == 403
    assert agent.versions.count() == 1


def test_sandbox_tools_cannot_be_set_with_an_api_key(api, agent):
    response = api.patch(
        "/api/v1/agents/support", {"sandbox_tools": {"lookup_order": "os.system"}}, format="json"
    )

    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.sandbox_tools == {}


def test_a_model_validation_error_in_a_service_becomes_a_400_in_the_error_shape():
    from django.core.exceptions import ValidationError as DjangoValidationError

    from config.api import exception_handler

    response = exception_handler(DjangoValidationError({"webhook_url": ["Enter a URL."]}), {})

    assert response.status_code == 400
    assert response.data["error"]["fields"] == {"webhook_url": ["Enter a URL."]}


@pytest.mark.parametrize(
    "payload",
    [
        {"memory_documents": {"a\u0000.md": "b"}},
        {"tools": [{"name": "x", "input_schema": "\u0000"}]},
    ],
)
def test_a_nul_character_in_version_content_is_a_400(api, agent, payload):
    response = api.post("/api/v1/agents/support/versions", payload, format="json")

    assert response.status_code == 400
    assert agent.versions.count() == 1


def test_setting_the_stable_version_during_a_rollout_is_refused(api, agent):
    canary = ConfigVersionFactory(agent=agent, number=2)
    ConfigVersionFactory(agent=agent, number=3)
    agent.canary_version, agent.canary_percent = canary, 25
    agent.save(update_fields=["canary_version", "canary_percent"])

    response = api.patch("/api/v1/agents/support", {"set_stable_version": 3}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "rollout_in_progress"
    agent.refresh_from_db()
    assert agent.stable_version.number == 1


def test_a_version_accepts_openai_tool_definitions_as_run_import_does(api, agent):
    openai_tool = {
        "type": "function",
        "function": {
            "name": "get_user_details",
            "description": "Look a user up.",
            "parameters": {"type": "object", "properties": {"user_id": {"type": "string"}}},
        },
    }

    response = api.post(
        "/api/v1/agents/support/versions",
        {"system_prompt": "Airline desk.", "tools": [openai_tool, {"name": "think"}]},
        format="json",
    )

    assert response.status_code == 201, response.content
    version = agent.versions.get(number=response.json()["number"])
    assert version.tools == [
        {
            "name": "get_user_details",
            "input_schema": openai_tool["function"]["parameters"],
            "description": "Look a user up.",
        },
        {"name": "think"},
    ]
    bad = api.post(
        "/api/v1/agents/support/versions",
        {"tools": [{"type": "function", "function": {}}]},
        format="json",
    )
    assert bad.status_code == 400 and "function.name" in bad.content.decode()


def test_pure_tools_and_the_simulated_user_switch_are_agent_settings(api, agent):
    response = api.patch(
        "/api/v1/agents/support",
        {"pure_tools": ["think", "calculate"], "simulated_user": False},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["pure_tools"] == ["think", "calculate"]
    agent.refresh_from_db()
    assert agent.pure_tools == ["think", "calculate"] and agent.simulated_user is False


def test_a_tool_cannot_be_both_pure_and_a_write_tool(api, agent):
    response = api.patch(
        "/api/v1/agents/support",
        {"pure_tools": ["issue_refund"], "write_tools": ["issue_refund"]},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["pure_tools"]
