"""HTML pages for rollouts: list, rollout page with live canary metrics, and the actions."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from agents.access import get_agent_for, principal_for
from agents.middleware import HtmxHttpRequest
from dreams.models import Proposal
from dreams.proposals import InvalidTransition
from rollouts import services
from rollouts.access import get_rollout_for
from rollouts.models import Rollout
from rollouts.selectors import (
    agent_split,
    approved_proposals_for,
    rollout_page,
    rollouts_for,
)
from rollouts.states import RolloutError


@login_required
def rollout_list(request: HttpRequest) -> HttpResponse:
    principal = principal_for(request)
    return render(
        request,
        "rollouts/rollouts.html",
        {
            "rollouts": rollouts_for(principal.workspace)[:200],
            "approved": approved_proposals_for(principal.workspace),
            "can_act": principal.can_review,
        },
    )


@login_required
@require_POST
def rollout_start(request: HttpRequest, proposal_id: int) -> HttpResponse:
    principal = principal_for(request)
    if not principal.can_review:
        raise PermissionDenied("Only reviewers and admins can start rollouts.")
    if not Proposal.objects.filter(pk=proposal_id, agent__workspace=principal.workspace).exists():
        raise Http404("No such proposal in this workspace.")
    try:
        rollout = services.start_rollout(proposal_id=proposal_id, actor=request.user)
    except (RolloutError, InvalidTransition) as exc:
        messages.error(request, str(exc))
        return redirect("rollout-list")
    first = rollout.stages.first()
    messages.success(request, f"Rollout started at {first.percent if first else 0}%.")
    return redirect("rollout-detail", pk=rollout.pk)


@login_required
def rollout_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    principal = principal_for(request)
    rollout = get_rollout_for(principal, pk)
    context = {**rollout_page(rollout), "can_act": principal.can_review}
    template = "rollouts/rollout.html"
    if request.htmx:
        template += "#rollout-live"
    return render(request, template, context)


def _act(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    rollout = get_rollout_for(principal_for(request), pk, write=True)
    reason = request.POST.get("reason", "").strip()[:500]
    if action in ("halt", "roll_back") and not (reason and request.POST.get("confirm")):
        # The page's form asks for both; a bare POST changes nothing.
        messages.error(request, "Give a reason and confirm to halt or roll back.")
        return redirect("rollout-detail", pk=rollout.pk)
    try:
        if action == "approve":
            result = services.approve_stage(rollout_id=rollout.pk, actor=request.user)
            if result.status == Rollout.Status.HALTED:
                messages.error(request, f"Halted instead of advancing: {result.halt_reason}")
            elif result.status == Rollout.Status.COMPLETED:
                messages.success(request, "Rollout completed: the candidate is now stable.")
            else:
                messages.success(request, f"Stage {result.current_stage + 1} started.")
        elif action == "halt":
            services.halt_rollout(rollout_id=rollout.pk, actor=request.user, reason=reason)
            messages.success(request, "Rollout halted: all traffic is on the stable version.")
        else:
            services.roll_back(rollout_id=rollout.pk, actor=request.user, reason=reason)
            messages.success(request, "Rolled back: all traffic is on the previous version.")
    except RolloutError as exc:
        messages.error(request, str(exc))
    return redirect("rollout-detail", pk=rollout.pk)


@login_required
@require_POST
def rollout_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "approve")


@login_required
@require_POST
def rollout_halt(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "halt")


@login_required
@require_POST
def rollout_roll_back(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "roll_back")


@login_required
def agent_split_fragment(request: HttpRequest, slug: str) -> HttpResponse:
    agent = get_agent_for(principal_for(request), slug)
    return render(request, "rollouts/_agent_split.html", agent_split(agent))


# Slots on pages of the apps below (agents/slots.py), registered in RolloutsConfig.ready().


def proposal_actions(request: HttpRequest | None, context: dict[str, Any]) -> str:
    """The proposal page's "Start staged rollout" button, the link to its latest rollout, and
    after a halt the new approval that restarts it from stage 1."""
    rollout = Rollout.objects.filter(proposal=context["proposal"]).order_by("-id").first()
    return render_to_string(
        "rollouts/_proposal_actions.html", {**context, "rollout": rollout}, request=request
    )


def agent_split_panel(request: HttpRequest | None, context: dict[str, Any]) -> str:
    """The agent page's traffic split, loaded (and refreshed) over htmx."""
    return render_to_string("rollouts/_agent_split_lazy.html", context, request=request)
