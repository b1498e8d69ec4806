"""REST API of the Managed Agents connector: link, sync, hosted dreams, apply, webhook receiver."""

from typing import Any

import anthropic
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.access import get_agent_for
from agents.api import WorkspaceMixin
from config.api import ERROR_DOC, error_response
from dreams.managed import apply, hosted, services, webhooks
from dreams.managed.client import ManagedNotConfigured, api_key_configured, configured_key_names
from dreams.managed.models import HostedDream, ManagedAgentLink, MemoryApplication
from dreams.managed.selectors import hosted_dreams_for, memory_applications_for
from dreams.models import Proposal


class ManagedLinkSerializer(serializers.ModelSerializer):
    api_key_configured = serializers.SerializerMethodField(
        help_text="whether the named key (or the fallback) is set; the key is never shown"
    )

    class Meta:
        model = ManagedAgentLink
        fields = [
            "managed_agent_id",
            "memory_store_id",
            "anthropic_workspace_id",
            "api_key_name",
            "api_key_configured",
            "hosted_dream_enabled",
            "managed_agent_version",
            "sync_cursor",
            "last_synced_at",
            "last_sync_error",
        ]
        read_only_fields = [
            "managed_agent_version",
            "sync_cursor",
            "last_synced_at",
            "last_sync_error",
        ]
        # The view checks uniqueness through the service (full_clean), not here.
        validators: list[Any] = []

    def get_api_key_configured(self, link: ManagedAgentLink) -> bool:
        return api_key_configured(link)

    def validate_api_key_name(self, value: str) -> str:
        if value and value not in configured_key_names():
            raise serializers.ValidationError(
                "is not a key name listed in REVERIE_MANAGED_API_KEYS"
            )
        return value


class ManagedLinkDetail(WorkspaceMixin, APIView):
    """The agent's link to a Claude Managed Agent."""

    required_scopes = {"GET": "read", "PUT": "admin", "DELETE": "admin"}

    def _link(self, slug: str) -> ManagedAgentLink:
        agent = get_agent_for(self.principal, slug)
        link = (
            ManagedAgentLink.objects.filter(agent=agent).select_related("agent__workspace").first()
        )
        if link is None:
            raise Http404("This agent is not linked to a Managed Agent.")
        return link

    @extend_schema(responses=ManagedLinkSerializer)
    def get(self, request: Request, slug: str) -> Response:
        return Response(ManagedLinkSerializer(self._link(slug)).data)

    @extend_schema(request=ManagedLinkSerializer, responses=ManagedLinkSerializer)
    def put(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug, write=True)
        serializer = ManagedLinkSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            link = services.link_agent(
                agent=agent, actor=self.principal.actor, verify=True, **serializer.validated_data
            )
        except services.LinkCheckFailed as exc:
            raise ValidationError({exc.field: [str(exc)]}) from exc
        except ManagedNotConfigured as exc:
            raise ValidationError({"api_key_name": [str(exc)]}) from exc
        except anthropic.APIError as exc:
            return error_response(
                "anthropic_unavailable",
                f"Anthropic API answered {type(exc).__name__}; try again.",
                status_code=502,
            )
        except DjangoValidationError as exc:
            raise ValidationError(
                exc.message_dict if hasattr(exc, "error_dict") else exc.messages
            ) from exc
        return Response(ManagedLinkSerializer(link).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug, write=True)
        services.unlink_agent(agent=agent, actor=self.principal.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


QUEUED_DOC = inline_serializer("ManagedQueued", fields={"queued": serializers.BooleanField()})


class ManagedSync(WorkspaceMixin, APIView):
    """Queue a sync of the linked Managed Agent's sessions into runs."""

    required_scopes = {"POST": "admin"}

    @extend_schema(request=None, responses={202: QUEUED_DOC})
    def post(self, request: Request, slug: str) -> Response:
        from dreams.tasks import sync_agent_sessions

        agent = get_agent_for(self.principal, slug, write=True)
        link = ManagedAgentLink.objects.filter(agent=agent).first()
        if link is None:
            return error_response(
                "not_linked", "This agent is not linked to a Managed Agent.", status_code=409
            )
        sync_agent_sessions.delay_on_commit(link.pk)
        return Response({"queued": True}, status=status.HTTP_202_ACCEPTED)


class HostedDreamSerializer(serializers.ModelSerializer):
    cycle = serializers.IntegerField(source="cycle_id", read_only=True)
    proposal = serializers.IntegerField(source="proposal_id", read_only=True, allow_null=True)

    class Meta:
        model = HostedDream
        fields = [
            "id",
            "cycle",
            "dream_id",
            "status",
            "model",
            "instructions",
            "session_ids",
            "input_memory_store_id",
            "output_memory_store_id",
            "usage",
            "error_type",
            "error",
            "proposal",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class HostedDreamStartSerializer(serializers.Serializer):
    session_ids = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=hosted.MAX_SESSIONS,
        help_text="synced failed sessions; default: the newest 100 not yet dreamt about",
    )
    model = serializers.CharField(required=False, allow_blank=True, max_length=100)
    instructions = serializers.CharField(required=False, allow_blank=True, max_length=4096)


class HostedDreamListCreate(WorkspaceMixin, APIView):
    """ "Dream with Anthropic": list this agent's hosted dreams or start one."""

    required_scopes = {"GET": "read", "POST": "admin"}

    @extend_schema(responses=HostedDreamSerializer(many=True))
    def get(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug)
        return Response(HostedDreamSerializer(hosted_dreams_for(agent), many=True).data)

    @extend_schema(request=HostedDreamStartSerializer, responses={202: HostedDreamSerializer})
    def post(self, request: Request, slug: str) -> Response:
        agent = get_agent_for(self.principal, slug, write=True)
        serializer = HostedDreamStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            dream = hosted.start_hosted_dream(
                agent=agent, actor=self.principal.actor, trigger="api", **serializer.validated_data
            )
        except hosted.HostedDreamError as exc:
            return error_response("hosted_dream", str(exc), status_code=409)
        dream.refresh_from_db()
        return Response(HostedDreamSerializer(dream).data, status=status.HTTP_202_ACCEPTED)


class MemoryApplicationSerializer(serializers.ModelSerializer):
    proposal = serializers.IntegerField(source="proposal_id", read_only=True)

    class Meta:
        model = MemoryApplication
        fields = [
            "id",
            "proposal",
            "status",
            "memory_store_id",
            "planned",
            "written",
            "conflict",
            "agent_version_before",
            "agent_version_after",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class MemoryApply(WorkspaceMixin, APIView):
    """Write an approved proposal into the live memory store (reviewers), or list the attempts."""

    required_scopes = {"GET": "read", "POST": "admin"}

    def _proposal(self) -> Proposal:
        proposal = Proposal.objects.filter(
            agent__workspace=self.principal.workspace, pk=self.kwargs["pk"]
        ).first()
        if proposal is None:
            raise Http404("No such proposal in this workspace.")
        return proposal

    @extend_schema(responses=MemoryApplicationSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        applications = memory_applications_for(self._proposal())
        return Response(MemoryApplicationSerializer(applications, many=True).data)

    @extend_schema(
        request=None,
        responses={
            200: MemoryApplicationSerializer,
            # A conflict recorded while writing (the application row), or a proposal that
            # cannot be applied at all (the error shape).
            409: PolymorphicProxySerializer(
                component_name="MemoryApplicationConflict",
                serializers=[MemoryApplicationSerializer, ERROR_DOC],
                resource_type_field_name=None,
            ),
            503: ERROR_DOC,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        if not self.principal.can_review:
            raise PermissionDenied("Only reviewers can apply proposals.")
        proposal = self._proposal()
        try:
            application = apply.apply_approved_memory(
                proposal_id=proposal.pk, actor=self.principal.actor
            )
        except apply.ApplyError as exc:
            return error_response("cannot_apply", str(exc), status_code=409)
        except ManagedNotConfigured as exc:
            return error_response("not_configured", str(exc), status_code=503)
        code = status.HTTP_200_OK if application.status == MemoryApplication.Status.APPLIED else 409
        return Response(MemoryApplicationSerializer(application).data, status=code)


WEBHOOK_OUT_DOC = inline_serializer(
    "ManagedWebhookReceipt",
    fields={
        "received": serializers.BooleanField(),
        "duplicate": serializers.BooleanField(),
        "queued": serializers.BooleanField(),
    },
)


class ManagedWebhook(APIView):
    """Anthropic webhooks (Standard Webhooks signature); a session event queues its sync."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={202: WEBHOOK_OUT_DOC}, auth=[])
    def post(self, request: Request) -> Response:
        try:
            receipt = webhooks.receive_webhook(
                body=request.body, headers=webhooks.headers_of(request)
            )
        except webhooks.InvalidWebhook:
            return error_response(
                "invalid_signature", "Webhook verification failed.", status_code=400
            )
        except ManagedNotConfigured:
            return error_response(
                "not_configured", "No webhook signing secret is configured.", status_code=503
            )
        return Response(
            {"received": True, "duplicate": receipt.duplicate, "queued": receipt.queued},
            status=status.HTTP_202_ACCEPTED,
        )
