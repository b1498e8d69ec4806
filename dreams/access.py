"""Who may see a dream cycle: the one door for the cycle page, its Markdown and the API."""

from django.http import Http404

from agents.access import Principal
from dreams.models import DreamCycle


def get_cycle_for(principal: Principal, pk: int) -> DreamCycle:
    """The cycle if it belongs to the caller's workspace, else 404 (one query)."""
    cycle = (
        DreamCycle.objects.filter(agent__workspace=principal.workspace, pk=pk)
        .select_related("agent", "created_by")
        .first()
    )
    if cycle is None:
        raise Http404("No such dream cycle in this workspace.")
    return cycle
