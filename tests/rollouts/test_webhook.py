"""A halt sends a Standard Webhooks–signed event to the agent's URL, after commit."""

import base64
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from reviews.notifications import TargetRefused, resolve_target
from rollouts import services
from tests.rollouts.fixtures import approved_proposal

pytestmark = pytest.mark.django_db

SECRET = "whsec_" + base64.b64encode(b"reverie-rollout-webhook-secret!!").decode()


@pytest.fixture
def receiver():
    received: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks", received
    server.shutdown()


def test_a_halt_posts_a_signed_event_after_commit(
    agent, owner, receiver, settings, django_capture_on_commit_callbacks
):
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = True
    url, received = receiver
    agent.webhook_url = url
    agent.webhook_secret = SECRET
    agent.save(update_fields=["webhook_url", "webhook_secret"])
    proposal = approved_proposal(agent, actor=owner)
    with django_capture_on_commit_callbacks(execute=True):
        rollout = services.start_rollout(
            proposal_id=proposal.pk, actor=owner, min_runs=0, min_duration=timedelta(0)
        )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.halt_rollout(rollout_id=rollout.pk, actor=owner, reason="error spike")
    assert len(received) == 1  # nothing leaves before the transaction commits
    for callback in callbacks:
        callback()
    headers, body = received[-1]
    verified = Webhook(SECRET).verify(body, headers)  # raises on a bad signature
    assert verified["type"] == "rollout.halted"
    assert verified["data"]["reason"] == "error spike"
    assert verified["data"]["rollout_id"] == rollout.pk and verified["data"]["status"] == "halted"
    assert json.loads(received[0][1])["type"] == "rollout.started"
    assert headers["webhook-id"] != received[0][0]["webhook-id"]


def test_a_tampered_body_does_not_verify(
    agent, owner, receiver, settings, django_capture_on_commit_callbacks
):
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = True
    url, received = receiver
    agent.webhook_url = url
    agent.webhook_secret = SECRET
    agent.save(update_fields=["webhook_url", "webhook_secret"])
    proposal = approved_proposal(agent, actor=owner)
    with django_capture_on_commit_callbacks(execute=True):
        services.start_rollout(proposal_id=proposal.pk, actor=owner)

    headers, body = received[-1]
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"started", b"halted"), headers)


def test_loopback_targets_are_refused_unless_allowed(settings):
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(TargetRefused):
        resolve_target("http://127.0.0.1:9/hooks")
    with pytest.raises(TargetRefused):
        resolve_target("ftp://example.com/")
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = True
    resolve_target("http://127.0.0.1:9/hooks")
