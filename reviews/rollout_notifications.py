"""Rollout webhooks: a Standard Webhooks–signed POST to the agent's webhook URL, after commit.

The payload is built when the event happens; the signature (id, timestamp, body) is made at
delivery time so retries carry a fresh timestamp and the same id (receivers dedupe on it).
"""

import ipaddress
import json
import logging
import socket
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from django.utils import timezone
from standardwebhooks import Webhook

from agents.models import Agent
from reviews.models import Rollout

logger = logging.getLogger(__name__)


class WebhookRefused(Exception):
    """The target is not allowed (private or loopback address, bad scheme)."""


def rollout_payload(*, rollout: Rollout, event: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event,
        "timestamp": timezone.now().isoformat(),
        "data": {
            "rollout_id": rollout.pk,
            "agent": rollout.agent.slug,
            "status": rollout.status,
            "from_version": rollout.from_version.number,
            "to_version": rollout.to_version.number,
            "stage": rollout.current_stage + 1,
            "proposal_id": rollout.proposal_id,
            **detail,
        },
    }


def notify_rollout_event(
    *, rollout: Rollout, event: str, detail: dict[str, Any] | None = None
) -> None:
    """Enqueue a signed webhook for a rollout event once the surrounding transaction commits."""
    from reviews.tasks_rollouts import deliver_rollout_webhook  # the task module imports services

    agent = rollout.agent
    if not agent.webhook_url:
        return
    body = json.dumps(rollout_payload(rollout=rollout, event=event, detail=detail or {}))
    deliver_rollout_webhook.delay_on_commit(agent.pk, f"msg_{uuid.uuid4().hex}", body)


def signing_key(secret: str) -> str | bytes:
    # Standard Webhooks secrets are "whsec_<base64>"; any other text is used as raw key bytes.
    return secret if secret.startswith("whsec_") else secret.encode()


def signed_headers(*, secret: str, message_id: str, body: str) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    signature = Webhook(signing_key(secret)).sign(msg_id=message_id, timestamp=now, data=body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "Reverie-Webhooks/1",
    }


def check_target(url: str) -> None:
    """Refuse private, loopback and link-local targets unless settings allow them."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"not an http(s) URL: {url}")
    if settings.REVERIE_WEBHOOKS_ALLOW_PRIVATE:
        return
    for info in socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP):
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
        ):
            raise WebhookRefused(f"{parts.hostname} resolves to a private address ({address})")


def deliver(*, agent_id: int, message_id: str, body: str) -> int | None:
    """POST one signed event; returns the HTTP status, None when there is nothing to send."""
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None or not agent.webhook_url:
        return None
    if not agent.webhook_secret:
        logger.warning(
            "agent %s has a webhook URL but no secret; event %s not sent", agent_id, message_id
        )
        return None
    check_target(agent.webhook_url)
    headers = signed_headers(secret=agent.webhook_secret, message_id=message_id, body=body)
    response = httpx2.post(agent.webhook_url, content=body.encode(), headers=headers, timeout=10)
    if response.status_code >= 500:
        response.raise_for_status()
    return response.status_code
