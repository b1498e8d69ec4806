"""Dream cycle API: start a cycle, list an agent's cycles, read a cycle's report (JSON, Markdown)."""

from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, renderers, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.access import Principal, get_agent_for
from agents.api import WorkspaceMixin
from config.api import ERROR_DOC, error_response
from dreams import cycles, experiments, reports, selectors, spend
from dreams.access import get_cycle_for
from dreams.models import DreamCycle, Experiment


class DreamCycleSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug")
    stop_reason = serializers.SerializerMethodField()
    report_url = serializers.SerializerMethodField()

    class Meta:
        model = DreamCycle
        fields = [
            "id",
            "agent",
            "trigger",
            "status",
            "stage",
            "progress_done",
            "progress_total",
            "window_start",
            "window_end",
            "tokens_used",
            "cost_usd",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "stop_reason",
            "report_url",
        ]

    def get_stop_reason(self, cycle: DreamCycle) -> str:
        return str((cycle.report or {}).get("stop_reason", ""))

    def get_report_url(self, cycle: DreamCycle) -> str:
        return f"/api/v1/dreams/{cycle.pk}"


class PatternOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    signature = serializers.CharField()
    severity = serializers.CharField()
    count = serializers.IntegerField()
    grouping_reason = serializers.CharField()
    example_run_ids = serializers.ListField(child=serializers.IntegerField())
    drafting_run_ids = serializers.ListField(child=serializers.IntegerField())
    heldout_run_ids = serializers.ListField(child=serializers.IntegerField())
    divergences = serializers.ListField(child=serializers.DictField())
    diagnosed = serializers.IntegerField()


class SuggestionOut(serializers.Serializer):
    proposal_id = serializers.IntegerField()
    title = serializers.CharField()
    rationale = serializers.CharField()
    status = serializers.CharField()
    flags = serializers.ListField(child=serializers.DictField())
    patterns = serializers.ListField(child=serializers.IntegerField())
    base_version = serializers.IntegerField()
    candidate_version = serializers.IntegerField()
    changes = serializers.ListField(
        child=serializers.DictField(), help_text="[{document, change, diff}]"
    )
    metrics = serializers.DictField(
        allow_null=True, help_text="before/after from the proposal's latest experiment"
    )


class CycleReportOut(serializers.Serializer):
    id = serializers.IntegerField()
    agent = serializers.CharField()
    trigger = serializers.CharField()
    status = serializers.CharField()
    stage = serializers.CharField()
    progress = serializers.DictField()
    window = serializers.DictField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField()
    stop_reason = serializers.CharField()
    runs_studied = serializers.IntegerField()
    patterns = PatternOut(many=True)
    suggestions = SuggestionOut(many=True)
    not_drafted = serializers.ListField(child=serializers.DictField())
    usage = serializers.DictField(help_text="tokens, cost_usd, model_calls, token_cap, spend_share")


class SpendShareOut(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    dreaming_tokens = serializers.IntegerField()
    dreaming_cost_usd = serializers.CharField()
    dreaming_calls = serializers.IntegerField()
    dreaming_free_calls = serializers.IntegerField(
        help_text="calls on the simulated, recorded or local model: tokens counted, priced at $0"
    )
    production_tokens = serializers.IntegerField()
    production_cost_usd = serializers.CharField()
    production_runs = serializers.IntegerField()
    share_of_tokens_pct = serializers.FloatField(allow_null=True)
    share_of_cost_pct = serializers.FloatField(allow_null=True)


class AgentDreams(WorkspaceMixin, generics.ListAPIView):
    """GET lists the agent's dream cycles (newest first); POST starts one by hand."""

    required_scopes = {"GET": "read", "POST": "admin"}

    serializer_class = DreamCycleSerializer

    def get_queryset(self) -> Any:
        return selectors.cycles_for(agent=get_agent_for(self.principal, self.kwargs["slug"]))

    @extend_schema(
        request=None,
        responses={
            202: DreamCycleSerializer,
            409: OpenApiResponse(description="a cycle is active, or the agent is paused"),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug)
        if not self.principal.can_review:
            raise PermissionDenied("Only reviewers and admins can start a dream cycle.")
        trigger = DreamCycle.Trigger.API if request.auth is not None else DreamCycle.Trigger.MANUAL
        try:
            cycle = cycles.start_cycle(agent=agent, trigger=trigger, actor=self.principal.actor)
        except cycles.CycleNotStarted as exc:
            code = "cycle_active" if exc.active is not None else "dreaming_unavailable"
            fields = {"cycle": [str(exc.active.pk)]} if exc.active is not None else {}
            return error_response(code, str(exc), fields=fields, status_code=409)
        cycle.refresh_from_db()
        return Response(DreamCycleSerializer(cycle).data, status=status.HTTP_202_ACCEPTED)


class DreamDetail(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses=CycleReportOut)
    def get(self, request: Request, pk: int) -> Response:
        cycle = get_cycle_for(self.principal, pk)
        return Response(reports.build_cycle_report(cycle))


class MarkdownRenderer(renderers.BaseRenderer):
    media_type = "text/markdown"
    format = "md"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        if isinstance(data, str | bytes):
            return data
        return renderers.JSONRenderer().render(data)  # errors keep their JSON shape


class MarkdownOnly(DefaultContentNegotiation):
    """The report is Markdown whatever `Accept` or `?format=` say: one representation, so the
    schema lists no `format` parameter (errors are JSON, set in handle_exception)."""

    def select_renderer(
        self, request: Any, renderers: Any, format_suffix: Any = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


class DreamReportMarkdown(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read"}
    renderer_classes = [MarkdownRenderer]
    content_negotiation_class = MarkdownOnly

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are the API's JSON error shape, so they carry the JSON content type.
        self.request.accepted_renderer = renderers.JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return super().handle_exception(exc)

    @extend_schema(responses={(200, "text/markdown"): OpenApiTypes.STR})
    def get(self, request: Request, pk: int) -> HttpResponse:
        cycle = get_cycle_for(self.principal, pk)
        return reports.markdown_response(cycle)


class AgentDreamingSpend(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(
        parameters=[OpenApiParameter("days", int, description="period length, default 30")],
        responses=SpendShareOut,
    )
    def get(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug)
        raw = request.query_params.get("days", "30")
        if not raw.isdigit() or not 1 <= int(raw) <= 366:
            raise ValidationError({"days": ["must be a whole number of days from 1 to 366"]})
        until = timezone.now()
        since = until - timedelta(days=int(raw))
        share = spend.period_spend_share(agent=agent, since=since, until=until)
        return Response({"since": since, "until": until, **share})


# -- experiments: read, cancel, re-run; dream cycles: cancel, re-run -----------------------


class ExperimentSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug")
    baseline_version = serializers.IntegerField(source="baseline_version.number")
    candidate_version = serializers.IntegerField(source="candidate_version.number")
    replays = serializers.SerializerMethodField(help_text="slots by status")

    class Meta:
        model = Experiment
        fields = [
            "id",
            "agent",
            "proposal",
            "status",
            "baseline_version",
            "candidate_version",
            "replicates",
            "fidelity",
            "stop_reason",
            "error",
            "stats",
            "run_sets",
            "replays",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_replays(self, e: Experiment) -> dict[str, int]:
        counts = dict(e.replays.order_by().values_list("status").annotate(n=Count("id")))
        return {str(k): int(v) for k, v in counts.items()}


def _require_reviewer(principal: Principal, what: str) -> None:
    if not principal.can_review:
        raise PermissionDenied(f"Only reviewers and admins can {what}.")


class DreamCancel(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}

    @extend_schema(request=None, responses={200: DreamCycleSerializer})
    def post(self, request: Request, pk: int) -> Response:
        """Cancel a queued or running cycle (its runs become selectable again)."""
        cycle = get_cycle_for(self.principal, pk)
        _require_reviewer(self.principal, "cancel a dream cycle")
        if not cycle.is_active:
            return error_response(
                "not_active", f"Cycle {cycle.pk} is {cycle.status}.", status_code=409
            )
        cycle = cycles.cancel_cycle(
            cycle=cycle, actor=self.principal.actor, reason="Cancelled by hand."
        )
        return Response(DreamCycleSerializer(cycle).data)


class DreamRerun(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}

    @extend_schema(request=None, responses={202: DreamCycleSerializer})
    def post(self, request: Request, pk: int) -> Response:
        """Start a new cycle for the agent of a finished (failed, cancelled) one."""
        cycle = get_cycle_for(self.principal, pk)
        _require_reviewer(self.principal, "re-run a dream cycle")
        try:
            fresh = cycles.rerun_cycle(cycle=cycle, actor=self.principal.actor)
        except cycles.CycleNotStarted as exc:
            return error_response("cycle_active", str(exc), status_code=409)
        fresh.refresh_from_db()
        return Response(DreamCycleSerializer(fresh).data, status=status.HTTP_202_ACCEPTED)


class ExperimentDetail(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses={200: ExperimentSerializer, 404: ERROR_DOC})
    def get(self, request: Request, pk: int) -> Response:
        return Response(
            ExperimentSerializer(experiments.get_experiment_for(self.principal, pk)).data
        )


class ExperimentCancel(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}

    @extend_schema(
        request=None, responses={200: ExperimentSerializer, 403: ERROR_DOC, 409: ERROR_DOC}
    )
    def post(self, request: Request, pk: int) -> Response:
        """Stop an open experiment; re-running it resumes the replays not done."""
        experiment = experiments.get_experiment_for(self.principal, pk)
        _require_reviewer(self.principal, "cancel an experiment")
        try:
            experiment = experiments.cancel_experiment(
                experiment_id=experiment.pk, actor=self.principal.actor
            )
        except ValueError as exc:
            return error_response("not_open", str(exc), status_code=409)
        return Response(ExperimentSerializer(experiment).data)


class ExperimentRerun(WorkspaceMixin, APIView):
    required_scopes = {"POST": "admin"}

    @extend_schema(
        request=None,
        responses={202: ExperimentSerializer, 403: ERROR_DOC, 409: ERROR_DOC},
        description="Re-run a failed, cancelled or stuck experiment: replays already done are "
        "kept, failed and pending ones are tried again. 409 when it completed or is running "
        "normally.",
    )
    def post(self, request: Request, pk: int) -> Response:
        experiment = experiments.get_experiment_for(self.principal, pk)
        _require_reviewer(self.principal, "re-run an experiment")
        try:
            experiments.rerun_experiment(experiment_id=experiment.pk, actor=self.principal.actor)
        except experiments.ExperimentNotRerun as exc:
            return error_response("not_rerunnable", str(exc), status_code=409)
        experiment.refresh_from_db()
        return Response(ExperimentSerializer(experiment).data, status=status.HTTP_202_ACCEPTED)
