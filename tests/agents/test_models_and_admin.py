"""Invariants of the capture store (immutable versions, hashed keys) and the admin that edits it."""

import hashlib
import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core import serializers
from django.core.exceptions import ValidationError

from agents import services
from agents.models import ApiKey, AuditEvent, ConfigVersion
from tests.factories import ConfigVersionFactory

pytestmark = pytest.mark.django_db


# -- Config versions are immutable ---------------------------------------------------------


def test_saving_an_existing_config_version_raises(agent):
    version = agent.stable_version
    version.system_prompt = "changed in place"

    with pytest.raises(ValidationError):
        version.save()

    assert ConfigVersion.objects.get(pk=version.pk).system_prompt != "changed in place"


def test_a_version_number_is_unique_per_agent(agent):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        ConfigVersionFactory(agent=agent, number=1)


def test_the_content_hash_follows_the_content(agent):
    a = services.create_config_version(agent=agent, system_prompt="A")
    b = services.create_config_version(agent=agent, system_prompt="B")
    a_again = services.create_config_version(agent=agent, system_prompt="A")

    assert [a.number, b.number, a_again.number] == [2, 3, 4]
    assert a.content_hash == a_again.content_hash != b.content_hash


def test_the_admin_shows_an_existing_version_read_only_and_ignores_posts(admin_client, agent):
    version = agent.stable_version
    url = f"/admin/agents/configversion/{version.pk}/change/"

    page = admin_client.get(url)
    admin_client.post(url, {"system_prompt": "edited", "model": "x", "note": "n"})

    assert page.status_code == 200
    assert 'name="system_prompt"' not in page.content.decode()
    version_after = ConfigVersion.objects.get(pk=version.pk)
    assert (version_after.system_prompt, version_after.content_hash) == (
        version.system_prompt,
        version.content_hash,
    )


def test_adding_a_version_in_the_admin_appends_the_next_number(admin_client, admin_user, agent):
    response = admin_client.post(
        "/admin/agents/configversion/add/",
        {
            "agent": agent.pk,
            "system_prompt": "Check the refund window.",
            "memory_documents": "{}",
            "tools": "[]",
            "model": "claude-sonnet-5-5",
            "note": "from admin",
        },
    )

    assert response.status_code == 302, response.content
    version = agent.versions.get(number=2)
    assert (version.system_prompt, version.author, version.parent) == (
        "Check the refund window.",
        admin_user,
        agent.stable_version,
    )


def test_the_agent_admin_changes_settings_through_the_audited_service(admin_client, agent):
    page = admin_client.get(f"/admin/agents/agent/{agent.pk}/change/")
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(
        {
            "workspace": agent.workspace_id,
            "failure_threshold": 7,
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
            "versions-0-id": agent.stable_version.pk,
            "versions-0-agent": agent.pk,
        }
    )
    data = {k: v for k, v in data.items() if v != ""}

    response = admin_client.post(f"/admin/agents/agent/{agent.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    agent.refresh_from_db()
    assert agent.failure_threshold == 7
    event = AuditEvent.objects.get(action="agent.settings")
    assert (event.before, event.after) == ({"failure_threshold": 20}, {"failure_threshold": 7})


# -- API keys are stored hashed ------------------------------------------------------------


def _all_stored_text() -> str:
    """Every column of the tables a key could leak into, as the database returns them."""
    return serializers.serialize("json", [*ApiKey.objects.all(), *AuditEvent.objects.all()])


def test_only_the_sha256_of_a_key_is_stored(workspace):
    key, raw = services.create_api_key(workspace=workspace, name="ci", scope="admin")

    assert raw.startswith("rv_") and len(raw) > 40
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(key.prefix)
    assert raw not in _all_stored_text()
    assert raw[len(key.prefix) :] not in _all_stored_text()


def test_using_a_key_records_when_it_was_last_used(client, workspace, agent):
    key, raw = services.create_api_key(workspace=workspace, name="ci", scope="admin")
    assert key.last_used_at is None

    response = client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_the_admin_shows_a_new_key_once_and_stores_only_its_hash(admin_client, workspace, agent):
    response = admin_client.post(
        "/admin/agents/apikey/add/",
        {"workspace": workspace.pk, "name": "from admin", "scope": "read"},
        follow=True,
    )

    shown = [str(m) for m in get_messages(response.wsgi_request)]
    shown += re.findall(r"rv_[A-Za-z0-9_\-]{20,}", response.content.decode())
    raw = next(re.search(r"rv_[A-Za-z0-9_\-]{20,}", m).group(0) for m in shown if "rv_" in m)
    key = ApiKey.objects.get(name="from admin")
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in _all_stored_text()
    # The key works, and it is not shown again on the next page.
    assert admin_client.get("/admin/agents/apikey/").content.decode().count(raw) == 0
    assert (
        admin_client.get(f"/admin/agents/apikey/{key.pk}/change/").content.decode().count(raw) == 0
    )
    api_response = admin_client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_response.status_code == 200


def test_revoking_in_the_admin_makes_the_key_useless(admin_client, client, workspace, agent):
    key, raw = services.create_api_key(workspace=workspace, name="leaked", scope="admin")

    admin_client.post(
        "/admin/agents/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
    )

    key.refresh_from_db()
    assert key.revoked_at is not None
    assert client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    assert AuditEvent.objects.filter(action="api_key.revoke", target_id=str(key.pk)).exists()


@pytest.mark.parametrize(
    "path",
    [
        "/admin/agents/workspace/",
        "/admin/agents/membership/",
        "/admin/agents/apikey/",
        "/admin/agents/agent/",
        "/admin/agents/configversion/",
        "/admin/agents/run/?q=run-",
        "/admin/agents/feedback/",
        "/admin/agents/auditevent/",
        "/admin/agents/agent/add/",
        "/admin/agents/apikey/add/",
    ],
)
def test_admin_pages_render(admin_client, agent, path: str, **_: Any):
    from tests.factories import FeedbackFactory, RunFactory

    FeedbackFactory(run=RunFactory(agent=agent))
    assert admin_client.get(path).status_code == 200


def test_the_run_admin_keeps_the_recording_read_only(admin_client, agent):
    from tests.factories import RunFactory

    run = RunFactory(agent=agent, status="failure")
    url = f"/admin/agents/run/{run.pk}/change/"
    page = admin_client.get(url).content.decode()

    response = admin_client.post(
        url,
        {
            "status": "success",
            "outcome_reason": "relabelled",
            "tags": "[]",
            "expectations": "{}",
            "graded_on": "both",
            "messages": "[]",
            "feedback-TOTAL_FORMS": "0",
            "feedback-INITIAL_FORMS": "0",
        },
    )

    assert 'name="messages"' not in page
    assert response.status_code == 302, response.context["adminform"].form.errors
    run.refresh_from_db()
    assert (run.status, run.outcome_reason) == ("success", "relabelled")
    assert run.messages[0]["content"][0]["text"] == "Where is my order?"
