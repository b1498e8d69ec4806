"""HTML pages of dreaming: the cycles list, a cycle and its Markdown report, "Dream now", and the
agent page's dreams panels (slots filled in DreamsConfig.ready())."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from agents.access import get_agent_for, principal_for
from agents.middleware import HtmxHttpRequest
from dreams import cycles, reports, selectors, spend
from dreams.access import get_cycle_for
from dreams.models import DreamCycle


@login_required
def dreams_list(request: HtmxHttpRequest) -> HttpResponse:
    """Every cycle of the workspace, newest first; `?agent=<slug>` narrows it to one agent (the
    agent page polls that list's table while a cycle runs)."""
    principal = principal_for(request)
    agent = None
    if request.GET.get("agent"):
        agent = get_agent_for(principal, request.GET["agent"][:80])
    found = selectors.cycles_for(workspace=principal.workspace, agent=agent)
    status = request.GET.get("status", "")
    if status:
        found = found.filter(status=status)
    page = Paginator(found, 50).get_page(request.GET.get("page"))
    template = "dreams/dreams.html"
    if request.htmx and request.htmx.target == "cycles":
        template += "#cycles"
    cycles_on_page = list(page.object_list)
    context = {
        "page": page,
        "cycles": cycles_on_page,
        "status": status,
        "agent": agent,
        "polling": any(c.is_active for c in cycles_on_page),
    }
    return render(request, template, context)


@login_required
def cycle_page(request: HttpRequest, pk: int) -> HttpResponse:
    cycle = get_cycle_for(principal_for(request), pk)
    return render(request, "dreams/cycle.html", selectors.cycle_detail(cycle=cycle))


@login_required
def cycle_markdown(request: HttpRequest, pk: int) -> HttpResponse:
    """The cycle's correction report: the same Markdown as GET /api/v1/dreams/<pk>/report.md."""
    return reports.markdown_response(get_cycle_for(principal_for(request), pk))


@login_required
@require_POST
def dream_now(request: HttpRequest, slug: str) -> HttpResponse:
    principal = principal_for(request)
    agent = get_agent_for(principal, slug)
    if not principal.can_review:
        raise PermissionDenied("Only reviewers and admins can start a dream cycle.")
    try:
        cycle = cycles.start_cycle(
            agent=agent, trigger=DreamCycle.Trigger.MANUAL, actor=request.user
        )
    except cycles.CycleNotStarted as error:
        messages.error(request, f"Could not start a dream cycle: {error}")
    else:
        _dream_message(request, cycle)
    return redirect("agent-detail", slug=agent.slug)


def _dream_message(request: HttpRequest, cycle: DreamCycle) -> None:
    """Say what the cycle did, not what it was asked (eager tasks finish inside the request)."""
    cycle.refresh_from_db()
    if cycle.status == DreamCycle.Status.SUCCEEDED:
        drafted = cycle.proposals.count()
        messages.success(
            request,
            f"Dream cycle {cycle.pk} finished: {drafted} proposal{'s' if drafted != 1 else ''} "
            "drafted.",
        )
    elif cycle.status == DreamCycle.Status.FAILED:
        messages.error(request, f"Dream cycle {cycle.pk} failed: {cycle.error or 'see its page'}.")
    elif cycle.status == DreamCycle.Status.RUNNING:
        messages.success(request, f"Dream cycle {cycle.pk} is running.")
    else:
        messages.success(request, f"Dream cycle {cycle.pk} queued; a worker will start it.")


@login_required
def agent_spend(request: HttpRequest, slug: str) -> HttpResponse:
    """The agent page's spend panel (summing a month of runs is slow, so it loads after the page)."""
    agent = get_agent_for(principal_for(request), slug)
    context = {"agent": agent, "spend": spend.agent_spend(agent=agent)}
    return render(request, "dreams/_agent_spend.html", context)


# Slots on the agent page (agents/slots.py), registered in DreamsConfig.ready().


def agent_actions(request: HttpRequest | None, context: dict[str, Any]) -> str:
    """The "Dream now" button (reviewers, an agent that is not paused)."""
    return render_to_string("dreams/_agent_actions.html", context, request=request)


def agent_cards(request: HttpRequest | None, context: dict[str, Any]) -> str:
    """The harness check and the spend cards, beside the pass-rate chart."""
    extra = selectors.latest_harness_check(agent=context["agent"])
    return render_to_string("dreams/_agent_cards.html", {**context, **extra}, request=request)


def agent_sections(request: HttpRequest | None, context: dict[str, Any]) -> str:
    """Open proposals and the latest dream cycles (polled while one runs)."""
    panels = selectors.agent_panels(agent=context["agent"])
    return render_to_string("dreams/_agent_sections.html", panels, request=request)
