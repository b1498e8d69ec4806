"""dreaming_report webhooks (signed, retried, logged, SSRF-safe) and the daily digest e-mail."""

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from dreams import signals
from dreams.models import DreamCycle, Proposal
from reviews import digest, notifications
from reviews.models import WebhookAttempt, WebhookDelivery
from tests.factories import ConfigVersionFactory

SECRET = "whsec_" + base64.b64encode(b"reverie-webhook-test-secret-32b!").decode()


class Receiver:
    """A loopback HTTP endpoint that answers with queued status codes and keeps what it got."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"try later")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/reverie"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hooked_agent(agent: Any, receiver: Receiver, settings: Any) -> Any:
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = True  # the test receiver is on loopback
    agent.webhook_url = receiver.url
    agent.webhook_secret = SECRET
    agent.save(update_fields=["webhook_url", "webhook_secret"])
    return agent


def finished_cycle(agent: Any) -> DreamCycle:
    return DreamCycle.objects.create(
        agent=agent, trigger="manual", status=DreamCycle.Status.SUCCEEDED
    )


def test_a_finished_cycle_sends_one_signed_dreaming_report(
    hooked_agent: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    cycle = finished_cycle(hooked_agent)

    with django_capture_on_commit_callbacks(execute=True):
        signals.cycle_finished.send(sender=DreamCycle, cycle_id=cycle.pk)
        signals.cycle_finished.send(sender=DreamCycle, cycle_id=cycle.pk)  # a repeat adds nothing

    (request,) = receiver.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    payload = Webhook(SECRET).verify(request["body"], headers)
    assert payload["type"] == "dreaming_report"
    assert payload["data"]["event"] == "cycle_finished"
    assert payload["data"]["agent"]["slug"] == "support"
    assert payload["data"]["cycle"]["id"] == cycle.pk
    assert set(payload["data"]) >= {"summary", "suggestions"}
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert headers["webhook-id"] == delivery.msg_id


def test_a_tampered_body_fails_verification(hooked_agent: Any, receiver: Receiver) -> None:
    cycle = finished_cycle(hooked_agent)
    delivery = notifications.notify_cycle_finished(cycle_id=cycle.pk)
    notifications.deliver(delivery_id=delivery.pk)

    (request,) = receiver.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    tampered = request["body"].replace(b'"cycle_finished"', b'"cycle_finishes"')
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)
    other_secret = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other_secret).verify(request["body"], headers)


def test_a_plain_secret_signs_with_its_bytes(hooked_agent: Any, receiver: Receiver) -> None:
    hooked_agent.webhook_secret = "not-a-whsec-secret"
    hooked_agent.save(update_fields=["webhook_secret"])
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(hooked_agent).pk)

    notifications.deliver(delivery_id=delivery.pk)

    (request,) = receiver.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert (
        Webhook(b"not-a-whsec-secret").verify(request["body"], headers)["type"] == "dreaming_report"
    )


def test_failed_attempts_are_retried_with_backoff_and_logged(
    hooked_agent: Any, receiver: Receiver, settings: Any
) -> None:
    from reviews.tasks import deliver_webhook

    receiver.statuses = [500, 503]
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(hooked_agent).pk)

    first = notifications.deliver(delivery_id=delivery.pk)
    assert first.status == WebhookDelivery.Status.PENDING
    assert first.retry_in == notifications.backoff_seconds(1) == 30
    deliver_webhook.delay(delivery.pk)  # eager: keeps trying until it succeeds

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.attempts == 3
    log = list(delivery.attempt_log.values_list("number", "status_code", "error"))
    assert log == [(1, 500, "HTTP 500"), (2, 503, "HTTP 503"), (3, 200, "")]
    assert notifications.backoff_seconds(2) == 60 and notifications.backoff_seconds(20) == 6 * 3600
    # Each attempt carried the same message id, so receivers can deduplicate.
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1


def test_delivery_gives_up_after_the_last_attempt(
    hooked_agent: Any, receiver: Receiver, settings: Any
) -> None:
    from reviews.tasks import deliver_webhook

    settings.REVERIE_WEBHOOK_MAX_ATTEMPTS = 3
    receiver.statuses = [500] * 10
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(hooked_agent).pk)

    deliver_webhook.delay(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 3
    assert len(receiver.requests) == 3


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "ftp://example.com/hook",
    ],
)
def test_private_and_loopback_targets_are_refused(agent: Any, settings: Any, url: str) -> None:
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = False
    agent.webhook_url, agent.webhook_secret = url, SECRET
    agent.save(update_fields=["webhook_url", "webhook_secret"])
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(agent).pk)

    outcome = notifications.deliver(delivery_id=delivery.pk)

    assert outcome.status == WebhookDelivery.Status.REFUSED
    assert outcome.retry_in is None
    delivery.refresh_from_db()
    (attempt,) = delivery.attempt_log.all()
    assert attempt.status_code is None
    assert "REVERIE_WEBHOOKS_ALLOW_PRIVATE" in attempt.error or "http(s)" in attempt.error


def test_a_loopback_receiver_is_refused_unless_allowed(
    hooked_agent: Any, receiver: Receiver, settings: Any
) -> None:
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = False
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(hooked_agent).pk)

    assert notifications.deliver(delivery_id=delivery.pk).status == "refused"
    assert receiver.requests == []


def test_public_addresses_pass_the_check(settings: Any) -> None:
    settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE = False

    assert notifications.resolve_target("https://93.184.216.34/hook") == (
        "https",
        "93.184.216.34",
        443,
    )
    assert notifications.resolve_target("http://[2606:4700::1111]:8080/x")[1:] == (
        "2606:4700::1111",
        8080,
    )


def test_no_secret_means_no_unsigned_delivery(hooked_agent: Any, receiver: Receiver) -> None:
    hooked_agent.webhook_secret = ""
    hooked_agent.save(update_fields=["webhook_secret"])
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(hooked_agent).pk)

    assert notifications.deliver(delivery_id=delivery.pk).status == "refused"
    assert receiver.requests == []


def test_agents_without_a_webhook_get_no_delivery(agent: Any) -> None:
    signals.cycle_finished.send(sender=DreamCycle, cycle_id=finished_cycle(agent).pk)

    assert not WebhookDelivery.objects.exists()


def make_proposal(agent: Any, *, status: str, cycle: DreamCycle | None = None) -> Proposal:
    candidate = ConfigVersionFactory(agent=agent, number=agent.versions.count() + 1)
    return Proposal.objects.create(
        agent=agent,
        cycle=cycle,
        base_version=agent.stable_version,
        candidate_version=candidate,
        title=f"Proposal {status}",
        status=status,
    )


def test_a_ready_proposal_sends_a_report_with_its_suggestion(
    hooked_agent: Any, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    cycle = finished_cycle(hooked_agent)
    make_proposal(hooked_agent, status="drafted", cycle=cycle)
    proposal = make_proposal(hooked_agent, status="ready", cycle=cycle)

    with django_capture_on_commit_callbacks(execute=True):
        signals.proposal_ready.send(sender=Proposal, proposal_id=proposal.pk)

    (request,) = receiver.requests
    payload = json.loads(request["body"])
    assert payload["data"]["event"] == "proposal_ready"
    (suggestion,) = payload["data"]["suggestions"]
    assert suggestion["proposal_id"] == proposal.pk
    assert suggestion["title"] == "Proposal ready"


def test_overdue_pending_deliveries_are_found_again(hooked_agent: Any) -> None:
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(hooked_agent).pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )

    assert notifications.overdue_deliveries() == [delivery.pk]


# -- digest --------------------------------------------------------------------------------


def test_daily_digest_summarises_corrected_failures_and_pending_reviews(
    agent: Any, owner: Any, reviewer: Any, viewer: Any
) -> None:
    from dreams.models import Experiment

    owner.email, reviewer.email, viewer.email = "o@example.com", "r@example.com", "v@example.com"
    for user in (owner, reviewer, viewer):
        user.save(update_fields=["email"])
    approved = make_proposal(agent, status="approved")
    Proposal.objects.filter(pk=approved.pk).update(decided_at=timezone.now())
    Experiment.objects.create(
        agent=agent,
        proposal=approved,
        baseline_version=approved.base_version,
        candidate_version=approved.candidate_version,
        stats={"verdict": "improves", "target": {"fixes": 7, "regressions": 0, "n": 9}},
    )
    make_proposal(agent, status="ready")
    make_proposal(agent, status="ready")

    assert digest.send_daily_digest() == 1

    (message,) = mail.outbox
    assert sorted(message.to) == ["o@example.com", "r@example.com"]
    assert "7 failures corrected, 2 proposals waiting for review" in message.subject
    assert f"#{approved.pk} Proposal approved" in message.body
    assert "7 held-out failures fixed" in message.body


def test_no_digest_when_nothing_happened(agent: Any, owner: Any) -> None:
    owner.email = "o@example.com"
    owner.save(update_fields=["email"])

    assert digest.send_daily_digest() == 0
    assert mail.outbox == []


def test_redirects_are_not_followed(hooked_agent: Any, receiver: Receiver) -> None:
    receiver.statuses = [302]
    delivery = notifications.notify_cycle_finished(cycle_id=finished_cycle(hooked_agent).pk)

    outcome = notifications.deliver(delivery_id=delivery.pk)

    assert outcome.status == WebhookDelivery.Status.PENDING  # retried later, never redirected
    assert len(receiver.requests) == 1
    assert delivery.attempt_log.get().error == "HTTP 302"
