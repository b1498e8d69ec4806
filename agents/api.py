"""Capture REST API: agents, config versions, runs (bulk, idempotent) and feedback."""

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import services
from agents.access import Principal, get_agent_for, get_run_for, principal_for
from agents.ingest import IngestError, PayloadRejected, ingest_runs, load_payload, nul_path
from agents.models import Agent, ConfigVersion, Feedback, Run, environment_url_problem
from agents.selectors import agents_for, runs_for, versions_for
from agents.timestamps import TimestampError, parse_timestamp
from agents.transcripts import TranscriptError, canonical_tools
from config.api import (
    ERROR_DOC,
    DefaultPagination,
    StrictModelSerializer,
    error_response,
    query_bool,
)


class WorkspaceMixin(APIView):
    """Resolves the caller's workspace once; every queryset starts from it."""

    @property
    def principal(self) -> Principal:
        if not hasattr(self, "_principal"):
            self._principal = principal_for(self.request)
        return self._principal


# -- Agents --------------------------------------------------------------------------------


class ConfigVersionSerializer(StrictModelSerializer):
    # DRF's metaclass takes declared fields off the class; the stubs see Field.parent.
    parent: "serializers.SlugRelatedField[ConfigVersion]" = serializers.SlugRelatedField(  # type: ignore[assignment]
        slug_field="number", read_only=True, allow_null=True
    )
    author: "serializers.StringRelatedField[Any]" = serializers.StringRelatedField(allow_null=True)

    class Meta:
        model = ConfigVersion
        fields = [
            "number",
            "system_prompt",
            "memory_documents",
            "tools",
            "model",
            "parent",
            "source",
            "author",
            "note",
            "content_hash",
            "created_at",
        ]
        read_only_fields = ["number", "parent", "source", "author", "content_hash", "created_at"]
        extra_kwargs = {"model": {"required": False, "help_text": "defaults to the agent's model"}}

    def validate_memory_documents(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise serializers.ValidationError("must map document paths to text")
        if nul_path(value) is not None:
            raise serializers.ValidationError("must not contain NUL characters")
        return value

    def validate_tools(self, value: Any) -> list[Any]:
        # Anthropic or OpenAI tool definitions, converted as run import converts them.
        try:
            converted = canonical_tools(value)
        except TranscriptError as exc:
            raise serializers.ValidationError(
                f"{exc.path}: {exc.message} (Anthropic or OpenAI tool definitions)"
            ) from None
        # Anthropic definitions are stored as sent (their content hash stays the same).
        value = [
            new if isinstance(old.get("function"), dict) else old
            for old, new in zip(value, converted, strict=True)
        ]
        if nul_path(value) is not None:
            raise serializers.ValidationError("must not contain NUL characters")
        return value


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$",
        "example": "22:00",
        "description": "time of day in UTC (HH:MM or HH:MM:SS)",
    }
)
class TimeOfDayField(serializers.TimeField):
    """A UTC time of day; documented as HH:MM[:SS] (JSON Schema's `time` demands an offset)."""


class AgentSerializer(StrictModelSerializer):
    stable_version = serializers.IntegerField(
        source="stable_version.number", read_only=True, allow_null=True
    )
    canary_version = serializers.IntegerField(
        source="canary_version.number", read_only=True, allow_null=True
    )
    webhook_secret = serializers.CharField(write_only=True, required=False, allow_blank=True)
    dream_window_start = TimeOfDayField(required=False, allow_null=True)
    dream_window_end = TimeOfDayField(
        required=False, allow_null=True, help_text="may wrap past midnight"
    )

    class Meta:
        model = Agent
        fields = [
            "slug",
            *services.AGENT_SETTING_FIELDS,
            "stable_version",
            "canary_version",
            "canary_percent",
            "created_at",
            "updated_at",
        ]
        # sandbox_tools names Python callables the replay engine imports and runs: only server
        # operators set it (Django admin), never an API key.
        read_only_fields = ["canary_percent", "sandbox_tools", "created_at", "updated_at"]

    def validate_required_approvals(self, value: int) -> int:
        if value not in (1, 2):
            raise serializers.ValidationError("must be 1 or 2")
        return value

    def validate_environment_url(self, value: str) -> str:
        problem = environment_url_problem(value) if value else ""
        if problem:
            raise serializers.ValidationError(problem)
        return value


class AgentUpdateSerializer(AgentSerializer):
    set_stable_version = serializers.IntegerField(
        required=False, write_only=True, help_text="Make this version number the stable one"
    )

    class Meta(AgentSerializer.Meta):
        fields = [*AgentSerializer.Meta.fields, "set_stable_version"]
        read_only_fields = [*AgentSerializer.Meta.read_only_fields, "slug"]


class AgentPagination(DefaultPagination):
    ordering = "slug"  # unique within a workspace


class VersionPagination(DefaultPagination):
    ordering = "-number"  # unique within an agent


class AgentListCreate(WorkspaceMixin, generics.ListCreateAPIView):
    required_scopes = {"GET": "read", "POST": "admin"}
    serializer_class = AgentSerializer
    pagination_class = AgentPagination

    def get_queryset(self) -> Any:
        return agents_for(self.principal.workspace)

    def perform_create(self, serializer: serializers.BaseSerializer[Agent]) -> None:
        if not self.principal.is_admin:
            from rest_framework.exceptions import PermissionDenied

            raise PermissionDenied("Only workspace admins can create agents.")
        if Agent.objects.filter(
            workspace=self.principal.workspace, slug=serializer.validated_data["slug"]
        ).exists():
            raise ValidationError({"slug": ["an agent with this slug already exists"]})
        serializer.instance = services.create_agent(
            workspace=self.principal.workspace,
            actor=self.principal.actor,
            **serializer.validated_data,
        )


class AgentDetail(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read", "PATCH": "admin"}

    @extend_schema(responses=AgentSerializer)
    def get(self, request: Request, slug: str) -> Response:
        return Response(AgentSerializer(get_agent_for(self.principal, slug)).data)

    @extend_schema(request=AgentUpdateSerializer, responses=AgentSerializer)
    def patch(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug, write=True)
        serializer = AgentUpdateSerializer(agent, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        stable_number = changes.pop("set_stable_version", None)
        if stable_number is not None and agent.canary_version_id is not None:
            # Moving the stable version under a running canary would change the baseline arm.
            return error_response(
                "rollout_in_progress",
                "A rollout is in progress; complete, halt or roll it back before setting the "
                "stable version by hand.",
                fields={"set_stable_version": ["a canary version is live"]},
                status_code=409,
            )
        with transaction.atomic():
            if changes:
                agent = services.update_agent_settings(
                    agent=agent, actor=self.principal.actor, changes=changes
                )
            if stable_number is not None:
                version = ConfigVersion.objects.filter(agent=agent, number=stable_number).first()
                if version is None:
                    raise ValidationError(
                        {"set_stable_version": [f"agent has no version {stable_number}"]}
                    )
                agent = services.set_stable_version(
                    agent=agent, version=version, actor=self.principal.actor
                )
        agent = get_agent_for(self.principal, slug)
        return Response(AgentSerializer(agent).data)


class ConfigVersionListCreate(WorkspaceMixin, generics.ListCreateAPIView):
    required_scopes = {"GET": "read", "POST": "admin"}
    serializer_class = ConfigVersionSerializer
    pagination_class = VersionPagination

    def get_queryset(self) -> Any:
        return versions_for(get_agent_for(self.principal, self.kwargs["slug"]))

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        agent = get_agent_for(self.principal, kwargs["slug"], write=True)
        serializer = ConfigVersionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = services.create_config_version(
            agent=agent,
            system_prompt=data.get("system_prompt", ""),
            memory_documents=data.get("memory_documents", {}),
            tools=data.get("tools", []),
            model=data.get("model", ""),
            parent=agent.stable_version,
            source=ConfigVersion.Source.HUMAN,
            author=request.user,
            note=data.get("note", ""),
            actor=self.principal.actor,
        )
        return Response(ConfigVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class ConfigVersionDetail(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses=ConfigVersionSerializer)
    def get(self, request: Request, slug: str, number: int) -> Response:
        agent = get_agent_for(self.principal, slug)
        version = ConfigVersion.objects.filter(agent=agent, number=number).first()
        if version is None:
            return error_response("not_found", "No such version.", status_code=404)
        return Response(ConfigVersionSerializer(version).data)


# -- Runs ----------------------------------------------------------------------------------


class RunSummarySerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug")
    config_version = serializers.IntegerField(source="config_version.number", allow_null=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "agent",
            "external_id",
            "status",
            "score",
            "outcome_reason",
            "model",
            "config_version",
            "step_count",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_usd",
            "latency_ms",
            "started_at",
            "created_at",
            "tags",
        ]


class FeedbackSerializer(serializers.ModelSerializer):
    author: "serializers.StringRelatedField[Any]" = serializers.StringRelatedField()

    class Meta:
        model = Feedback
        fields = ["id", "rating", "score", "comment", "source", "author", "created_at"]


class RunDetailSerializer(RunSummarySerializer):
    feedback = FeedbackSerializer(many=True)

    class Meta(RunSummarySerializer.Meta):
        fields = [
            *RunSummarySerializer.Meta.fields,
            "system",
            "tools",
            "messages",
            "metadata",
            "expectations",
            "graded_on",
            "user_brief",
            "source_format",
            "feedback",
        ]


RUN_IN_DOC = inline_serializer(
    "RunIn",
    fields={
        "agent": serializers.CharField(help_text="agent slug"),
        "external_id": serializers.CharField(help_text="your id; re-posting it is a no-op"),
        "status": serializers.ChoiceField(choices=Run.Status.choices, required=False),
        "format": serializers.ChoiceField(
            choices=["anthropic", "anthropic_exchange", "openai", "claude_code"],
            required=False,
            help_text="detected when omitted",
        ),
        "system": serializers.CharField(required=False),
        "transcript": serializers.ListField(
            child=serializers.DictField(),
            required=False,
            help_text="claude_code: the session's JSONL entries (or the JSONL text)",
        ),
        "tools": serializers.ListField(child=serializers.DictField(), required=False),
        "messages": serializers.ListField(
            child=serializers.DictField(), required=False, help_text="Anthropic or OpenAI chat form"
        ),
        "request": serializers.DictField(
            required=False, help_text="anthropic_exchange: the Messages API request"
        ),
        "response": serializers.DictField(
            required=False, help_text="anthropic_exchange: the Messages API response"
        ),
        "usage": serializers.DictField(required=False),
        "model": serializers.CharField(required=False),
        "config_version": serializers.IntegerField(
            required=False, help_text="defaults to the agent's stable version"
        ),
        "score": serializers.FloatField(required=False),
        "outcome_reason": serializers.CharField(required=False),
        "started_at": serializers.DateTimeField(required=False),
        "latency_ms": serializers.IntegerField(required=False),
        "cost_usd": serializers.DecimalField(max_digits=12, decimal_places=6, required=False),
        "tags": serializers.ListField(child=serializers.CharField(), required=False),
        "metadata": serializers.DictField(required=False),
        "expectations": serializers.DictField(required=False),
        "graded_on": serializers.ChoiceField(
            choices=Run.GradedOn.choices,
            required=False,
            help_text="what the outcome was graded on; a replay inherits it only if that is unchanged",
        ),
        "user_brief": serializers.CharField(
            required=False, help_text="what the user wanted (for the simulated user)"
        ),
    },
)
RUN_RESULT_FIELDS: "dict[str, serializers.Field[Any, Any, Any, Any]]" = {
    "id": serializers.IntegerField(),
    "external_id": serializers.CharField(),
    "agent": serializers.CharField(),
    "created": serializers.BooleanField(help_text="false: the run was already stored"),
}
RUN_OUT_DOC = PolymorphicProxySerializer(
    component_name="RunIngestResponse",
    serializers=[
        inline_serializer(
            "RunBatchResult",
            fields={
                "created": serializers.IntegerField(),
                "existing": serializers.IntegerField(),
                "results": inline_serializer(
                    "RunBatchItem",
                    fields={"index": serializers.IntegerField(), **RUN_RESULT_FIELDS},
                    many=True,
                ),
            },
        ),
        inline_serializer("RunSingleResult", fields=RUN_RESULT_FIELDS),
    ],
    resource_type_field_name=None,
)
INGEST_DESCRIPTION = (
    'Send one run object, a list of runs, or `{"runs": [...]}` (at most '
    "`REVERIE_BATCH_MAX_RUNS`, default 1,000). Idempotent on `(agent, external_id)`: a stored run "
    "is answered with its id and `created: false`, and is never rewritten; inside one batch the "
    "first occurrence wins. **All-or-nothing per batch:** if any item is invalid, the 400 names "
    "every bad item by index and field (`runs[3].messages[2].role`) and nothing of the batch is "
    "stored. 201 when something was created, else 200. 413 over `REVERIE_RUN_MAX_BYTES` a run "
    "or `REVERIE_REQUEST_MAX_BYTES` a request. Transcripts: Anthropic Messages form, Anthropic "
    "request/response exchanges, or OpenAI chat completions (converted on import)."
)


class RunCursorPagination(DefaultPagination):
    ordering = ("-started_at", "-id")


class RunListIngest(WorkspaceMixin, generics.ListAPIView):
    """GET lists runs (cursor-paginated, newest first); POST stores one run or a batch."""

    required_scopes = {"GET": "read", "POST": "ingest"}

    serializer_class = RunSummarySerializer
    pagination_class = RunCursorPagination

    def get_queryset(self) -> Any:
        params = self.request.query_params
        for name, value in params.items():
            if "\x00" in value:
                raise ValidationError({name: ["must not contain NUL characters"]})
        since = until = None
        for name in ("since", "until"):
            if name in params:
                try:
                    parsed = parse_timestamp(params[name], lenient_plus=True)
                except TimestampError as exc:
                    raise ValidationError({name: [str(exc)]}) from None
                if name == "since":
                    since = parsed
                else:
                    until = parsed
        status_filter = params.get("status")
        if status_filter and status_filter not in Run.Status.values:
            raise ValidationError({"status": [f"must be one of {', '.join(Run.Status.values)}"]})
        version = params.get("config_version")
        if version is not None and not version.isdigit():
            raise ValidationError({"config_version": ["must be a version number"]})
        return runs_for(
            self.principal.workspace,
            agent_slug=params.get("agent"),
            status=status_filter,
            since=since,
            until=until,
            negative_feedback=query_bool(params, "negative_feedback"),
            config_version=int(version) if version is not None else None,
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("agent", str),
            OpenApiParameter("status", str),
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("until", OpenApiTypes.DATETIME),
            OpenApiParameter("negative_feedback", bool),
            OpenApiParameter("config_version", int),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=RUN_IN_DOC,
        responses={
            201: RUN_OUT_DOC,
            200: RUN_OUT_DOC,
            400: ERROR_DOC,
            413: ERROR_DOC,
            415: ERROR_DOC,
        },
        description=INGEST_DESCRIPTION,
    )
    def post(self, request: Request) -> Response:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > settings.REVERIE_REQUEST_MAX_BYTES:  # refuse before reading the body
            return error_response(
                "too_large",
                f"Request body over {settings.REVERIE_REQUEST_MAX_BYTES} bytes.",
                status_code=413,
            )
        if "json" not in (request.content_type or ""):
            return error_response(
                "unsupported_media_type",
                "Send the runs as JSON (Content-Type: application/json).",
                status_code=415,
            )
        try:
            body = request.body
            items, single = load_payload(body)
        except RequestDataTooBig:
            return error_response(
                "too_large",
                f"Request body over {settings.REVERIE_REQUEST_MAX_BYTES} bytes.",
                status_code=413,
            )
        except PayloadRejected as exc:
            return error_response(exc.code, exc.message, fields=exc.fields, status_code=exc.status)
        try:
            results = ingest_runs(
                workspace=self.principal.workspace, items=items, check_nul=b"\\u0000" in body
            )
        except IngestError as exc:
            fields = exc.fields
            if single:
                fields = {
                    k.removeprefix("runs[0].").removeprefix("runs[0]") or "run": v
                    for k, v in fields.items()
                }
            return error_response(
                "invalid",
                str(exc) if not single else next(f"{k}: {v[0]}" for k, v in fields.items()),
                fields=fields,
            )
        created = sum(r.created for r in results)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        if single:
            r = results[0]
            return Response(
                {"id": r.id, "external_id": r.external_id, "agent": r.agent, "created": r.created},
                status=code,
            )
        return Response(
            {
                "created": created,
                "existing": len(results) - created,
                "results": [
                    {
                        "index": r.index,
                        "id": r.id,
                        "external_id": r.external_id,
                        "agent": r.agent,
                        "created": r.created,
                    }
                    for r in results
                ],
            },
            status=code,
        )


class RunDetail(WorkspaceMixin, APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(responses=RunDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(RunDetailSerializer(get_run_for(self.principal, pk)).data)


# -- Feedback ------------------------------------------------------------------------------


class FeedbackIn(serializers.Serializer):
    run_id = serializers.IntegerField(required=False)
    agent = serializers.CharField(required=False, help_text="with external_id, instead of run_id")
    external_id = serializers.CharField(required=False)
    interaction_id = serializers.CharField(
        required=False, help_text="the hosted API's name for external_id"
    )
    rating = serializers.ChoiceField(choices=Feedback.Rating.choices)
    score = serializers.FloatField(required=False, allow_null=True)
    comment = serializers.CharField(required=False, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "interaction_id" in attrs:
            attrs.setdefault("external_id", attrs.pop("interaction_id"))
        if "run_id" not in attrs and not ("agent" in attrs and "external_id" in attrs):
            raise serializers.ValidationError({"run_id": ["give run_id, or agent and external_id"]})
        return attrs


class FeedbackCreate(WorkspaceMixin, APIView):
    required_scopes = {"POST": "ingest"}

    @extend_schema(
        request=FeedbackIn,
        responses={201: FeedbackSerializer, 400: ERROR_DOC, 404: ERROR_DOC},
        description="Rate a run, found by `run_id` or by `agent` + `external_id`.",
    )
    def post(self, request: Request) -> Response:
        data_in = FeedbackIn(data=request.data)
        data_in.is_valid(raise_exception=True)
        data = data_in.validated_data
        run: Run | None
        if "run_id" in data:
            run = get_run_for(self.principal, data["run_id"])
        else:
            agent = get_agent_for(self.principal, data["agent"])
            run = Run.objects.filter(agent=agent, external_id=data["external_id"]).first()
            if run is None:
                return error_response(
                    "not_found",
                    "No run with this external_id for this agent.",
                    fields={"external_id": ["unknown"]},
                    status_code=404,
                )
        feedback = services.add_feedback(
            run=run,
            rating=data["rating"],
            score=data.get("score"),
            comment=data.get("comment", ""),
            source=Feedback.Source.API if request.auth is not None else Feedback.Source.HUMAN,
            author=request.user,
        )
        return Response(FeedbackSerializer(feedback).data, status=status.HTTP_201_CREATED)
