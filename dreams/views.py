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
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents.access import get_agent_for, principal_for
from agents.middleware import HtmxHttpRequest
from dreams import cycles, experiments, reports, selectors, spend
from dreams.access import get_cycle_for
from dreams.models import DreamCycle, Experiment


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
    principal = principal_for(request)
    cycle = get_cycle_for(principal, pk)
    context = {**selectors.cycle_detail(cycle=cycle), "can_review": principal.can_review}
    return render(request, "dreams/cycle.html", context)


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


def _go(request: HtmxHttpRequest, url: str) -> HttpResponse:
    """After a control's POST: htmx reloads the page there (its flash shows), a form redirects."""
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _reviewer(request: HttpRequest, what: str) -> Any:
    principal = principal_for(request)
    if not principal.can_review:
        raise PermissionDenied(f"Only reviewers and admins can {what}.")
    return principal


@login_required
@require_POST
def cycle_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The cycle page's Cancel: the API's cancel (`cycles.cancel_cycle`)."""
    cycle = get_cycle_for(principal_for(request), pk)
    _reviewer(request, "cancel a dream cycle")
    if not cycle.is_active:
        messages.error(request, f"Dream cycle {cycle.pk} is {cycle.status}: nothing to cancel.")
    else:
        cycle = cycles.cancel_cycle(cycle=cycle, actor=request.user, reason="Cancelled by hand.")
        messages.success(
            request, f"Dream cycle {cycle.pk} cancelled; its runs can be studied again."
        )
    return _go(request, reverse("cycle-detail", args=[cycle.pk]))


@login_required
@require_POST
def cycle_rerun(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The cycle page's Re-run: the API's re-run (`cycles.rerun_cycle`), then the new cycle."""
    cycle = get_cycle_for(principal_for(request), pk)
    _reviewer(request, "re-run a dream cycle")
    try:
        fresh = cycles.rerun_cycle(cycle=cycle, actor=request.user)
    except cycles.CycleNotStarted as error:
        messages.error(request, f"Could not re-run dream cycle {cycle.pk}: {error}")
        return _go(request, reverse("cycle-detail", args=[cycle.pk]))
    _dream_message(request, fresh)
    return _go(request, reverse("cycle-detail", args=[fresh.pk]))


def _experiment_page(experiment: Experiment) -> str:
    if experiment.proposal_id:
        return reverse("proposal-detail", args=[experiment.proposal_id])
    return reverse("agent-detail", args=[experiment.agent.slug])


@login_required
@require_POST
def experiment_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The proposal page's Cancel experiment: the API's cancel (`cancel_experiment`)."""
    experiment = experiments.get_experiment_for(principal_for(request), pk)
    _reviewer(request, "cancel an experiment")
    try:
        experiments.cancel_experiment(experiment_id=experiment.pk, actor=request.user)
    except ValueError:
        experiment.refresh_from_db()
        messages.error(
            request,
            f"Experiment {experiment.pk} is {experiment.get_status_display().lower()}: "
            "nothing to cancel.",
        )
    else:
        messages.success(
            request,
            f"Experiment {experiment.pk} cancelled; the replays already done are kept, and "
            "Re-run experiment replays the rest.",
        )
    return _go(request, _experiment_page(experiment))


@login_required
@require_POST
def experiment_rerun(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The proposal page's Re-run experiment: the API's re-run (`rerun_experiment`); the flash
    says where it got to (eager tasks finish inside the request)."""
    experiment = experiments.get_experiment_for(principal_for(request), pk)
    _reviewer(request, "re-run an experiment")
    try:
        experiments.rerun_experiment(experiment_id=experiment.pk, actor=request.user)
    except experiments.ExperimentNotRerun as error:
        messages.error(request, f"Could not re-run: {error}")
        return _go(request, _experiment_page(experiment))
    experiment.refresh_from_db()
    status = experiment.get_status_display().lower()
    if experiment.status == Experiment.Status.FAILED:
        messages.error(
            request, f"Experiment {experiment.pk} ran again and failed: {experiment.error}"
        )
    elif experiment.finished_at is not None:
        messages.success(request, f"Experiment {experiment.pk} ran again: {status}.")
    else:
        messages.success(
            request,
            f"Experiment {experiment.pk} queued again ({status}); the replays already done are "
            "kept, a worker replays the rest.",
        )
    return _go(request, _experiment_page(experiment))


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
