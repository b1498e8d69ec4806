"""Link and unlink a Reverie agent and a Claude Managed Agent (audit-logged, no secrets stored)."""

from typing import Any

from django.db import transaction

from agents import audit
from agents.models import Agent
from dreams.managed.models import ManagedAgentLink

LINK_FIELDS = (
    "managed_agent_id",
    "memory_store_id",
    "anthropic_workspace_id",
    "api_key_name",
    "hosted_dream_enabled",
)


def link_agent(*, agent: Agent, actor: Any = None, **fields: Any) -> ManagedAgentLink:
    """Create or change the agent's link; changing the remote agent restarts the sync cursor."""
    unknown = set(fields) - set(LINK_FIELDS)
    if unknown:
        raise ValueError(f"not link fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        link = ManagedAgentLink.objects.filter(agent=agent).first()
        before = {f: getattr(link, f) for f in LINK_FIELDS} if link else {}
        if link is None:
            link = ManagedAgentLink(agent=agent)
        if (
            link.pk
            and fields.get("managed_agent_id", link.managed_agent_id) != link.managed_agent_id
        ):
            link.sync_cursor = None
            link.managed_agent_version = None
        for key, value in fields.items():
            setattr(link, key, value)
        link.full_clean(exclude=["agent"])
        link.save()
        audit.record(
            workspace=agent.workspace,
            actor=actor,
            action="managed.link",
            target=agent,
            before=before,
            after={f: getattr(link, f) for f in LINK_FIELDS},
        )
    return link


def unlink_agent(*, agent: Agent, actor: Any = None) -> None:
    with transaction.atomic():
        link = ManagedAgentLink.objects.select_for_update().filter(agent=agent).first()
        if link is None:
            return
        before = {f: getattr(link, f) for f in LINK_FIELDS}
        link.delete()
        audit.record(
            workspace=agent.workspace,
            actor=actor,
            action="managed.unlink",
            target=agent,
            before=before,
        )
