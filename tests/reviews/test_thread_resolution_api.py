"""Resolving and reopening a review thread over the API: the page's service and scoping, the
audit row, the permission table, a 400 that names the field, and the schema."""

import pytest
from rest_framework.test import APIClient

from agents import services as agent_services
from agents.models import AuditEvent
from reviews import services
from reviews.models import ReviewComment
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db

DOC = "policies/refunds.md"


@pytest.fixture
def proposal(agent):
    return reviewable_proposal(agent=agent, runs=1)


@pytest.fixture
def thread(proposal, reviewer):
    return services.comment_on_proposal(
        proposal_id=proposal.pk, author=reviewer, body="Which window?", document=DOC, line="R4"
    )


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _url(proposal, comment) -> str:
    return f"/api/v1/proposals/{proposal.pk}/comments/{comment.pk}/resolution"


def test_a_reviewer_resolves_then_reopens_a_thread_and_both_are_audited(
    second_reviewer, proposal, thread
):
    client = _client(second_reviewer)
    resolved = client.post(_url(proposal, thread), {"resolved": True}, format="json")
    assert resolved.status_code == 200, resolved.json()
    body = resolved.json()
    assert body["id"] == thread.pk and body["resolved_at"]
    assert body["resolved_by"] == second_reviewer.username
    thread.refresh_from_db()
    assert thread.resolved_by == second_reviewer
    event = AuditEvent.objects.get(action="proposal.thread_resolve")
    assert event.actor == second_reviewer and event.after["comment"] == thread.pk

    reopened = client.post(_url(proposal, thread), {"resolved": False}, format="json")
    assert reopened.status_code == 200
    assert reopened.json()["resolved_at"] is None and reopened.json()["resolved_by"] is None
    thread.refresh_from_db()
    assert thread.resolved_at is None
    assert AuditEvent.objects.filter(action="proposal.thread_reopen").count() == 1
    # The page shows what the API did: no resolved note, one open thread.
    assert "1 open review thread" in _page(second_reviewer, proposal)


def _page(user, proposal) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.get(f"/proposals/{proposal.pk}/").content.decode()


@pytest.mark.parametrize(
    ("who", "expected"),
    [("owner", 200), ("reviewer", 200), ("viewer", 403), ("outsider", 404), ("anonymous", 401)],
)
def test_who_may_resolve_a_thread(request, who, expected, proposal, thread):
    client = APIClient() if who == "anonymous" else _client(request.getfixturevalue(who))
    response = client.post(_url(proposal, thread), {"resolved": True}, format="json")
    assert response.status_code in ({401, 403} if who == "anonymous" else {expected})
    thread.refresh_from_db()
    assert bool(thread.resolved_at) == (expected == 200)


def test_an_admin_key_resolves_as_its_creator_and_a_read_key_is_refused(
    workspace, owner, proposal, thread
):
    _, admin_raw = agent_services.create_api_key(
        workspace=workspace, name="ci", scope="admin", created_by=owner
    )
    _, read_raw = agent_services.create_api_key(
        workspace=workspace, name="ro", scope="read", created_by=owner
    )
    read = APIClient()
    read.credentials(HTTP_AUTHORIZATION=f"Bearer {read_raw}")
    assert read.post(_url(proposal, thread), {"resolved": True}, format="json").status_code == 403
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_raw}")
    response = admin.post(_url(proposal, thread), {"resolved": True}, format="json")
    assert response.status_code == 200 and response.json()["resolved_by"] == owner.username


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_a_resolved_that_is_not_a_json_boolean_is_a_400_naming_the_field(
    reviewer, proposal, thread, value
):
    response = _client(reviewer).post(_url(proposal, thread), {"resolved": value}, format="json")
    assert response.status_code == 400
    assert "resolved" in response.json()["error"]["fields"]
    thread.refresh_from_db()
    assert thread.resolved_at is None


def test_a_missing_resolved_is_a_400_naming_the_field(reviewer, proposal, thread):
    response = _client(reviewer).post(_url(proposal, thread), {}, format="json")
    assert response.status_code == 400 and "resolved" in response.json()["error"]["fields"]


def test_a_reply_is_not_a_thread_and_another_proposals_comment_is_not_found(
    agent, reviewer, proposal, thread
):
    reply = services.comment_on_proposal(
        proposal_id=proposal.pk, author=reviewer, body="The 30 days.", reply_to_id=thread.pk
    )
    client = _client(reviewer)
    response = client.post(_url(proposal, reply), {"resolved": True}, format="json")
    assert response.status_code == 400 and "comment_id" in response.json()["error"]["fields"]
    other = reviewable_proposal(agent=agent, runs=1)
    assert client.post(_url(other, thread), {"resolved": True}, format="json").status_code == 404
    assert not ReviewComment.objects.filter(resolved_at__isnull=False).exists()


def test_the_schema_documents_the_resolution_endpoint():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/proposals/{id}/comments/{comment_id}/resolution"]["post"]
    assert {"200", "400", "403", "404"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert component["properties"]["resolved"]["type"] == "boolean"
    assert component["required"] == ["resolved"]
