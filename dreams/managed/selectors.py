"""Reads for pages and APIs: link state, hosted dreams with their outcome, apply attempts."""

from django.db.models import QuerySet

from agents.models import Agent
from dreams.managed.models import HostedDream, ManagedAgentLink, MemoryApplication
from dreams.models import Proposal


def managed_link_for(agent: Agent) -> ManagedAgentLink | None:
    return ManagedAgentLink.objects.filter(agent=agent).first()


def hosted_dreams_for(agent: Agent, *, limit: int = 50) -> QuerySet[HostedDream]:
    """Newest first, with the cycle and proposal a page links to (failed ones carry `error`)."""
    return HostedDream.objects.filter(agent=agent).select_related("cycle", "proposal")[:limit]


def memory_applications_for(proposal: Proposal) -> QuerySet[MemoryApplication]:
    """Every attempt to write the proposal live; `conflict` holds the live text on a conflict."""
    return MemoryApplication.objects.filter(proposal=proposal).select_related("actor")
