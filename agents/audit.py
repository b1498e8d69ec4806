"""Write the append-only audit log. Call inside the transaction of the change it records."""

from typing import Any

from django.db import models

from agents.actors import Actor, user_of
from agents.models import ApiKey, AuditEvent, Workspace


def actor_fields(actor: Actor) -> dict[str, Any]:
    if isinstance(actor, ApiKey):
        return {"actor": None, "actor_label": f"API key {actor.name} ({actor.prefix}…)"}
    if actor is None or not actor.is_authenticated:
        return {"actor": None, "actor_label": "system"}
    # A key's principal (DRF's request.user) is named but, not being a user, never stored.
    return {"actor": user_of(actor), "actor_label": actor.get_username()}


def record(
    *,
    workspace: Workspace,
    actor: Actor,
    action: str,
    target: models.Model,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    comment: str = "",
) -> AuditEvent:
    return AuditEvent.objects.create(
        workspace=workspace,
        action=action,
        target_type=target._meta.model_name or "",
        target_id=str(target.pk),
        target_label=str(target)[:300],
        before=before or {},
        after=after or {},
        comment=comment,
        **actor_fields(actor),
    )
