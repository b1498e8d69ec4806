"""Who may see and change what. Every HTML and API view resolves objects through here."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

from agents.actors import Actor, user_of
from agents.models import Agent, ApiKey, Membership, Run, Workspace

SESSION_KEY = "workspace_id"


def memberships_for(user: Actor) -> list[Membership]:
    person = user_of(user)
    if person is None or person.pk is None:
        return []
    return list(
        Membership.objects.filter(user=person)
        .select_related("workspace")
        .order_by("workspace__name")
    )


def request_memberships(request: Any) -> list[Membership]:
    """The signed-in user's memberships, read once per request (every slot's template asks)."""
    cached = getattr(request, "_reverie_memberships", None)
    if cached is None:
        cached = request._reverie_memberships = memberships_for(request.user)
    return cached


def current_membership(request: Any) -> Membership | None:
    """The membership for the workspace chosen in the session (or the user's first)."""
    if hasattr(request, "_reverie_membership"):
        return request._reverie_membership
    memberships = request_memberships(request)
    chosen = None
    wanted = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    for membership in memberships:
        if membership.workspace_id == wanted:
            chosen = membership
    if chosen is None and memberships:
        chosen = memberships[0]
    request._reverie_membership = chosen
    return chosen


class Principal:
    """The caller of an API request: an API key (role from its scope) or a member with a role."""

    def __init__(self, *, workspace: Workspace, role: str, actor: Actor) -> None:
        self.workspace = workspace
        self.role = role
        self.actor = actor

    @property
    def can_review(self) -> bool:
        return self.role in (Membership.Role.REVIEWER, Membership.Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role == Membership.Role.ADMIN


def principal_for(request: Any) -> Principal:
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        # The view already checked the key's scope (agents/scopes.py); only admin keys act as
        # workspace admins in services' role checks.
        role = Membership.Role.ADMIN if auth.scope == ApiKey.Scope.ADMIN else Membership.Role.VIEWER
        return Principal(workspace=auth.workspace, role=role, actor=auth)
    membership = current_membership(request)
    if membership is None:
        raise PermissionDenied("You are not a member of any workspace.")
    return Principal(workspace=membership.workspace, role=membership.role, actor=request.user)


def get_agent_for(principal: Principal, slug: str, *, write: bool = False) -> Agent:
    agent = (
        Agent.objects.filter(workspace=principal.workspace, slug=slug)
        .select_related("stable_version")
        .first()
    )
    if agent is None:
        raise Http404("No such agent in this workspace.")
    if write and not principal.is_admin:
        raise PermissionDenied("Only workspace admins can change agents.")
    return agent


def get_run_for(principal: Principal, pk: int) -> Run:
    run = (
        Run.objects.filter(agent__workspace=principal.workspace, pk=pk)
        .select_related("agent", "config_version")
        .first()
    )
    if run is None:
        raise Http404("No such run in this workspace.")
    return run
