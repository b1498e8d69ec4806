"""HTML pages of the capture side: agents overview, run page, workspace switcher."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents.access import SESSION_KEY, get_run_for, memberships_for, principal_for
from agents.selectors import agents_with_run_counts, run_detail


@login_required
def home(request: HttpRequest) -> HttpResponse:
    principal = principal_for(request)
    return render(
        request, "agents/home.html", {"agents": agents_with_run_counts(principal.workspace)}
    )


@login_required
def run_page(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_run_for(principal_for(request), pk)
    return render(request, "agents/run.html", run_detail(run))


@login_required
@require_POST
def switch_workspace(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("workspace")
    for membership in memberships_for(request.user):
        if str(membership.workspace_id) == wanted:
            request.session[SESSION_KEY] = membership.workspace_id
            return redirect("home")
    raise PermissionDenied("Not a member of that workspace.")
