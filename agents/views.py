"""HTML pages of the capture side: agents overview, agent page (apps above fill its slots), runs
list, run page, feedback, run sets, workspace switcher, audit log."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents import run_sets
from agents.access import SESSION_KEY, get_agent_for, get_run_for, memberships_for, principal_for
from agents.charts import version_pass_rate_chart
from agents.middleware import HtmxHttpRequest
from agents.models import Feedback, Run, RunSet
from agents.selectors import (
    agent_page_context,
    agents_for,
    agents_with_recent_counts,
    audit_actions,
    audit_log,
    recent_runs,
    run_detail,
)
from agents.services import add_feedback
from agents.transcripts import message_index_of_step

RUNS_PAGE_SIZE = 50


@login_required
def agents_overview(request: HttpRequest) -> HttpResponse:
    principal = principal_for(request)
    return render(
        request,
        "agents/home.html",
        {"agents": agents_with_recent_counts(principal.workspace, days=1)},
    )


@login_required
def agent_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The agent's facts, pass rate by version and config versions; the apps above fill its slots
    (dreams: "Dream now", spend, cycles; reviews: propose, version diff; rollouts: the split)."""
    agent = get_agent_for(principal_for(request), slug)
    context = agent_page_context(agent)
    context["chart"] = version_pass_rate_chart(context["pass_rates"])
    return render(request, "agents/agent.html", context)


@login_required
def runs_page(request: HtmxHttpRequest) -> HttpResponse:
    """Newest runs first; paged without a COUNT (tables reach millions of rows)."""
    principal = principal_for(request)
    agent = request.GET.get("agent", "")[:80]
    status = request.GET.get("status", "")
    if status not in Run.Status.values:
        status = ""
    try:
        page = max(1, int(request.GET.get("page") or 1))
    except ValueError:
        page = 1
    rows = recent_runs(
        principal.workspace,
        agent_slug=agent or None,
        status=status or None,
        offset=(page - 1) * RUNS_PAGE_SIZE,
        limit=RUNS_PAGE_SIZE + 1,
    )
    context = {
        "runs": rows[:RUNS_PAGE_SIZE],
        "has_next": len(rows) > RUNS_PAGE_SIZE,
        "page": page,
        "agent": agent,
        "status": status,
        "statuses": Run.Status.choices,
        "agents": agents_for(principal.workspace),
        "can_save_set": principal.can_review and bool(agent),
        "max_set_runs": RunSet.MAX_RUNS,
    }
    template = "agents/runs.html"
    if request.htmx and not request.htmx.boosted:
        template += "#run-results"
    return render(request, template, context)


@login_required
def run_page(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_for(request)
    run = get_run_for(principal, pk)
    context = run_detail(run)
    context["raw_json"] = json.dumps(
        {
            "external_id": run.external_id,
            "status": run.status,
            "model": run.model,
            "system": run.system,
            "tools": run.tools,
            "messages": run.messages,
            "metadata": run.metadata,
            "expectations": run.expectations,
            "tags": run.tags,
        },
        indent=2,
        ensure_ascii=False,
    )
    context["can_give_feedback"] = principal.can_review
    context["ratings"] = Feedback.Rating.choices
    # ?step=N marks a diagnosed step (an assistant turn) on its message.
    step = request.GET.get("step", "")
    context["divergence_message"] = (
        message_index_of_step(run.messages, int(step)) if step.isdigit() else None
    )
    return render(request, "agents/run.html", context)


@login_required
@require_POST
def run_feedback(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_for(request)
    run = get_run_for(principal, pk)
    if not principal.can_review:
        raise PermissionDenied("Viewers cannot add feedback.")
    rating = request.POST.get("rating", "")
    if rating not in Feedback.Rating.values:
        messages.error(request, "Choose 👍 positive or 👎 negative before saving feedback.")
    else:
        add_feedback(
            run=run,
            rating=rating,
            comment=request.POST.get("comment", "").strip()[:5000],
            source=Feedback.Source.HUMAN,
            author=request.user,
        )
        messages.success(request, "Feedback saved.")
    return redirect("run-detail", pk=run.pk)


@login_required
@require_POST
def switch_workspace(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("workspace")
    for membership in memberships_for(request.user):
        if str(membership.workspace_id) == wanted:
            request.session[SESSION_KEY] = membership.workspace_id
            return redirect("home")
    raise PermissionDenied("Not a member of that workspace.")


@login_required
def run_sets_page(request: HttpRequest, slug: str) -> HttpResponse:
    """An agent's run sets; POST saves the runs list's filters as a new set."""
    principal = principal_for(request)
    agent = get_agent_for(principal, slug)
    error = ""
    if request.method == "POST":
        if not principal.can_review:
            raise PermissionDenied("Only reviewers and admins can make run sets.")
        status = request.POST.get("status", "")
        status = status if status in Run.Status.values else ""
        try:
            run_set = run_sets.create_run_set(
                agent=agent,
                actor=request.user,
                name=request.POST.get("name", ""),
                pinned=request.POST.get("pinned") == "on",
                external_ids=run_sets.external_ids_matching(agent=agent, status=status or None),
                origin=RunSet.Origin.FILTER,
                origin_detail={"filter": {"status": status} if status else {}},
            )
        except run_sets.RunSetInvalid as invalid:
            error = str(invalid)
        else:
            messages.success(
                request,
                f"Saved {run_set.member_count} runs as run set “{run_set.name}”.",  # type: ignore[attr-defined]
            )
            return redirect("agent-run-sets", slug=agent.slug)
    context = {
        "agent": agent,
        "run_sets": run_sets.run_sets_for(agent),
        "can_change": principal.can_review,
        "error": error,
    }
    return render(request, "agents/run_sets.html", context, status=400 if error else 200)


@login_required
@require_POST
def run_set_action(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Pin, unpin or delete one run set."""
    principal = principal_for(request)
    agent = get_agent_for(principal, slug)
    run_set = run_sets.get_run_set_for(principal, agent, pk)
    if not principal.can_review:
        raise PermissionDenied("Only reviewers and admins can change run sets.")
    action = request.POST.get("action", "")
    if action in ("pin", "unpin"):
        run_sets.update_run_set(
            run_set=run_set, actor=request.user, changes={"pinned": action == "pin"}
        )
        messages.success(
            request,
            f"“{run_set.name}” is "
            + ("pinned: every experiment replays it." if action == "pin" else "no longer pinned."),
        )
    elif action == "delete":
        run_sets.delete_run_set(run_set=run_set, actor=request.user)
        messages.success(request, f"Deleted run set “{run_set.name}”.")
    else:
        return HttpResponse("Unknown action.", status=400)
    return redirect("agent-run-sets", slug=agent.slug)


@login_required
def audit_page(request: HtmxHttpRequest) -> HttpResponse:
    principal = principal_for(request)
    action = request.GET.get("action", "")[:64]
    actor = request.GET.get("actor", "")[:100]
    target = request.GET.get("target", "")[:100]
    events = audit_log(workspace=principal.workspace, action=action, actor=actor, target=target)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "events": page.object_list,
        "action": action,
        "actor": actor,
        "target": target,
        "actions": audit_actions(workspace=principal.workspace),
    }
    template = "agents/audit.html"
    if request.htmx and not request.htmx.boosted:
        template += "#audit-results"
    return render(request, template, context)
