"""Notifications: `dreaming_report` webhooks, signed per the Standard Webhooks spec.

A finished cycle or a proposal that became ready enqueues one signed delivery per event; a
Celery task delivers it with retries and backoff and logs every attempt. Targets on private,
loopback or link-local addresses are refused unless REVERIE_WEBHOOKS_ALLOW_PRIVATE is on, and
the request goes to the address that was checked (no second DNS lookup, no redirects).
"""

import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from standardwebhooks import Webhook

from agents import targets
from agents.models import Agent
from agents.targets import TargetRefused
from dreams import reports, signals
from dreams.models import DreamCycle, Proposal
from reviews.models import WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

EVENT_TYPE = "dreaming_report"
USER_AGENT = "Reverie-Webhooks/1"


# -- payloads ------------------------------------------------------------------------------


def _suggestion(item: dict[str, Any]) -> dict[str, Any]:
    metrics = item.get("metrics") or {}
    target = metrics.get("target") or {}
    return {
        "proposal_id": item["proposal_id"],
        "title": item["title"],
        "status": item["status"],
        "flags": [f.get("code") for f in item["flags"]],
        "patterns": item["patterns"],
        "documents": [c["document"] for c in item["changes"]],
        "verdict": metrics.get("verdict"),
        "fixes": target.get("fixes"),
        "regressions": target.get("regressions"),
        "url": f"{settings.REVERIE_BASE_URL}/proposals/{item['proposal_id']}",
    }


def dreaming_report_payload(
    *, cycle: DreamCycle, event: str, proposal: Proposal | None = None
) -> dict[str, Any]:
    """The webhook body: type, agent, cycle, summary, suggestions."""
    report = reports.build_cycle_report(cycle)
    suggestions = [
        _suggestion(s)
        for s in report["suggestions"]
        if proposal is None or s["proposal_id"] == proposal.pk
    ]
    return {
        "type": EVENT_TYPE,
        "timestamp": timezone.now().isoformat(),
        "data": {
            "event": event,
            "agent": {"slug": cycle.agent.slug, "name": cycle.agent.name},
            "cycle": {
                "id": cycle.pk,
                "status": report["status"],
                "trigger": report["trigger"],
                "report_url": f"{settings.REVERIE_BASE_URL}/api/v1/dreams/{cycle.pk}",
                "markdown_url": f"{settings.REVERIE_BASE_URL}/api/v1/dreams/{cycle.pk}/report.md",
            },
            "summary": {
                "failures_studied": report["runs_studied"],
                "patterns": [
                    {"id": p["id"], "title": p["title"], "count": p["count"]}
                    for p in report["patterns"]
                ],
                "proposals": len(report["suggestions"]),
                "stop_reason": report["stop_reason"],
                "tokens": report["usage"]["tokens"],
                "cost_usd": report["usage"]["cost_usd"],
            },
            "suggestions": suggestions,
        },
    }


# -- enqueue -------------------------------------------------------------------------------


def enqueue_delivery(
    *, agent: Agent, event_key: str, payload: dict[str, Any], event_type: str = EVENT_TYPE
) -> WebhookDelivery | None:
    """One delivery per event (a repeated signal adds nothing); sent after commit."""
    from reviews.tasks import deliver_webhook

    if not agent.webhook_url:
        return None
    with transaction.atomic():
        delivery, created = WebhookDelivery.objects.get_or_create(
            event_key=event_key,
            defaults={
                "agent": agent,
                "event_type": event_type,
                "msg_id": f"msg_{secrets.token_hex(12)}",
                "url": agent.webhook_url,
                "payload": payload,
            },
        )
        if created:
            deliver_webhook.delay_on_commit(delivery.pk)
    return delivery


def notify_cycle_finished(*, cycle_id: int) -> WebhookDelivery | None:
    cycle = DreamCycle.objects.select_related("agent").filter(pk=cycle_id).first()
    if cycle is None:
        return None
    return enqueue_delivery(
        agent=cycle.agent,
        event_key=f"cycle_finished:{cycle.pk}",
        payload=dreaming_report_payload(cycle=cycle, event="cycle_finished"),
    )


def notify_proposal_ready(*, proposal_id: int) -> WebhookDelivery | None:
    proposal = (
        Proposal.objects.select_related("agent", "cycle__agent").filter(pk=proposal_id).first()
    )
    if proposal is None or proposal.cycle is None:
        return None
    return enqueue_delivery(
        agent=proposal.agent,
        event_key=f"proposal_ready:{proposal.pk}:{proposal.lock_version}",
        payload=dreaming_report_payload(
            cycle=proposal.cycle, event="proposal_ready", proposal=proposal
        ),
    )


def _on_cycle_finished(sender: Any, cycle_id: int, **kwargs: Any) -> None:
    notify_cycle_finished(cycle_id=cycle_id)


def _on_proposal_ready(sender: Any, proposal_id: int, **kwargs: Any) -> None:
    notify_proposal_ready(proposal_id=proposal_id)


def connect_receivers() -> None:
    signals.cycle_finished.connect(_on_cycle_finished, dispatch_uid="reviews.webhook.cycle")
    signals.proposal_ready.connect(_on_proposal_ready, dispatch_uid="reviews.webhook.proposal")


# -- target checks -------------------------------------------------------------------------


def resolve_target(url: str) -> tuple[str, str, int]:
    """(scheme, checked IP address, port) for a webhook `url`, or TargetRefused."""
    return targets.resolve_target(url, allow_private=settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE)


# -- delivery ------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str
    retry_in: int | None = None


def signing_key(secret: str) -> str | bytes:
    """`whsec_…` secrets are used as Standard Webhooks keys; any other string as raw key bytes."""
    return secret if secret.startswith("whsec_") else secret.encode()


def signed_headers(*, secret: str, msg_id: str, body: str, at: datetime) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(signing_key(secret)).sign(
            msg_id=msg_id, timestamp=at, data=body
        ),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def backoff_seconds(attempt: int) -> int:
    return min(30 * 2 ** (attempt - 1), 6 * 3600)


def _post(*, url: str, address: str, headers: dict[str, str], body: str) -> httpx2.Response:
    parts = urlsplit(url)
    host = parts.hostname or ""
    pinned, host_header = targets.pinned_url(url, address)
    # No environment proxies: a proxy would resolve the host again, past the address check.
    with httpx2.Client(
        timeout=settings.REVERIE_WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
    ) as client:
        return client.post(
            pinned,
            content=body.encode(),
            headers={**headers, "host": host_header},
            extensions={"sni_hostname": host} if parts.scheme == "https" else {},
        )


def deliver(*, delivery_id: int) -> Outcome:
    """One delivery attempt, logged; says whether (and when) to try again."""
    delivery = WebhookDelivery.objects.select_related("agent").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return Outcome(status=delivery.status if delivery else "missing")
    number = delivery.attempts + 1
    started = timezone.now()
    clock = time.monotonic()
    status_code, error, excerpt = None, "", ""
    final: str | None = None
    try:
        if not delivery.agent.webhook_secret:
            raise TargetRefused("the agent has no webhook secret to sign with")
        scheme, address, _ = resolve_target(delivery.url)
        del scheme
        body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
        headers = signed_headers(
            secret=delivery.agent.webhook_secret, msg_id=delivery.msg_id, body=body, at=started
        )
        response = _post(url=delivery.url, address=address, headers=headers, body=body)
        status_code = response.status_code
        excerpt = response.text[:500]
        if 200 <= response.status_code < 300:
            final = WebhookDelivery.Status.DELIVERED
        else:
            error = f"HTTP {response.status_code}"
    except TargetRefused as exc:
        error, final = str(exc), WebhookDelivery.Status.REFUSED
    except (httpx2.HTTPError, ConnectionError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    if final is None and number >= settings.REVERIE_WEBHOOK_MAX_ATTEMPTS:
        final = WebhookDelivery.Status.FAILED
    retry_in = None if final else backoff_seconds(number)
    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        WebhookAttempt.objects.create(
            delivery=locked,
            number=number,
            started_at=started,
            duration_ms=int((time.monotonic() - clock) * 1000),
            status_code=status_code,
            error=error[:2000],
            response_excerpt=excerpt,
        )
        locked.attempts = number
        locked.last_error = error[:2000]
        locked.status = final or WebhookDelivery.Status.PENDING
        locked.next_attempt_at = started + timedelta(seconds=retry_in) if retry_in else None
        if final == WebhookDelivery.Status.DELIVERED:
            locked.delivered_at = timezone.now()
        locked.save(
            update_fields=[
                "attempts",
                "last_error",
                "status",
                "next_attempt_at",
                "delivered_at",
            ]
        )
    return Outcome(status=locked.status, retry_in=retry_in)


def overdue_deliveries(
    *, now: datetime | None = None, grace: timedelta = timedelta(minutes=10)
) -> list[int]:
    """Pending deliveries that should have been retried by now (the database is the truth)."""
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)
        .filter(
            Q(next_attempt_at__lte=now - grace)
            | Q(next_attempt_at__isnull=True, created_at__lte=now - grace)
        )
        .values_list("id", flat=True)
    )
