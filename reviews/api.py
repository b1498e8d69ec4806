"""Proposals over REST: the queue, a proposal's evidence, decisions, comments, assignment,
rebase, and proposing a change by hand. Same services and rules as the pages."""

from typing import Any

from django.contrib.auth import get_user_model
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import run_sets
from agents.access import Principal, get_agent_for, principal_for
from agents.actors import Person, user_of
from agents.api import WorkspaceMixin
from agents.models import ApiKey
from agents.run_sets_api import RunSetSerializer
from agents.scopes import DeclaredScope
from agents.timestamps import TimestampError, parse_timestamp
from config.api import (
    ERROR_DOC,
    DefaultPagination,
    StrictBooleanField,
    error_response,
    query_bool,
)
from dreams import handwritten, rebase
from dreams import stats as verdict_stats
from dreams.api import ExperimentSerializer
from dreams.models import Experiment, Proposal
from dreams.patches import unified_diff
from dreams.proposals import InvalidTransition
from reviews import selectors, services
from reviews.access import get_proposal_for
from reviews.models import Decision, ReviewComment
from reviews.replays import replay_rows

S = Proposal.Status
REFUSAL_STATUS = {
    "role": 403,
    "flagged": 403,
    "assignee": 400,
    "comment_required": 400,
    "empty": 400,
    "no_change": 400,
    "verdict_unacknowledged": 400,
    "anchor": 400,
}


class CanReview(permissions.BasePermission):
    """Reading needs a member (or key) of the workspace; writing needs a reviewer or admin."""

    message = "Only reviewers and admins can change proposals."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return principal_for(request).can_review


def person_for(principal: Principal) -> Person:
    """Who decides: the signed-in member, or the member who created the API key."""
    actor = principal.actor
    person = actor.created_by if isinstance(actor, ApiKey) else user_of(actor)
    if person is None:
        raise PermissionDenied(
            "This API key acts for no person; decisions, comments and assignments are "
            "made by a member (use a key created by one, or a session)."
        )
    return person


def _refused(exc: services.DecisionRefused) -> Response:
    code = REFUSAL_STATUS.get(exc.code, status.HTTP_409_CONFLICT)
    fields = {"comment": [str(exc)]} if exc.code == "comment_required" else {}
    if exc.code == "verdict_unacknowledged":
        fields = {"acknowledge_verdict": [str(exc)]}
    return error_response(exc.code, str(exc), fields=fields, status_code=code)


def _conflict(exc: InvalidTransition) -> Response:
    fresh = Proposal.objects.filter(pk=exc.proposal.pk).values_list("status", flat=True).first()
    return error_response(
        "conflict",
        f"{exc} Nothing was recorded.",
        fields={"status": [str(fresh)]},
        status_code=status.HTTP_409_CONFLICT,
    )


# -- serializers ---------------------------------------------------------------------------


class ProposalSummary(serializers.Serializer):
    id = serializers.IntegerField()
    agent = serializers.CharField(source="agent.slug")
    title = serializers.CharField()
    status = serializers.CharField()
    # DRF's metaclass takes declared fields off the class; the stubs see Field.source.
    source = serializers.CharField(help_text="dream | hosted_dream | human (written by a person)")  # type: ignore[assignment]
    revision = serializers.IntegerField()
    base_version = serializers.IntegerField(source="base_version.number")
    candidate_version = serializers.IntegerField(source="candidate_version.number")
    stale = serializers.SerializerMethodField(
        help_text="built on a version that is no longer stable: rebase before approving"
    )
    flags = serializers.ListField(child=serializers.DictField())
    assignee = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()
    approvals_required = serializers.IntegerField(source="agent.required_approvals")
    expected_value = serializers.FloatField()
    verdict = serializers.SerializerMethodField(
        help_text="improves | regresses | no_change | not_measurable | noise ('' before replays)"
    )
    overall = serializers.SerializerMethodField(help_text="paired counts over all replayed runs")
    lock_version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    ready_at = serializers.DateTimeField(allow_null=True)

    def get_stale(self, p: Proposal) -> bool:
        value = getattr(p, "stale", None)
        return bool(value) if value is not None else rebase.is_stale(p)

    def get_assignee(self, p: Proposal) -> str | None:
        return p.assignee.get_username() if p.assignee else None

    def get_approvals(self, p: Proposal) -> int:
        # The list annotates the count (NULL when there is none): no query per row.
        if hasattr(p, "approvals"):
            return int(p.approvals or 0)
        return p.decisions.current_approvals().count()

    def _stats(self, p: Proposal) -> dict[str, Any]:
        if hasattr(p, "stats"):
            return p.stats or {}
        return self.context.get("stats") or {}

    def get_verdict(self, p: Proposal) -> str:
        return verdict_stats.normalize_verdict(self._stats(p).get("verdict"))

    def get_overall(self, p: Proposal) -> dict[str, Any] | None:
        overall = self._stats(p).get("overall")
        if not isinstance(overall, dict):
            return None
        keys = ("n", "fixes", "regressions", "mcnemar_p", "baseline", "candidate")
        return {k: overall.get(k) for k in keys}


class ProposalDetail(ProposalSummary):
    rationale = serializers.CharField()
    author = serializers.SerializerMethodField()
    written_by = serializers.SerializerMethodField()
    revision_of = serializers.IntegerField(source="revision_of_id", allow_null=True)
    stable_version = serializers.IntegerField(source="agent.stable_version.number", allow_null=True)
    documents = serializers.SerializerMethodField(help_text="{before: {name: text}, after: …}")
    diff = serializers.SerializerMethodField(help_text="[{document, status, unified}]")
    experiment = serializers.SerializerMethodField()
    stats = serializers.SerializerMethodField(help_text="the latest experiment's statistics")
    replays = serializers.SerializerMethodField(help_text="replayed runs paired by run")
    decisions = serializers.SerializerMethodField()
    rebase_conflict = serializers.SerializerMethodField(
        help_text="set when a rebase onto the stable version conflicted"
    )

    def get_author(self, p: Proposal) -> str | None:
        return p.author.get_username() if p.author else None

    def get_written_by(self, p: Proposal) -> str:
        return str(p.metadata.get("written_by") or (self.get_author(p) or p.source))

    def get_documents(self, p: Proposal) -> dict[str, dict[str, str]]:
        return {"before": p.base_version.documents, "after": p.candidate_version.documents}

    def get_diff(self, p: Proposal) -> list[dict[str, str]]:
        before, after = p.base_version.documents, p.candidate_version.documents
        out = []
        for name in sorted({*before, *after}):
            old, new = before.get(name), after.get(name)
            if old == new:
                continue
            kind = "added" if old is None else "removed" if new is None else "modified"
            out.append(
                {
                    "document": name,
                    "status": kind,
                    "unified": unified_diff(old or "", new or "", name=name),
                }
            )
        return out

    def get_experiment(self, p: Proposal) -> dict[str, Any] | None:
        experiment = self.context.get("experiment")
        return ExperimentSerializer(experiment).data if experiment else None

    def get_stats(self, p: Proposal) -> dict[str, Any]:
        return self._stats(p)

    def get_replays(self, p: Proposal) -> list[dict[str, Any]]:
        experiment = self.context.get("experiment")
        if experiment is None:
            return []
        return [
            {
                "run_id": row.run_id,
                "external_id": row.external_id,
                "run_set": row.run_set,
                "recorded_status": row.recorded_status,
                "outcome": row.outcome,
                "baseline": [r.verdict for r in row.baseline],
                "candidate": [r.verdict for r in row.candidate],
                "reason": row.reason,
                "off_recording": row.off_recording,
                "unverifiable": row.unverifiable,
            }
            for row in replay_rows(experiment=experiment)
        ]

    def get_decisions(self, p: Proposal) -> list[dict[str, Any]]:
        return [
            {
                "kind": d.kind,
                "reviewer": d.reviewer.get_username(),
                "comment": d.comment,
                "created_at": d.created_at,
            }
            for d in Decision.objects.filter(proposal=p).select_related("reviewer")
        ]

    def get_rebase_conflict(self, p: Proposal) -> dict[str, Any] | None:
        return p.metadata.get("rebase_conflict")


def detail_response(principal: Principal, pk: int, *, code: int = 200) -> Response:
    proposal = get_proposal_for(principal, pk)
    experiment = (
        Experiment.objects.filter(proposal=proposal)
        .select_related("agent", "baseline_version", "candidate_version")
        .order_by("-id")
        .first()
    )
    context = {"experiment": experiment, "stats": (experiment.stats if experiment else {}) or {}}
    return Response(ProposalDetail(proposal, context=context).data, status=code)


# -- list and detail -----------------------------------------------------------------------


class ProposalPagination(DefaultPagination):
    ordering = ("-expected_value", "-id")


API_SORTS = {"value": ("-expected_value", "-id"), "age": ("created_at", "id")}


class ProposalList(WorkspaceMixin, generics.ListAPIView):
    required_scopes = {"GET": "read"}
    """The review queue: its filters and order, cursor-paginated."""

    serializer_class = ProposalSummary
    pagination_class = ProposalPagination

    def get_queryset(self) -> Any:
        params = self.request.query_params
        status_value = params.get("status", S.READY)
        if status_value != "all" and status_value not in S.values:
            raise ValidationError({"status": [f"must be all or one of {', '.join(S.values)}"]})
        sort = params.get("sort", "value")
        if sort not in API_SORTS:
            raise ValidationError({"sort": ["must be value or age"]})
        flag = params.get("flag", "")
        if flag and flag not in {f for f, _ in selectors.FLAG_CHOICES}:
            raise ValidationError({"flag": ["unknown flag filter"]})
        verdict = params.get("verdict", "")
        if verdict and verdict not in verdict_stats.VERDICTS:
            raise ValidationError(
                {"verdict": [f"must be one of {', '.join(verdict_stats.VERDICTS)}"]}
            )
        assigned = params.get("assigned", "")
        if assigned not in ("", "me", "nobody"):
            raise ValidationError({"assigned": ["must be me or nobody"]})
        filters = selectors.QueueFilters(
            agent=params.get("agent", "")[:80],
            status=status_value,
            flag=flag,
            sort=sort,
            assigned=assigned,
            stale=bool(query_bool(params, "stale")),
            verdict=verdict,
        )
        user = user_of(self.principal.actor)
        if assigned == "me" and user is None:
            raise ValidationError({"assigned": ["an API key has no assignments"]})
        scoped = selectors.queue_scope(
            workspace=self.principal.workspace, filters=filters, user=user
        )
        return selectors.queue_rows(scoped=scoped, filters=filters)

    def paginate_queryset(self, queryset: Any) -> Any:
        paginator = ProposalPagination()
        paginator.ordering = API_SORTS[self.request.query_params.get("sort", "value")]
        self._paginator = paginator
        return paginator.paginate_queryset(queryset, self.request, view=self)

    @extend_schema(
        parameters=[
            OpenApiParameter("agent", str, description="agent slug"),
            OpenApiParameter("status", str, description="default ready; `all` for every status"),
            OpenApiParameter("flag", str, description="any | none | a flag code"),
            OpenApiParameter("sort", str, enum=list(API_SORTS), description="default value"),
            OpenApiParameter("assigned", str, enum=["me", "nobody"]),
            OpenApiParameter(
                "verdict", str, enum=list(verdict_stats.VERDICTS), description="latest verdict"
            ),
            OpenApiParameter("stale", bool, description="only proposals on an old stable base"),
        ],
        responses={200: ProposalSummary(many=True), 400: ERROR_DOC},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ProposalRead(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: ProposalDetail, 404: ERROR_DOC})
    def get(self, request: Request, pk: int) -> Response:
        return detail_response(self.principal, pk)


# -- decisions, comments, assignment, rebase -----------------------------------------------


class DecisionIn(serializers.Serializer):
    action = serializers.ChoiceField(choices=["approve", "reject", "request_changes"])
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    lock_version = serializers.IntegerField(
        required=False, help_text="the proposal's lock_version you read; 409 if it moved"
    )
    acknowledge_verdict = serializers.BooleanField(
        required=False,
        default=False,
        help_text="approve although the verdict is not_measurable, regresses or noise "
        "(recorded in the audit log); without it such an approval is refused with 400",
    )


DECISIONS = {
    "approve": services.approve_proposal,
    "reject": services.reject_proposal,
    "request_changes": services.request_changes,
}


class ProposalDecision(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}
    permission_classes = [DeclaredScope, CanReview]

    @extend_schema(
        request=DecisionIn,
        responses={200: ProposalDetail, 400: ERROR_DOC, 403: ERROR_DOC, 409: ERROR_DOC},
        description="Approve, reject or request changes, with the page's rules: reject and "
        "request changes need a comment; a flagged proposal needs an admin; approving a "
        "not_measurable, regresses or noise verdict needs `acknowledge_verdict`; with two approvals "
        "required the author cannot approve; a stale proposal must be rebased first; when two "
        "decisions race, one wins and the other gets 409.",
    )
    def post(self, request: Request, pk: int) -> Response:
        proposal = get_proposal_for(self.principal, pk, write=True)
        body = DecisionIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        extra = {"acknowledge_verdict": data["acknowledge_verdict"]}
        try:
            DECISIONS[data["action"]](
                proposal_id=proposal.pk,
                reviewer=person_for(self.principal),
                comment=data["comment"],
                expected_lock_version=data.get("lock_version"),
                **(extra if data["action"] == "approve" else {}),
            )
        except services.DecisionRefused as exc:
            return _refused(exc)
        except InvalidTransition as exc:
            return _conflict(exc)
        return detail_response(self.principal, pk)


class CommentSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.get_username", read_only=True)
    document = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="diff document of a line comment"
    )
    line = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="R<new line>, L<old line> or H<hunk>: a comment on the diff opens a thread",
    )
    reply_to = serializers.IntegerField(
        source="reply_to_id",
        required=False,
        allow_null=True,
        default=None,
        help_text="id of the thread's first comment, to reply (reopens a resolved thread)",
    )
    resolved_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = ReviewComment
        fields = [
            "id",
            "author",
            "body",
            "document",
            "line",
            "reply_to",
            "resolved_at",
            "created_at",
        ]
        read_only_fields = ["id", "author", "resolved_at", "created_at"]


class ProposalComments(WorkspaceMixin, generics.ListAPIView):
    required_scopes = {"GET": "read", "POST": "admin"}
    serializer_class = CommentSerializer
    permission_classes = [DeclaredScope, CanReview]

    def get_queryset(self) -> Any:
        proposal = get_proposal_for(self.principal, self.kwargs["pk"])
        return ReviewComment.objects.filter(proposal=proposal).select_related("author")

    @extend_schema(request=CommentSerializer, responses={201: CommentSerializer, 400: ERROR_DOC})
    def post(self, request: Request, pk: int) -> Response:
        proposal = get_proposal_for(self.principal, pk, write=True)
        body = CommentSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            comment = services.comment_on_proposal(
                proposal_id=proposal.pk,
                author=person_for(self.principal),
                body=body.validated_data["body"],
                document=body.validated_data.get("document", ""),
                line=body.validated_data.get("line", ""),
                reply_to_id=body.validated_data.get("reply_to_id"),
            )
        except services.DecisionRefused as exc:
            return _refused(exc)
        return Response(CommentSerializer(comment).data, status=status.HTTP_201_CREATED)


class ThreadResolutionIn(serializers.Serializer):
    resolved = StrictBooleanField(help_text="true resolves the thread; false reopens it")


class ThreadOut(CommentSerializer):
    resolved_by = serializers.CharField(
        source="resolved_by.get_username", read_only=True, allow_null=True, default=None
    )

    class Meta(CommentSerializer.Meta):
        fields = [*CommentSerializer.Meta.fields, "resolved_by"]
        read_only_fields = fields


class ProposalThreadResolution(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}
    permission_classes = [DeclaredScope, CanReview]

    @extend_schema(
        request=ThreadResolutionIn,
        responses={200: ThreadOut, 400: ERROR_DOC, 403: ERROR_DOC, 404: ERROR_DOC},
        description="Resolve (`resolved: true`) or reopen (`resolved: false`) a review thread, "
        "named by the id of its first comment, as the page's Resolve and Reopen buttons do: "
        "reviewers and admins only, recorded in the audit log. A reply to the thread also "
        "reopens it. 400 names the field: a non-boolean `resolved`, or `comment_id` when the "
        "comment is a reply rather than a thread's first comment.",
    )
    def post(self, request: Request, pk: int, comment_id: int) -> Response:
        proposal = get_proposal_for(self.principal, pk, write=True)
        if not proposal.comments.filter(pk=comment_id).exists():
            raise Http404("No such thread on this proposal.")
        body = ThreadResolutionIn(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            thread = services.resolve_thread(
                comment_id=comment_id,
                actor=person_for(self.principal),
                resolved=body.validated_data["resolved"],
            )
        except services.DecisionRefused as exc:
            if exc.code == "anchor":
                raise ValidationError({"comment_id": [str(exc)]}) from exc
            return _refused(exc)
        thread = ReviewComment.objects.select_related("author", "resolved_by").get(pk=thread.pk)
        return Response(ThreadOut(thread).data)


class AssignmentIn(serializers.Serializer):
    assignee = serializers.CharField(
        allow_null=True, help_text="a reviewer's username; null: nobody"
    )


class ProposalAssignment(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}
    permission_classes = [DeclaredScope, CanReview]

    @extend_schema(request=AssignmentIn, responses={200: ProposalDetail, 400: ERROR_DOC})
    def post(self, request: Request, pk: int) -> Response:
        proposal = get_proposal_for(self.principal, pk, write=True)
        body = AssignmentIn(data=request.data)
        body.is_valid(raise_exception=True)
        name = body.validated_data["assignee"]
        assignee = None
        if name:
            assignee = get_user_model().objects.filter(username=name).first()
            if assignee is None:
                raise ValidationError({"assignee": ["no such user"]})
        try:
            services.assign_proposal(
                proposal_id=proposal.pk, actor=person_for(self.principal), assignee=assignee
            )
        except services.DecisionRefused as exc:
            if exc.code == "assignee":
                raise ValidationError({"assignee": [str(exc)]}) from exc
            return _refused(exc)
        return detail_response(self.principal, pk)


class ProposalRebase(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}
    permission_classes = [DeclaredScope, CanReview]

    @extend_schema(
        request=None,
        responses={201: ProposalDetail, 200: ProposalDetail, 409: ERROR_DOC},
        description="Re-apply a stale proposal's edits to the stable version (three-way merge). "
        "201 with the new revision, replaying; 200 with the same proposal in changes_requested "
        "and `rebase_conflict` when the merge conflicts; 409 when it is not stale.",
    )
    def post(self, request: Request, pk: int) -> Response:
        proposal = get_proposal_for(self.principal, pk, write=True)
        try:
            result = rebase.rebase_proposal(proposal_id=proposal.pk, actor=self.principal.actor)
        except rebase.RebaseRefused as exc:
            return error_response(exc.code, str(exc), status_code=409)
        except InvalidTransition as exc:
            return _conflict(exc)
        created = result.pk != proposal.pk
        return detail_response(self.principal, result.pk, code=201 if created else 200)


class ResolveIn(serializers.Serializer):
    documents = serializers.DictField(
        child=serializers.CharField(allow_blank=True, allow_null=True, trim_whitespace=False),
        help_text="each conflicting document → its resolved text (null removes a memory document)",
    )


class ProposalResolve(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}
    permission_classes = [DeclaredScope, CanReview]

    @extend_schema(
        request=ResolveIn,
        responses={201: ProposalDetail, 400: ERROR_DOC, 409: ERROR_DOC},
        description="Resolve a conflicted rebase in place: the resolved text of every document "
        "in `rebase_conflict` (without conflict markers). 201 with the new revision on the "
        "stable version, replaying, approvals reset; 409 when there is no conflict to resolve "
        "or the stable version moved again (rebase again).",
    )
    def post(self, request: Request, pk: int) -> Response:
        proposal = get_proposal_for(self.principal, pk, write=True)
        body = ResolveIn(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            new = rebase.resolve_rebase_conflict(
                proposal_id=proposal.pk,
                actor=self.principal.actor,
                documents=dict(body.validated_data["documents"]),
            )
        except rebase.ConflictUnresolved as exc:
            raise ValidationError(exc.fields) from exc
        except rebase.RebaseRefused as exc:
            return error_response(exc.code, str(exc), status_code=409)
        except InvalidTransition as exc:
            return _conflict(exc)
        return detail_response(self.principal, new.pk, code=status.HTTP_201_CREATED)


class RunSetFromReplaysIn(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    outcome = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="only runs with this outcome: fixed, regressed, still_failing, …; empty: all",
    )
    pinned = serializers.BooleanField(required=False, default=False)


class ProposalRunSet(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}
    permission_classes = [DeclaredScope, CanReview]

    @extend_schema(
        request=RunSetFromReplaysIn,
        responses={201: RunSetSerializer, 400: ERROR_DOC},
        description="Save the runs the proposal's latest experiment replayed (all, or those "
        "with one outcome) as a run set of its agent.",
    )
    def post(self, request: Request, pk: int) -> Response:
        proposal = get_proposal_for(self.principal, pk, write=True)
        body = RunSetFromReplaysIn(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            made = services.save_replays_as_run_set(
                proposal=proposal, actor=self.principal.actor, **body.validated_data
            )
        except run_sets.RunSetInvalid as exc:
            raise ValidationError(exc.fields) from exc
        made = run_sets.get_run_set_for(self.principal, proposal.agent, made.pk)
        return Response(RunSetSerializer(made).data, status=status.HTTP_201_CREATED)


# -- propose a change by hand --------------------------------------------------------------


class EditIn(serializers.Serializer):
    document = serializers.CharField(help_text="system_prompt or a memory document path")
    patch = serializers.CharField(help_text="a unified diff against the stable version's text")


class RunChoiceIn(serializers.Serializer):
    run_set = serializers.IntegerField(
        required=False, help_text="a run set of the agent (GET /api/v1/agents/{slug}/run-sets)"
    )
    run_ids = serializers.ListField(child=serializers.IntegerField(), required=False)
    since = serializers.CharField(required=False, help_text="failures started at or after")
    until = serializers.CharField(required=False, help_text="failures started before")
    config_version = serializers.IntegerField(required=False)
    negative_feedback = serializers.BooleanField(required=False, allow_null=True, default=None)


class HandProposalIn(serializers.Serializer):
    title = serializers.CharField(max_length=300)
    rationale = serializers.CharField(required=False, allow_blank=True, default="")
    documents = serializers.DictField(
        child=serializers.CharField(allow_blank=True, allow_null=True, trim_whitespace=False),
        required=False,
        help_text="document name → full new text (null removes a memory document)",
    )
    edits = EditIn(many=True, required=False)
    runs = RunChoiceIn(
        required=False,
        help_text="which runs judge it: a run_set, run_ids, a failure filter, or (omitted) the "
        "unstudied failures; a stratified regression sample of passing runs and the agent's "
        "pinned run sets are always added",
    )


def _run_choice(data: dict[str, Any] | None) -> handwritten.RunChoice:
    if not data:
        return handwritten.RunChoice()
    times = {}
    for name in ("since", "until"):
        if data.get(name):
            try:
                times[name] = parse_timestamp(data[name])
            except TimestampError as exc:
                raise ValidationError({f"runs.{name}": [str(exc)]}) from None
    if data.get("run_set") is not None:
        return handwritten.RunChoice(run_set=data["run_set"])
    return handwritten.RunChoice(
        run_ids=data.get("run_ids") or [],
        config_version=data.get("config_version"),
        negative_feedback=data.get("negative_feedback"),
        use_filter=True,
        since=times.get("since"),
        until=times.get("until"),
    )


class AgentProposals(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}
    permission_classes = [DeclaredScope, CanReview]

    @extend_schema(
        request=HandProposalIn,
        responses={201: ProposalDetail, 400: ERROR_DOC, 403: ERROR_DOC},
        description="Propose a change by hand: full documents or unified-diff edits against the "
        "stable version. It is guarded, replayed and reviewed like a dream's draft; poll "
        "`GET /api/v1/proposals/{id}` until `status` is `ready` and read `verdict`.",
    )
    def post(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug)
        body = HandProposalIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            proposal = handwritten.propose_change(
                agent=agent,
                actor=self.principal.actor,
                title=data["title"],
                rationale=data["rationale"],
                documents=data.get("documents"),
                edits=[dict(e) for e in data.get("edits") or []],
                runs=_run_choice(data.get("runs")),
            )
        except handwritten.ProposalInvalid as exc:
            raise ValidationError(exc.fields) from exc
        return detail_response(self.principal, proposal.pk, code=status.HTTP_201_CREATED)
