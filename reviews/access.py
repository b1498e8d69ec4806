"""Who may see and decide on a proposal. Every proposal page and action resolves through here."""

from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import Http404

from agents.access import Principal
from agents.actors import Actor, user_of
from agents.models import Membership
from dreams.models import Proposal


def get_proposal_for_user(user: Actor, pk: int, *, write: bool = False) -> Proposal:
    """The proposal if `user` is a member of its workspace (else 404); `write` needs a reviewer role (else 403).

    One query; the caller's role is attached as `proposal.viewer_role`.
    """
    person = user_of(user)
    if person is None:
        raise Http404("No such proposal.")
    proposal = (
        Proposal.objects.filter(pk=pk, agent__workspace__memberships__user=person)
        .select_related(
            "agent",
            "agent__workspace",
            "base_version",
            "candidate_version",
            "cycle",
            "author",
            "assignee",
            "revision_of",
        )
        .annotate(viewer_role=F("agent__workspace__memberships__role"))
        .first()
    )
    if proposal is None:
        raise Http404("No such proposal in your workspaces.")
    if write and proposal.viewer_role not in (Membership.Role.REVIEWER, Membership.Role.ADMIN):
        raise PermissionDenied("Viewers can read proposals but not decide on them.")
    return proposal


def get_proposal_for(principal: Principal, pk: int, *, write: bool = False) -> Proposal:
    """The API's door: the proposal if it is in the caller's workspace (else 404); `write`
    needs a reviewer or admin (else 403)."""
    proposal = (
        Proposal.objects.filter(pk=pk, agent__workspace=principal.workspace)
        .select_related(
            "agent",
            "agent__workspace",
            "agent__stable_version",
            "base_version",
            "candidate_version",
            "author",
            "assignee",
        )
        .first()
    )
    if proposal is None:
        raise Http404("No such proposal in this workspace.")
    if write and not principal.can_review:
        raise PermissionDenied("Viewers can read proposals but not decide on them.")
    return proposal
