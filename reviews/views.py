"""HTML pages of the review side: queue, proposal, replay, decisions, edits, hand-written
proposals; and the agent page's review slots."""

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents.access import get_agent_for, principal_for
from agents.charts import pass_rate_chart
from agents.models import ConfigVersion, Membership
from dreams import handwritten, rebase
from dreams.models import Experiment
from dreams.proposals import InvalidTransition
from reviews import selectors, services
from reviews.access import get_proposal_for_user
from reviews.diffs import diff_versions

DECISIONS = {
    "approve": services.approve_proposal,
    "reject": services.reject_proposal,
    "request_changes": services.request_changes,
}


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@login_required
def queue(request: HttpRequest) -> HttpResponse:
    principal = principal_for(request)
    filters = selectors.QueueFilters.from_query(request.GET)
    context = selectors.review_queue(
        workspace=principal.workspace, filters=filters, user=request.user
    )
    context["page_numbers"] = selectors.page_numbers(context["page"])
    template = "reviews/queue.html"
    if request.htmx and not request.htmx.boosted:
        template += "#queue-results"
    return render(request, template, context)


def _proposal_context(request: HttpRequest, proposal: Any, **extra: Any) -> dict[str, Any]:
    outcome = request.GET.get("outcome", "")
    evidence = selectors.proposal_evidence(
        proposal=proposal, outcome=outcome, replay_page=_int(request.GET.get("rpage"), 1) or 1
    )
    stats = evidence["stats"]
    chart_rows = [
        (label, block.get("baseline"), block.get("candidate"))
        for _, label, block in evidence["metric_rows"]
    ]
    view = "split" if request.GET.get("view") == "split" else "unified"
    role = proposal.viewer_role
    needed = services.approvals_needed(proposal=proposal)
    context = {
        "proposal": proposal,
        "docs": diff_versions(proposal.base_version, proposal.candidate_version),
        "diff_view": view,
        "chart": pass_rate_chart(chart_rows),
        "can_review": role in (Membership.Role.REVIEWER, Membership.Role.ADMIN),
        "is_admin": role == Membership.Role.ADMIN,
        "approvals_needed": needed,
        "self_authored": needed >= 2 and proposal.author_id == request.user.pk,
        "reviewers": selectors.assignable_reviewers(workspace=proposal.agent.workspace),
        "neighbours": selectors.queue_neighbours(proposal=proposal),
        "can_edit": role in (Membership.Role.REVIEWER, Membership.Role.ADMIN)
        and proposal.status in services.EDITABLE,
        "verdict": stats.get("verdict", ""),
        "stale": rebase.is_stale(proposal),
        # One reverse() instead of one per replay row (the list can hold hundreds).
        "replay_prefix": reverse("proposal-detail", args=[proposal.pk]) + "replays/",
        **evidence,
    }
    context.update(extra)
    return context


@login_required
def proposal_page(request: HttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk)
    context = _proposal_context(request, proposal)
    template = "reviews/proposal.html"
    if request.htmx and request.htmx.target == "replay-list":
        template += "#replay-list"
    return render(request, template, context)


@login_required
def replay_detail(request: HttpRequest, pk: int, run_id: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk)
    experiment = Experiment.objects.filter(proposal=proposal).order_by("-id").first()
    if experiment is None or not experiment.replays.filter(run_id=run_id).exists():
        raise Http404("No replay of that run in this proposal's experiment.")
    context = {"proposal": proposal, "experiment": experiment}
    context.update(selectors.replay_pair(experiment=experiment, run_id=run_id))
    template = "reviews/replay.html"
    if request.htmx:
        template += "#replay-trajectory"
    return render(request, template, context)


@login_required
@require_POST
def decide(request: HttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk, write=True)
    action = request.POST.get("action", "")
    service = DECISIONS.get(action)
    if service is None:
        return HttpResponse("Unknown decision.", status=400)
    comment = request.POST.get("comment", "")
    try:
        service(
            proposal_id=proposal.pk,
            reviewer=request.user,
            comment=comment,
            expected_lock_version=_int(request.POST.get("lock_version")),
        )
    except services.DecisionRefused as refused:
        return _refuse(request, proposal, str(refused), comment=comment, status=400)
    except InvalidTransition:
        fresh = get_proposal_for_user(request.user, pk)
        last = fresh.decisions.select_related("reviewer").order_by("-id").first()
        verbs = {
            "approve": "approved it",
            "reject": "rejected it",
            "request_changes": "asked for changes",
        }
        who = f" {last.reviewer.get_username()} {verbs[last.kind]}." if last else ""
        message = (
            f"This proposal changed while you were reading it: it is now "
            f"{fresh.get_status_display().lower()}.{who} Your decision was not recorded."
        )
        return _refuse(request, fresh, message, comment=comment, status=409)
    labels = {"approve": "Approved", "reject": "Rejected", "request_changes": "Changes requested"}
    proposal.refresh_from_db(fields=["status"])
    if action == "approve" and proposal.status != "approved":
        messages.success(request, "Approval recorded; another approval is still required.")
    else:
        messages.success(request, f"{labels[action]}: proposal #{proposal.pk}.")
    return redirect("proposal-detail", pk=proposal.pk)


def _refuse(
    request: HttpRequest, proposal: Any, message: str, *, comment: str, status: int
) -> HttpResponse:
    context = _proposal_context(request, proposal, decision_error=message, draft_comment=comment)
    return render(request, "reviews/proposal.html", context, status=status)


@login_required
def edit_page(request: HttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk, write=True)
    candidate = proposal.candidate_version
    docs = [
        {"field": f"doc-{i}", "path": path, "text": text}
        for i, (path, text) in enumerate(sorted((candidate.memory_documents or {}).items()))
    ]
    error = ""
    if request.method == "POST":
        memory = {}
        for doc in docs:
            doc["text"] = request.POST.get(doc["field"], doc["text"]).replace("\r\n", "\n")
            memory[doc["path"]] = doc["text"]
        new_path = request.POST.get("new_path", "").strip()
        if new_path:
            memory[new_path] = request.POST.get("new_text", "").replace("\r\n", "\n")
        system_prompt = request.POST.get("system_prompt", "").replace("\r\n", "\n")
        try:
            new = services.edit_proposal(
                proposal_id=proposal.pk,
                editor=request.user,
                system_prompt=system_prompt,
                memory_documents=memory,
                note=request.POST.get("note", "")[:300],
                expected_lock_version=_int(request.POST.get("lock_version")),
            )
        except services.DecisionRefused as refused:
            error = str(refused)
        except InvalidTransition:
            error = "This proposal changed while you were editing; reload it and edit the latest revision."
        else:
            messages.success(
                request,
                f"Saved revision {new.revision} as proposal #{new.pk}."
                + (
                    " Replays are running."
                    if new.status == "replaying"
                    else " It stays drafted until an experiment replays it."
                ),
            )
            return redirect("proposal-detail", pk=new.pk)
        candidate_prompt = system_prompt
    else:
        candidate_prompt = candidate.system_prompt
    return render(
        request,
        "reviews/edit.html",
        {"proposal": proposal, "system_prompt": candidate_prompt, "docs": docs, "error": error},
        status=400 if error else 200,
    )


@login_required
@require_POST
def rebase_page(request: HttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk, write=True)
    try:
        result = rebase.rebase_proposal(proposal_id=proposal.pk, actor=request.user)
    except (rebase.RebaseRefused, InvalidTransition) as refused:
        messages.error(request, str(refused))
        return redirect("proposal-detail", pk=proposal.pk)
    if result.pk == proposal.pk:
        messages.error(request, "The rebase conflicts; changes are requested (see below).")
    else:
        messages.success(request, f"Rebased as proposal #{result.pk}; replays are running.")
    return redirect("proposal-detail", pk=result.pk)


@login_required
@require_POST
def assign(request: HttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk, write=True)
    assignee_id = _int(request.POST.get("assignee"))
    assignee = get_user_model().objects.filter(pk=assignee_id).first() if assignee_id else None
    try:
        services.assign_proposal(proposal_id=proposal.pk, actor=request.user, assignee=assignee)
    except services.DecisionRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(
            request, f"Assigned to {assignee.get_username()}." if assignee else "Unassigned."
        )
    return redirect("proposal-detail", pk=proposal.pk)


@login_required
@require_POST
def comment(request: HttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk, write=True)
    try:
        services.comment_on_proposal(
            proposal_id=proposal.pk, author=request.user, body=request.POST.get("body", "")
        )
    except services.DecisionRefused as refused:
        messages.error(request, str(refused))
    return redirect(reverse("proposal-detail", args=[proposal.pk]) + "#discussion")


@login_required
def propose_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Propose a change by hand: edit the stable documents, pick the runs that judge them."""
    principal = principal_for(request)
    agent = get_agent_for(principal, slug)
    if not principal.can_review:
        raise PermissionDenied("Only reviewers and admins can propose changes.")
    stable = agent.stable_version
    if stable is None:
        messages.error(request, "The agent has no stable version to change yet.")
        return redirect("agent-detail", slug=agent.slug)
    docs = [
        {"field": f"doc-{i}", "path": path, "text": text}
        for i, (path, text) in enumerate(sorted((stable.memory_documents or {}).items()))
    ]
    form = {"title": "", "rationale": "", "runs": "unstudied", "since": "", "run_ids": ""}
    system_prompt, error = stable.system_prompt, ""
    if request.method == "POST":
        form = {key: request.POST.get(key, "").strip() for key in form}
        system_prompt = request.POST.get("system_prompt", "").replace("\r\n", "\n")
        documents: dict[str, str | None] = {"system_prompt": system_prompt}
        for doc in docs:
            doc["text"] = request.POST.get(doc["field"], doc["text"]).replace("\r\n", "\n")
            documents[doc["path"]] = doc["text"]
        choice = handwritten.RunChoice()
        if form["runs"] == "since":
            from agents.api import _parse_time

            choice = handwritten.RunChoice(since=_parse_time(form["since"]), use_filter=True)
        elif form["runs"] == "ids":
            ids = [_int(part) for part in form["run_ids"].replace(",", " ").split()]
            choice = handwritten.RunChoice(run_ids=[i for i in ids if i is not None])
        try:
            if not form["title"]:
                raise handwritten.ProposalInvalid({"title": ["give the change a title"]})
            proposal = handwritten.propose_change(
                agent=agent,
                actor=request.user,
                title=form["title"],
                rationale=form["rationale"],
                documents=documents,
                runs=choice,
            )
        except handwritten.ProposalInvalid as invalid:
            error = str(invalid)
        else:
            messages.success(request, f"Proposal #{proposal.pk} created; replays are running.")
            return redirect("proposal-detail", pk=proposal.pk)
    context = {
        "agent": agent,
        "stable": stable,
        "system_prompt": system_prompt,
        "docs": docs,
        "form": form,
        "error": error,
    }
    return render(request, "reviews/propose.html", context, status=400 if error else 200)


# Slots on the agent page (agents/slots.py), registered in ReviewsConfig.ready().


def agent_actions(request: HttpRequest | None, context: dict[str, Any]) -> str:
    """The agent page's "Propose a change" button."""
    return render_to_string("reviews/_agent_actions.html", context, request=request)


def agent_versions(request: HttpRequest | None, context: dict[str, Any]) -> str:
    """The agent page's comparison of two config versions (?a=&b=, newest two by default)."""
    agent, versions = context["agent"], context["versions"]
    query = request.GET if request is not None else {}
    diff_a = _int(query.get("a"), versions[1].number if len(versions) > 1 else None)
    diff_b = _int(query.get("b"), versions[0].number if versions else None)
    extra: dict[str, Any] = {"diff_a": diff_a, "diff_b": diff_b, "version_docs": None}
    if diff_a and diff_b:
        pair = {
            v.number: v
            for v in ConfigVersion.objects.filter(agent=agent, number__in=[diff_a, diff_b])
        }
        if len(pair) == 2 or (diff_a == diff_b and pair):
            extra["version_docs"] = diff_versions(pair[diff_a], pair[diff_b])
    return render_to_string("reviews/_agent_versions.html", {**context, **extra}, request=request)
