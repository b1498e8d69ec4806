"""Rollouts over REST: list, start, read (with the live canary analysis), approve, halt, roll back."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.access import Principal, principal_for
from config.api import error_response
from dreams.models import Proposal
from dreams.proposals import InvalidTransition
from rollouts import services
from rollouts.access import get_rollout_for
from rollouts.models import Rollout, RolloutStage
from rollouts.selectors import rollout_page, rollouts_for
from rollouts.states import RolloutError


class RolloutStageSerializer(serializers.ModelSerializer):
    number = serializers.IntegerField(read_only=True)
    status = serializers.CharField(
        read_only=True, help_text="pending | running | passed | halted | skipped"
    )
    approved_by = serializers.CharField(source="approved_by_label", read_only=True)
    min_duration_seconds = serializers.SerializerMethodField()

    class Meta:
        model = RolloutStage
        fields = [
            "number",
            "percent",
            "status",
            "min_runs",
            "min_duration_seconds",
            "approved_by",
            "approved_at",
            "started_at",
            "ended_at",
            "verdict",
        ]

    def get_min_duration_seconds(self, stage: RolloutStage) -> int:
        return int(stage.min_duration.total_seconds())


class RolloutSerializer(serializers.ModelSerializer):
    agent: "serializers.SlugRelatedField[Any]" = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    status = serializers.CharField(
        read_only=True, help_text="running | awaiting_approval | completed | halted | rolled_back"
    )
    from_version: "serializers.SlugRelatedField[Any]" = serializers.SlugRelatedField(
        slug_field="number", read_only=True
    )
    to_version: "serializers.SlugRelatedField[Any]" = serializers.SlugRelatedField(
        slug_field="number", read_only=True
    )
    created_by = serializers.CharField(source="created_by_label", read_only=True)
    stage = serializers.SerializerMethodField(help_text="current stage number, from 1")
    stages = RolloutStageSerializer(many=True, read_only=True)

    class Meta:
        model = Rollout
        fields = [
            "id",
            "agent",
            "proposal",
            "from_version",
            "to_version",
            "status",
            "stage",
            "halt_reason",
            "halted_automatically",
            "created_by",
            "created_at",
            "ended_at",
            "stages",
        ]

    def get_stage(self, rollout: Rollout) -> int:
        return rollout.current_stage + 1


class RolloutDetailSerializer(RolloutSerializer):
    analysis = serializers.SerializerMethodField()
    not_ready = serializers.SerializerMethodField(
        help_text="why the current stage cannot be approved yet; empty when it can"
    )

    class Meta(RolloutSerializer.Meta):
        fields = [*RolloutSerializer.Meta.fields, "analysis", "not_ready"]

    def get_analysis(self, rollout: Rollout) -> dict[str, Any] | None:
        analysis = self.context["page"]["analysis"]
        return analysis.as_dict() if analysis else None

    def get_not_ready(self, rollout: Rollout) -> list[str]:
        readiness = self.context["page"]["readiness"]
        return readiness.reasons if readiness else []


class StartRolloutSerializer(serializers.Serializer):
    proposal = serializers.IntegerField(help_text="an approved proposal's id")
    stages = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=100),
        required=False,
        help_text="canary percents; default: the agent's, else [5, 25, 100]",
    )


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


def _conflict(exc: Exception) -> Response:
    fields = {"reasons": exc.reasons} if isinstance(exc, services.StageNotReady) else {}
    code = getattr(exc, "code", "invalid_transition")
    return error_response(code, str(exc), fields=fields, status_code=status.HTTP_409_CONFLICT)


def _writer(request: Request) -> Principal:
    principal = principal_for(request)
    if not principal.can_review:
        raise PermissionDenied("Only reviewers and admins can change rollouts.")
    return principal


def _detail(rollout_id: int, principal: Principal, *, code: int = 200) -> Response:
    rollout = get_rollout_for(principal, rollout_id)
    page = rollout_page(rollout)
    return Response(RolloutDetailSerializer(rollout, context={"page": page}).data, status=code)


class RolloutListCreate(generics.ListAPIView):
    required_scopes = {"GET": "read", "POST": "admin"}
    serializer_class = RolloutSerializer

    def get_queryset(self) -> Any:
        queryset = rollouts_for(principal_for(self.request).workspace).prefetch_related("stages")
        agent = self.request.query_params.get("agent")
        if agent:
            queryset = queryset.filter(agent__slug=agent)
        wanted = self.request.query_params.get("status")
        if wanted is not None and wanted not in Rollout.Status.values:
            raise ValidationError(
                {"status": [f"must be one of {', '.join(Rollout.Status.values)}"]}
            )
        if wanted:
            queryset = queryset.filter(status=wanted)
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("agent", OpenApiTypes.STR, description="agent slug"),
            OpenApiParameter("status", OpenApiTypes.STR, enum=Rollout.Status.values),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=StartRolloutSerializer,
        responses={201: RolloutDetailSerializer},
        description="Start rolling out an approved proposal; its first stage starts at once. "
        "409 when the proposal is not approved, the agent already has an active rollout, or "
        "the stable version moved since the proposal was drafted.",
    )
    def post(self, request: Request) -> Response:
        principal = _writer(request)
        data = StartRolloutSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not Proposal.objects.filter(
            pk=data.validated_data["proposal"], agent__workspace=principal.workspace
        ).exists():
            raise Http404("No such proposal in this workspace.")
        try:
            rollout = services.start_rollout(
                proposal_id=data.validated_data["proposal"],
                actor=principal.actor,
                stages=data.validated_data.get("stages"),
            )
        except (RolloutError, InvalidTransition) as exc:
            return _conflict(exc)
        return _detail(rollout.pk, principal, code=201)


class RolloutDetail(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses=RolloutDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return _detail(pk, principal_for(request))


class RolloutAction(APIView):
    required_scopes = {"POST": "admin"}
    action_name = ""

    @extend_schema(
        request=ReasonSerializer,
        responses={
            200: RolloutDetailSerializer,
            409: inline_serializer(
                "RolloutConflict",
                {"error": serializers.DictField()},
            ),
        },
        description="approve: advance to the next stage (409 `stage_not_ready` with the reasons "
        "until the minimums are met; a regressed canary is halted instead). halt: all traffic "
        "back to stable now. roll-back: halt an active rollout, or restore the previous stable "
        "version after a completed one.",
    )
    def post(self, request: Request, pk: int) -> Response:
        principal = _writer(request)
        rollout = get_rollout_for(principal, pk, write=True)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason", "")
        try:
            if self.action_name == "approve":
                services.approve_stage(rollout_id=rollout.pk, actor=principal.actor)
            elif self.action_name == "halt":
                services.halt_rollout(rollout_id=rollout.pk, actor=principal.actor, reason=reason)
            else:
                services.roll_back(rollout_id=rollout.pk, actor=principal.actor, reason=reason)
        except (RolloutError, InvalidTransition) as exc:
            return _conflict(exc)
        return _detail(rollout.pk, principal)
