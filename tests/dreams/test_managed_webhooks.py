"""Anthropic webhook receiver: Standard Webhooks signatures verified with the SDK's unwrap."""

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from agents.models import Run
from dreams.managed.models import ManagedWebhookEvent
from tests.fake_managed import chat_turns, failed_outcome

pytestmark = pytest.mark.django_db

SECRET = "whsec_" + base64.b64encode(b"reverie-test-secret-32-bytes-long!").decode()
URL = "/api/v1/managed/webhooks"


@pytest.fixture(autouse=True)
def signing_secret(settings):
    settings.REVERIE_MANAGED_WEBHOOK_SECRET = SECRET


def payload(
    session_id: str, kind: str = "session.outcome_evaluation_ended", event_id: str = "wevt_01"
) -> str:
    return json.dumps(
        {
            "type": "event",
            "id": event_id,
            "created_at": "2026-05-01T12:00:00Z",
            "data": {
                "type": kind,
                "id": session_id,
                "organization_id": "org_1",
                "workspace_id": "wrkspc_1",
            },
        }
    )


def signed_headers(body: str, secret: str = SECRET) -> dict[str, str]:
    ts = int(time.time())
    signature = Webhook(secret).sign(
        msg_id="msg_1", timestamp=datetime.fromtimestamp(ts, tz=UTC), data=body
    )
    return {
        "HTTP_WEBHOOK_ID": "msg_1",
        "HTTP_WEBHOOK_TIMESTAMP": str(ts),
        "HTTP_WEBHOOK_SIGNATURE": signature,
    }


def post(body: str, headers: dict[str, str]):
    return APIClient().post(URL, data=body, content_type="application/json", **headers)


def test_a_signed_outcome_event_syncs_that_session(
    managed_link, fake_managed, django_capture_on_commit_callbacks
):
    session = fake_managed.add_session(
        agent_id=managed_link.managed_agent_id,
        turns=chat_turns("Refund?", "No."),
        outcome=failed_outcome("Refused a valid refund."),
    )
    body = payload(session)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(body, signed_headers(body))

    assert response.status_code == 202, response.content
    run = Run.objects.get(agent=managed_link.agent, external_id=session)
    assert run.status == Run.Status.FAILURE
    assert run.outcome_reason == "Refused a valid refund."
    event = ManagedWebhookEvent.objects.get()
    assert event.link_id == managed_link.pk and event.processed_at is not None


def test_a_tampered_body_is_rejected_and_nothing_is_stored(managed_link, fake_managed):
    session = fake_managed.add_session(
        agent_id=managed_link.managed_agent_id, turns=chat_turns("Q", "A"), outcome=failed_outcome()
    )
    body = payload(session)
    headers = signed_headers(body)

    response = post(body.replace(session, "sesn_evil"), headers)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert ManagedWebhookEvent.objects.count() == 0
    assert Run.objects.count() == 0
    assert fake_managed.requests == []


def test_a_wrong_secret_or_missing_headers_is_rejected(managed_link):
    body = payload("sesn_1")
    other = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!!").decode()
    assert post(body, signed_headers(body, secret=other)).status_code == 400
    assert post(body, {}).status_code == 400
    assert ManagedWebhookEvent.objects.count() == 0


def test_a_redelivered_event_is_recorded_once(
    managed_link, fake_managed, django_capture_on_commit_callbacks
):
    session = fake_managed.add_session(
        agent_id=managed_link.managed_agent_id,
        turns=chat_turns("Q", "A"),
        outcome=failed_outcome(),
    )
    body = payload(session, kind="session.status_idled")
    with django_capture_on_commit_callbacks(execute=True):
        first = post(body, signed_headers(body))
        second = post(body, signed_headers(body))

    assert first.json()["queued"] is True
    assert second.json()["duplicate"] is True
    assert ManagedWebhookEvent.objects.count() == 1
    assert Run.objects.filter(external_id=session).count() == 1


def test_events_that_need_no_sync_are_acknowledged_without_work(managed_link, fake_managed):
    body = payload("agent_1", kind="agent.updated")
    response = post(body, signed_headers(body))
    assert response.status_code == 202 and response.json()["queued"] is False
    assert ManagedWebhookEvent.objects.count() == 0
    assert fake_managed.requests == []


def test_without_a_signing_secret_the_receiver_refuses(settings):
    settings.REVERIE_MANAGED_WEBHOOK_SECRET = ""
    body = payload("sesn_1")
    response = post(body, signed_headers(body))
    assert response.status_code == 503
    assert ManagedWebhookEvent.objects.count() == 0
