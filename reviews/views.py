"""HTML pages of the review side: queue, proposal, decisions, agent and dreams pages, audit log."""

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from agents.access import get_agent_for, principal_for
from agents.models import ConfigVersion, Membership
from dreams import handwritten, rebase
from dreams import stats as verdict_stats
from dreams.cycles import CycleNotStarted
from dreams.experiments.evidence import latest_verdict
from dreams.models import Experiment
from dreams.proposals import InvalidTransition
from reviews import agent_overview, selectors, services
from reviews.access import get_proposal_for_user
from reviews.charts import pass_rate_chart, version_pass_rate_chart
from reviews.diffs import attach_threads, diff_versions

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


def _verdict_context(stats: dict[str, Any]) -> dict[str, Any]:
    verdict = verdict_stats.normalize_verdict(stats.get("verdict"))
    return {
        "verdict": verdict,
        "verdict_label": verdict_stats.VERDICTS.get(verdict, ""),
        "verdict_help": verdict_stats.VERDICT_HELP.get(verdict, ""),
        "verdict_reason": stats.get("verdict_reason", ""),
        "needs_ack": verdict in verdict_stats.NEEDS_ACKNOWLEDGEMENT,
    }


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
    reviewed = selectors.last_reviewed_revision(proposal=proposal, user=request.user)
    since = reviewed if reviewed and request.GET.get("since") == str(reviewed.pk) else None
    if since is not None:
        # What changed since the revision this reviewer last looked at, not since the base.
        docs = diff_versions(since.candidate_version, proposal.candidate_version)
        orphan_threads: list[Any] = []
    else:
        docs = diff_versions(proposal.base_version, proposal.candidate_version)
        orphan_threads = attach_threads(docs, evidence["diff_threads"])
    context = {
        "proposal": proposal,
        "docs": docs,
        "reviewed_revision": reviewed,
        "since": since,
        "orphan_threads": orphan_threads,
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
        **_verdict_context(stats),
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
    if request.htmx and request.htmx.target == "replay-progress":
        if proposal.status != "replaying":
            return HttpResponseClientRefresh()  # replays finished: show the evidence
        template += "#replay-progress"
    elif request.htmx and request.htmx.target == "replay-list":
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
    context["arm_heads"] = [
        ("baseline", context["baseline"], experiment.baseline_version.number),
        ("candidate", context["candidate"], experiment.candidate_version.number),
    ]
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
    extra = {"acknowledge_verdict": request.POST.get("acknowledge_verdict") == "1"}
    try:
        service(
            proposal_id=proposal.pk,
            reviewer=request.user,
            comment=comment,
            expected_lock_version=_int(request.POST.get("lock_version")),
            **(extra if action == "approve" else {}),
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
            messages.success(request, _saved_message(new))
            if request.htmx:
                return HttpResponseClientRedirect(reverse("proposal-detail", args=[new.pk]))
            return redirect("proposal-detail", pk=new.pk)
        candidate_prompt = system_prompt
    else:
        candidate_prompt = candidate.system_prompt
    return render(
        request,
        "reviews/edit.html",
        {"proposal": proposal, "system_prompt": candidate_prompt, "docs": docs, "error": error},
        # htmx swaps only 2xx answers: the form with its error comes back as 200 to htmx.
        status=400 if error and not request.htmx else 200,
    )


def _saved_message(new: Any) -> str:
    """The flash after saving an edit, from the revision's status *now* (with eager tasks the
    replays may already have finished inside the request)."""
    new.refresh_from_db(fields=["status"])
    head = f"Saved revision {new.revision} as proposal #{new.pk}."
    if new.status == "replaying":
        return head + " Replays are running; the page updates when they finish."
    if new.status == "ready":
        verdict, _ = latest_verdict(proposal_id=new.pk)
        label = verdict_stats.VERDICTS.get(verdict, "")
        return (
            head
            + " Replays finished"
            + (f": {label.lower()}" if label else "")
            + ("; it is ready for review.")
        )
    if new.status == "drafted":
        return head + " It stays drafted until an experiment replays it."
    return head + f" It is {new.get_status_display().lower()}."


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
        made = services.comment_on_proposal(
            proposal_id=proposal.pk,
            author=request.user,
            body=request.POST.get("body", ""),
            document=request.POST.get("document", ""),
            line=request.POST.get("line", ""),
            quote=request.POST.get("quote", ""),
            reply_to_id=_int(request.POST.get("reply_to")),
        )
    except services.DecisionRefused as refused:
        messages.error(request, str(refused))
        return redirect(reverse("proposal-detail", args=[proposal.pk]) + "#discussion")
    anchor = f"#c-{made.reply_to_id or made.pk}" if made.document else "#discussion"
    return redirect(reverse("proposal-detail", args=[proposal.pk]) + anchor)


@login_required
@require_POST
def resolve_thread(request: HttpRequest, pk: int, comment_id: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk, write=True)
    if not proposal.comments.filter(pk=comment_id).exists():
        raise Http404("No such thread on this proposal.")
    resolved = request.POST.get("resolved", "1") == "1"
    try:
        services.resolve_thread(comment_id=comment_id, actor=request.user, resolved=resolved)
    except services.DecisionRefused as refused:
        messages.error(request, str(refused))
    return redirect(reverse("proposal-detail", args=[proposal.pk]) + f"#c-{comment_id}")


# ------------------------------------------------------------------------------ agents


@login_required
def agent_page(request: HttpRequest, slug: str) -> HttpResponse:
    agent = get_agent_for(principal_for(request), slug)
    # Summing a month of runs is the slow part of this page, so that panel loads after it.
    wants_spend = request.GET.get("panel") == "spend"
    if wants_spend and request.htmx:
        context = {"agent": agent, "spend": agent_overview.spend(agent=agent)}
        return render(request, "agents/agent.html#spend", context)
    context = agent_overview.agent_overview(agent=agent)
    context["spend"] = agent_overview.spend(agent=agent) if wants_spend else None
    context["chart"] = version_pass_rate_chart(context["pass_rates"])
    context["polling"] = any(c.is_active for c in context["cycles"])
    versions = context["versions"]
    context["diff_a"] = _int(
        request.GET.get("a"), versions[1].number if len(versions) > 1 else None
    )
    context["diff_b"] = _int(request.GET.get("b"), versions[0].number if versions else None)
    if context["diff_a"] and context["diff_b"]:
        pair = {
            v.number: v
            for v in ConfigVersion.objects.filter(
                agent=agent, number__in=[context["diff_a"], context["diff_b"]]
            )
        }
        if len(pair) == 2 or context["diff_a"] == context["diff_b"]:
            context["version_docs"] = diff_versions(
                pair[context["diff_a"]], pair[context["diff_b"]]
            )
    template = "agents/agent.html"
    if request.htmx and request.htmx.target in ("cycles", "version-diff"):
        template += "#" + request.htmx.target
    return render(request, template, context)


@login_required
@require_POST
def dream_now(request: HttpRequest, slug: str) -> HttpResponse:
    principal = principal_for(request)
    agent = get_agent_for(principal, slug)
    if not principal.can_review:
        raise PermissionDenied("Only reviewers and admins can start a dream cycle.")
    try:
        cycle = agent_overview.start_dream(agent=agent, user=request.user)
    except CycleNotStarted as error:
        messages.error(request, f"Could not start a dream cycle: {error}")
    else:
        _dream_message(request, cycle)
    return redirect("agent-detail", slug=agent.slug)


def _dream_message(request: HttpRequest, cycle: Any) -> None:
    """Say what the cycle did, not what it was asked (eager tasks finish inside the request)."""
    cycle.refresh_from_db()
    if cycle.status == cycle.Status.SUCCEEDED:
        drafted = cycle.proposals.count()
        messages.success(
            request,
            f"Dream cycle {cycle.pk} finished: {drafted} proposal{'s' if drafted != 1 else ''} "
            "drafted.",
        )
    elif cycle.status == cycle.Status.FAILED:
        messages.error(request, f"Dream cycle {cycle.pk} failed: {cycle.error or 'see its page'}.")
    elif cycle.status == cycle.Status.RUNNING:
        messages.success(request, f"Dream cycle {cycle.pk} is running.")
    else:
        messages.success(request, f"Dream cycle {cycle.pk} queued; a worker will start it.")


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


@login_required
def dreams_list(request: HttpRequest) -> HttpResponse:
    principal = principal_for(request)
    cycles = agent_overview.cycles_for(workspace=principal.workspace)
    status = request.GET.get("status", "")
    if status:
        cycles = cycles.filter(status=status)
    page = Paginator(cycles, 50).get_page(request.GET.get("page"))
    template = "reviews/dreams.html"
    if request.htmx and request.htmx.target == "cycles":
        template += "#cycles"
    cycles_on_page = list(page.object_list)
    context = {
        "page": page,
        "cycles": cycles_on_page,
        "status": status,
        "polling": any(c.is_active for c in cycles_on_page),
    }
    return render(request, template, context)


@login_required
def cycle_page(request: HttpRequest, pk: int) -> HttpResponse:
    cycle = agent_overview.get_cycle_for(workspace=principal_for(request).workspace, pk=pk)
    return render(request, "reviews/cycle.html", agent_overview.cycle_detail(cycle=cycle))


@login_required
def cycle_markdown(request: HttpRequest, pk: int) -> HttpResponse:
    cycle = agent_overview.get_cycle_for(workspace=principal_for(request).workspace, pk=pk)
    response = HttpResponse(
        agent_overview.cycle_markdown(cycle=cycle), content_type="text/markdown; charset=utf-8"
    )
    name = slugify(f"{cycle.agent.slug}-cycle-{cycle.pk}")
    response["Content-Disposition"] = f'attachment; filename="{name}.md"'
    return response


@login_required
def audit_page(request: HttpRequest) -> HttpResponse:
    principal = principal_for(request)
    action = request.GET.get("action", "")[:64]
    actor = request.GET.get("actor", "")[:100]
    target = request.GET.get("target", "")[:100]
    events = selectors.audit_log(
        workspace=principal.workspace, action=action, actor=actor, target=target
    )
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "events": page.object_list,
        "action": action,
        "actor": actor,
        "target": target,
        "actions": selectors.audit_actions(workspace=principal.workspace),
    }
    template = "reviews/audit.html"
    if request.htmx and not request.htmx.boosted:
        template += "#audit-results"
    return render(request, template, context)
