"""Link and unlink a Reverie agent and a Claude Managed Agent (audit-logged, no secrets stored)."""

from typing import Any

import anthropic
from django.db import transaction

from agents import audit
from agents.actors import Actor
from agents.models import Agent
from dreams.managed.client import client_for
from dreams.managed.models import ManagedAgentLink


class LinkCheckFailed(Exception):
    """The Managed Agent or memory store could not be read with the configured key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_remote(*, link: ManagedAgentLink) -> int:
    """Read the remote agent and memory store once; returns the agent's current version."""
    client = client_for(link)
    try:
        remote = client.beta.agents.retrieve(link.managed_agent_id)
    except anthropic.NotFoundError as exc:
        raise LinkCheckFailed("managed_agent_id", "no such Managed Agent for this key") from exc
    try:
        client.beta.memory_stores.retrieve(link.memory_store_id)
    except anthropic.NotFoundError as exc:
        raise LinkCheckFailed("memory_store_id", "no such memory store for this key") from exc
    return remote.version


LINK_FIELDS = (
    "managed_agent_id",
    "memory_store_id",
    "anthropic_workspace_id",
    "api_key_name",
    "hosted_dream_enabled",
)


def link_agent(
    *, agent: Agent, actor: Actor = None, verify: bool = False, **fields: Any
) -> ManagedAgentLink:
    """Create or change the agent's link; changing the remote agent restarts the sync cursor.

    With `verify`, the remote agent and store are read first (LinkCheckFailed names the field).
    """
    unknown = set(fields) - set(LINK_FIELDS)
    if unknown:
        raise ValueError(f"not link fields: {', '.join(sorted(unknown))}")
    version = None
    if verify:  # network first, outside the transaction and its row lock
        current = ManagedAgentLink.objects.filter(agent=agent).first()
        probe = ManagedAgentLink(
            agent=agent, **({f: getattr(current, f) for f in LINK_FIELDS} if current else {})
        )
        for key, value in fields.items():
            setattr(probe, key, value)
        version = check_remote(link=probe)
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
        if version is not None:
            link.managed_agent_version = version
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


def unlink_agent(*, agent: Agent, actor: Actor = None) -> None:
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
