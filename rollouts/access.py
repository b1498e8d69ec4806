"""Who may see and act on a rollout. Every rollout page and API view resolves through here."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from agents.access import Principal
from rollouts.models import Rollout


def get_rollout_for(principal: Principal, pk: int, *, write: bool = False) -> Rollout:
    """The rollout if it is in the caller's workspace (404 otherwise); writes need a reviewer."""
    rollout = (
        Rollout.objects.filter(agent__workspace=principal.workspace, pk=pk)
        .select_related(
            "agent__stable_version",
            "agent__canary_version",
            "from_version",
            "to_version",
            "proposal",
        )
        .first()
    )
    if rollout is None:
        raise Http404("No such rollout in this workspace.")
    if write and not principal.can_review:
        raise PermissionDenied("Only reviewers and admins can change rollouts.")
    return rollout
