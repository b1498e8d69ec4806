"""Receive Anthropic webhooks: verify the signature, record the delivery, queue a session sync.

The payload is thin (type + object id), so the work happens in a task that fetches the session.
Nothing is stored when verification fails.
"""

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from standardwebhooks.webhooks import WebhookVerificationError

from dreams.managed.client import client_for, webhook_client
from dreams.managed.models import ManagedAgentLink, ManagedWebhookEvent
from dreams.managed.sync import SyncResult, sync_link

logger = logging.getLogger(__name__)

SYNC_EVENT_TYPES = {
    "session.outcome_evaluation_ended",
    "session.status_idled",
    "session.idled",
    "session.status_terminated",  # the session ended: its run is complete
}


class InvalidWebhook(Exception):
    """Signature, timestamp or payload did not verify; answer 400 and store nothing."""


@dataclass
class WebhookReceipt:
    event: ManagedWebhookEvent | None
    duplicate: bool
    queued: bool


def receive_webhook(*, body: bytes, headers: dict[str, str]) -> WebhookReceipt:
    """Verify and record one delivery; a session event queues `dreams.managed.sync_webhook_session`."""
    client = webhook_client()
    try:
        event = client.beta.webhooks.unwrap(body.decode(), headers=headers)
    except (WebhookVerificationError, ValueError) as exc:
        raise InvalidWebhook(str(exc)) from exc
    data = event.data
    event_type = getattr(data, "type", "") or ""
    object_id = getattr(data, "id", "") or ""
    if not event.id or not event_type:
        raise InvalidWebhook("payload lacks an event id or data.type")
    if event_type not in SYNC_EVENT_TYPES:
        return WebhookReceipt(event=None, duplicate=False, queued=False)

    from dreams.tasks import sync_webhook_session

    try:
        with transaction.atomic():
            record = ManagedWebhookEvent.objects.create(
                event_id=event.id,
                event_type=event_type,
                object_id=object_id,
                anthropic_workspace_id=getattr(data, "workspace_id", "") or "",
            )
            sync_webhook_session.delay_on_commit(record.pk)
    except IntegrityError:
        existing = ManagedWebhookEvent.objects.get(event_id=event.id)
        return WebhookReceipt(event=existing, duplicate=True, queued=False)
    return WebhookReceipt(event=record, duplicate=False, queued=True)


def _candidate_links(record: ManagedWebhookEvent) -> list[ManagedAgentLink]:
    links = ManagedAgentLink.objects.select_related("agent__workspace")
    if record.anthropic_workspace_id:
        scoped = list(links.filter(anthropic_workspace_id=record.anthropic_workspace_id))
        if scoped:
            return scoped
    return list(links.filter(anthropic_workspace_id=""))


def sync_webhook_session(*, event_pk: int) -> SyncResult | None:
    """Find the link whose Managed Agent ran the session, then sync that one session."""
    record = ManagedWebhookEvent.objects.get(pk=event_pk)
    if record.processed_at is not None:
        return None
    tried: set[tuple[str, str]] = set()
    result = None
    error = ""
    for link in _candidate_links(record):
        key = (link.api_key_name or link.agent.workspace.slug, link.anthropic_workspace_id)
        if key in tried:
            continue
        tried.add(key)
        try:
            session = client_for(link).beta.sessions.retrieve(record.object_id)
        except Exception as exc:  # noqa: BLE001 - a foreign key/workspace is expected to 404
            error = f"{type(exc).__name__}"
            continue
        owner = next(
            (
                candidate
                for candidate in _candidate_links(record)
                if candidate.managed_agent_id == session.agent.id
            ),
            None,
        )
        if owner is None:
            error = "no linked agent ran this session"
            break
        result = sync_link(link_id=owner.pk, session_ids=[record.object_id])
        record.link = owner
        error = ""
        break
    record.processed_at = timezone.now()
    record.error = error if result is None else ""
    record.save(update_fields=["link", "processed_at", "error"])
    return result


def headers_of(request: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}
