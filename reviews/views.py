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
from django_htmx.http import HttpResponseClientRedirect, reselect, reswap, retarget

from agents.access import get_agent_for, principal_for
from agents.actors import person_of, user_of
from agents.charts import pass_rate_chart
from agents.middleware import HtmxHttpRequest
from agents.models import ConfigVersion, Membership
from agents.run_sets import RunSetInvalid, run_sets_for
from dreams import experiments, handwritten, rebase
from dreams import stats as verdict_stats
from dreams.experiments.evidence import latest_verdict
from dreams.models import Experiment
from dreams.proposals import InvalidTransition
from reviews import selectors, services
from reviews.access import get_proposal_for_user
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
def queue(request: HtmxHttpRequest) -> HttpResponse:
    principal = principal_for(request)
    filters = selectors.QueueFilters.from_query(request.GET)
    context = selectors.review_queue(
        workspace=principal.workspace, filters=filters, user=user_of(request.user)
    )
    context["page_numbers"] = selectors.page_numbers(context["page"])
    template = "reviews/queue.html"
    if request.htmx and not request.htmx.boosted:
        template += "#queue-results"
    return render(request, template, context)


def _chart_label(label: str) -> str:
    """A run set's name fits the chart's label column (the table beside it has it whole)."""
    label = label.removeprefix("Run set: ")
    return label if len(label) <= 17 else label[:16] + "…"


def _verdict_context(stats: dict[str, Any]) -> dict[str, Any]:
    verdict = verdict_stats.normalize_verdict(stats.get("verdict"))
    return {
        "verdict": verdict,
        "verdict_label": verdict_stats.VERDICTS.get(verdict, ""),
        "verdict_help": verdict_stats.VERDICT_HELP.get(verdict, ""),
        "verdict_reason": stats.get("verdict_reason", ""),
        "needs_ack": verdict in verdict_stats.NEEDS_ACKNOWLEDGEMENT,
    }


def _experiment_controls(experiment: Any) -> dict[str, bool]:
    """Which of the experiment's Cancel / Re-run buttons its state allows (the services' rules)."""
    if experiment is None:
        return {"experiment_can_cancel": False, "experiment_can_rerun": False}
    return {
        "experiment_can_cancel": experiments.can_cancel(experiment),
        "experiment_can_rerun": experiments.can_rerun(experiment),
    }


def _proposal_context(request: HttpRequest, proposal: Any, **extra: Any) -> dict[str, Any]:
    outcome = request.GET.get("outcome", "")
    evidence = selectors.proposal_evidence(
        proposal=proposal, outcome=outcome, replay_page=_int(request.GET.get("rpage"), 1) or 1
    )
    stats = evidence["stats"]
    chart_rows = [
        (_chart_label(label), block.get("baseline"), block.get("candidate"))
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
        **_experiment_controls(evidence.get("experiment")),
        # One reverse() instead of one per replay row (the list can hold hundreds).
        "replay_prefix": reverse("proposal-detail", args=[proposal.pk]) + "replays/",
        **evidence,
    }
    context.update(extra)
    return context


@login_required
def proposal_page(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk)
    context = _proposal_context(request, proposal)
    template = "reviews/proposal.html"
    if request.htmx and request.htmx.target == "replay-progress":
        experiment = context.get("experiment")
        if proposal.status != "replaying" or (experiment and experiment.status == "failed"):
            # Replays finished (or stopped): swap the whole page body in (numbers, verdict,
            # decision bar), with no reload.
            if proposal.status == "replaying":
                messages.error(request, "Replays stopped before they finished; see below.")
            else:
                label = context.get("verdict_label", "")
                finished = "Replays finished" + (f": {label.lower()}" if label else "")
                messages.success(request, f"{finished}. The numbers below are the new ones.")
            response = render(request, template, context)
            return reselect(retarget(reswap(response, "outerHTML"), "main.page"), "main.page")
        template += "#replay-progress"
    elif request.htmx and request.htmx.target == "replay-list":
        template += "#replay-list"
    return render(request, template, context)


@login_required
def replay_detail(request: HtmxHttpRequest, pk: int, run_id: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk)
    experiment = Experiment.objects.filter(proposal=proposal).order_by("-id").first()
    if experiment is None or not experiment.replays.filter(run_id=run_id).exists():
        raise Http404("No replay of that run in this proposal's experiment.")
    context: dict[str, Any] = {"proposal": proposal, "experiment": experiment}
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
            reviewer=person_of(request),
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
def edit_page(request: HtmxHttpRequest, pk: int) -> HttpResponse:
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
                editor=person_of(request),
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
def resolve_conflict(request: HttpRequest, pk: int) -> HttpResponse:
    """Resolve a conflicted rebase in the editor on the proposal page; replays the result."""
    proposal = get_proposal_for_user(request.user, pk, write=True)
    conflict = proposal.metadata.get("rebase_conflict") or {}
    documents: dict[str, str | None] = {}
    for index, doc in enumerate(conflict.get("documents") or []):
        text = request.POST.get(f"resolve-{index}")
        if text is not None:
            documents[doc["document"]] = text.replace("\r\n", "\n")
    try:
        new = rebase.resolve_rebase_conflict(
            proposal_id=proposal.pk, actor=request.user, documents=documents
        )
    except rebase.ConflictUnresolved as unresolved:
        context = _proposal_context(
            request, proposal, resolve_error=str(unresolved), resolve_texts=documents
        )
        return render(request, "reviews/proposal.html", context, status=400)
    except (rebase.RebaseRefused, InvalidTransition) as refused:
        messages.error(request, str(refused))
        return redirect("proposal-detail", pk=proposal.pk)
    messages.success(
        request,
        f"Conflict resolved: revision {new.revision} as proposal #{new.pk} on "
        f"v{new.base_version.number}; replays are running and approvals start again.",
    )
    return redirect("proposal-detail", pk=new.pk)


@login_required
@require_POST
def assign(request: HttpRequest, pk: int) -> HttpResponse:
    proposal = get_proposal_for_user(request.user, pk, write=True)
    assignee_id = _int(request.POST.get("assignee"))
    assignee = get_user_model().objects.filter(pk=assignee_id).first() if assignee_id else None
    try:
        services.assign_proposal(
            proposal_id=proposal.pk, actor=person_of(request), assignee=assignee
        )
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
            author=person_of(request),
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
        services.resolve_thread(comment_id=comment_id, actor=person_of(request), resolved=resolved)
    except services.DecisionRefused as refused:
        messages.error(request, str(refused))
    return redirect(reverse("proposal-detail", args=[proposal.pk]) + f"#c-{comment_id}")


@login_required
@require_POST
def save_run_set(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the proposal's replayed runs (all, or the outcome tab shown) as a run set."""
    proposal = get_proposal_for_user(request.user, pk, write=True)
    try:
        made = services.save_replays_as_run_set(
            proposal=proposal,
            actor=request.user,
            name=request.POST.get("name", ""),
            outcome=request.POST.get("outcome", ""),
            pinned=request.POST.get("pinned") == "on",
        )
    except RunSetInvalid as invalid:
        messages.error(request, f"Could not save the run set: {invalid}")
    else:
        messages.success(
            request,
            f"Saved {made.member_count} runs as run set “{made.name}”"
            + (" (pinned: every experiment replays it)." if made.pinned else "."),
        )
    return redirect(reverse("proposal-detail", args=[proposal.pk]) + "#evidence")


def _since(value: str) -> Any:
    """The propose page's date (YYYY-MM-DD, UTC midnight) or a full timestamp."""
    from agents.timestamps import TimestampError, parse_timestamp

    try:
        return parse_timestamp(value + "T00:00:00Z" if len(value) == 10 else value)
    except TimestampError as exc:
        raise handwritten.ProposalInvalid({"since": [str(exc)]}) from None


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
    form = {
        "title": "",
        "rationale": "",
        "runs": "unstudied",
        "since": "",
        "run_ids": "",
        "run_set": "",
    }
    system_prompt, error = stable.system_prompt, ""
    if request.method == "POST":
        form = {key: request.POST.get(key, "").strip() for key in form}
        system_prompt = request.POST.get("system_prompt", "").replace("\r\n", "\n")
        documents: dict[str, str | None] = {"system_prompt": system_prompt}
        for doc in docs:
            doc["text"] = request.POST.get(doc["field"], doc["text"]).replace("\r\n", "\n")
            documents[doc["path"]] = doc["text"]
        choice = handwritten.RunChoice()
        try:
            if form["runs"] == "since":
                choice = handwritten.RunChoice(since=_since(form["since"]), use_filter=True)
            elif form["runs"] == "ids":
                ids = [_int(part) for part in form["run_ids"].replace(",", " ").split()]
                choice = handwritten.RunChoice(run_ids=[i for i in ids if i is not None])
            elif form["runs"] == "set":
                choice = handwritten.RunChoice(run_set=_int(form["run_set"], 0))
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
    sets = list(run_sets_for(agent))
    context = {
        "agent": agent,
        "stable": stable,
        "run_sets": sets,
        "pinned_sets": [s.name for s in sets if s.pinned],
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
