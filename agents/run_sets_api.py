"""Run sets over REST: /api/v1/agents/<slug>/run-sets (list, create), one set (read, rename,
pin, delete) and its runs (list, add, remove). Same services as the pages (agents/run_sets.py)."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import run_sets
from agents.access import get_agent_for
from agents.api import RunSummarySerializer, WorkspaceMixin
from agents.models import Agent, Run, RunSet
from agents.timestamps import TimestampError, parse_timestamp
from config.api import ERROR_DOC, DefaultPagination, StrictBooleanField, StrictCharField


class RunSetSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug", read_only=True)
    runs = serializers.IntegerField(source="member_count", read_only=True, help_text="members")
    created_by: "serializers.StringRelatedField[Any]" = serializers.StringRelatedField(
        read_only=True, allow_null=True
    )

    class Meta:
        model = RunSet
        fields = [
            "id",
            "agent",
            "name",
            "description",
            "pinned",
            "origin",
            "origin_detail",
            "runs",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class RunFilterIn(serializers.Serializer):
    status = serializers.ChoiceField(choices=Run.Status.values, required=False)
    since = StrictCharField(required=False, help_text="runs started at or after")
    until = StrictCharField(required=False, help_text="runs started before")
    negative_feedback = StrictBooleanField(required=False, allow_null=True, default=None)
    config_version = serializers.IntegerField(required=False, min_value=1)


class RunsIn(serializers.Serializer):
    run_ids = serializers.ListField(child=serializers.IntegerField(), required=False)
    external_ids = serializers.ListField(child=StrictCharField(max_length=255), required=False)


class RunSetIn(serializers.Serializer):
    name = StrictCharField(max_length=100)
    description = StrictCharField(required=False, allow_blank=True, default="")
    pinned = StrictBooleanField(required=False, default=False)
    runs = RunsIn(required=False, help_text="members by run id or external id")
    filter = RunFilterIn(
        required=False,
        help_text="or: the newest runs matching the runs list's filters (at most 1000)",
    )


class RunSetUpdateIn(serializers.Serializer):
    name = StrictCharField(max_length=100, required=False)
    description = StrictCharField(required=False, allow_blank=True)
    pinned = StrictBooleanField(required=False)


class MembersIn(serializers.Serializer):
    add = RunsIn(required=False)
    remove = RunsIn(required=False)


def _external_ids(agent: Agent, data: dict[str, Any] | None, *, field: str) -> list[str]:
    if not data:
        return []
    try:
        by_id = run_sets.external_ids_of_runs(agent=agent, run_ids=data.get("run_ids") or [])
    except run_sets.RunSetInvalid as exc:
        raise ValidationError({f"{field}.run_ids": exc.fields["run_ids"]}) from exc
    return [*by_id, *(data.get("external_ids") or [])]


def _filter_ids(agent: Agent, data: dict[str, Any]) -> list[str]:
    times = {}
    for name in ("since", "until"):
        if data.get(name):
            try:
                times[name] = parse_timestamp(data[name])
            except TimestampError as exc:
                raise ValidationError({f"filter.{name}": [str(exc)]}) from None
    return run_sets.external_ids_matching(
        agent=agent,
        status=data.get("status"),
        negative_feedback=data.get("negative_feedback"),
        config_version=data.get("config_version"),
        **times,
    )


def _invalid(exc: run_sets.RunSetInvalid) -> ValidationError:
    return ValidationError(exc.fields)


class RunSetMixin(WorkspaceMixin):
    """The agent (and set) of the URL, in the caller's workspace; writes need a reviewer."""

    kwargs: dict[str, Any]

    def agent(self) -> Agent:
        return get_agent_for(self.principal, self.kwargs["slug"])

    def writable_agent(self) -> Agent:
        agent = self.agent()
        if not self.principal.can_review:
            raise PermissionDenied("Only reviewers and admins can change run sets.")
        return agent

    def run_set(self, agent: Agent) -> RunSet:
        return run_sets.get_run_set_for(self.principal, agent, self.kwargs["pk"])


class RunSetPagination(DefaultPagination):
    ordering = "-id"


class RunSetListCreate(RunSetMixin, generics.ListAPIView):
    """An agent's run sets; POST makes one from run ids, external ids or a runs filter."""

    required_scopes = {"GET": "read", "POST": "admin"}
    serializer_class = RunSetSerializer
    pagination_class = RunSetPagination

    def get_queryset(self) -> Any:
        return run_sets.run_sets_for(self.agent())

    @extend_schema(
        request=RunSetIn,
        responses={201: RunSetSerializer, 400: ERROR_DOC, 403: ERROR_DOC},
        description="Members are kept by the runs' external ids, so a set survives its runs "
        "being deleted and ingested again. A pinned set is replayed in every experiment.",
    )
    def post(self, request: Request, slug: str) -> Response:
        agent = self.writable_agent()
        body = RunSetIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data.get("filter") is not None and data.get("runs"):
            raise ValidationError({"filter": ["give runs or a filter, not both"]})
        if data.get("filter") is not None:
            members = _filter_ids(agent, data["filter"])
            # The validated filter (strings, a bool, a number): what the set was made from.
            chosen = {k: v for k, v in data["filter"].items() if v is not None}
            origin, detail = RunSet.Origin.FILTER, {"filter": chosen}
        else:
            members = _external_ids(agent, data.get("runs"), field="runs")
            origin, detail = RunSet.Origin.API, {}
        try:
            run_set = run_sets.create_run_set(
                agent=agent,
                actor=self.principal.actor,
                name=data["name"],
                description=data["description"],
                pinned=data["pinned"],
                external_ids=members,
                origin=origin,
                origin_detail=detail,
            )
        except run_sets.RunSetInvalid as exc:
            raise _invalid(exc) from exc
        run_set = self.run_set_by_pk(agent, run_set.pk)
        return Response(RunSetSerializer(run_set).data, status=status.HTTP_201_CREATED)

    def run_set_by_pk(self, agent: Agent, pk: int) -> RunSet:
        return run_sets.get_run_set_for(self.principal, agent, pk)


class RunSetDetail(RunSetMixin, APIView):
    required_scopes = {"GET": "read", "PATCH": "admin", "DELETE": "admin"}

    @extend_schema(responses={200: RunSetSerializer, 404: ERROR_DOC})
    def get(self, request: Request, slug: str, pk: int) -> Response:
        return Response(RunSetSerializer(self.run_set(self.agent())).data)

    @extend_schema(request=RunSetUpdateIn, responses={200: RunSetSerializer, 400: ERROR_DOC})
    def patch(self, request: Request, slug: str, pk: int) -> Response:
        agent = self.writable_agent()
        run_set = self.run_set(agent)
        body = RunSetUpdateIn(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run_sets.update_run_set(
                run_set=run_set, actor=self.principal.actor, changes=dict(body.validated_data)
            )
        except run_sets.RunSetInvalid as exc:
            raise _invalid(exc) from exc
        return Response(RunSetSerializer(self.run_set(agent)).data)

    @extend_schema(request=None, responses={204: None, 404: ERROR_DOC})
    def delete(self, request: Request, slug: str, pk: int) -> Response:
        agent = self.writable_agent()
        run_sets.delete_run_set(run_set=self.run_set(agent), actor=self.principal.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunSetRunPagination(DefaultPagination):
    ordering = ("-started_at", "-id")


class RunSetRuns(RunSetMixin, generics.ListAPIView):
    """The runs of a set stored now; POST adds and removes members."""

    required_scopes = {"GET": "read", "POST": "admin"}
    serializer_class = RunSummarySerializer
    pagination_class = RunSetRunPagination

    def get_queryset(self) -> Any:
        return self.run_set(self.agent()).runs().select_related("agent", "config_version")

    @extend_schema(request=MembersIn, responses={200: RunSetSerializer, 400: ERROR_DOC})
    def post(self, request: Request, slug: str, pk: int) -> Response:
        agent = self.writable_agent()
        run_set = self.run_set(agent)
        body = MembersIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            run_sets.change_members(
                run_set=run_set,
                actor=self.principal.actor,
                add=_external_ids(agent, data.get("add"), field="add"),
                remove=_external_ids(agent, data.get("remove"), field="remove"),
            )
        except run_sets.RunSetInvalid as exc:
            raise _invalid(exc) from exc
        return Response(RunSetSerializer(self.run_set(agent)).data)
