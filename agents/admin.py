from typing import Any, ClassVar

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from agents import services
from agents.environment_probe import probe_environment
from agents.forms import AgentAdminForm, tool_names
from agents.models import (
    Agent,
    ApiKey,
    AuditEvent,
    ConfigVersion,
    Feedback,
    Membership,
    Run,
    RunSet,
    RunSetMember,
    Workspace,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role"]
    list_filter = ["role", "workspace"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "workspace",
        "scope",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["workspace", "scope"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    fields = [
        "workspace",
        "name",
        "scope",
        "prefix",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        # Creation goes through the service so the key is hashed, audited and shown exactly once.
        key, raw = services.create_api_key(
            workspace=obj.workspace, name=obj.name, created_by=request.user, scope=obj.scope
        )
        obj.pk = key.pk
        obj.prefix = key.prefix
        messages.warning(request, f"Copy this API key now; it will not be shown again: {raw}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for key in queryset:
            services.revoke_api_key(key=key, actor=request.user)


class ConfigVersionInline(admin.TabularInline):
    model = ConfigVersion
    fk_name = "agent"
    extra = 0
    can_delete = False
    fields: ClassVar[tuple[str, ...]] = (
        "number",
        "source",
        "model",
        "author",
        "note",
        "created_at",
        "content_hash",
    )
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentAdminForm
    list_display = [
        "name",
        "slug",
        "workspace",
        "model",
        "dreaming_enabled",
        "is_paused",
        "stable_version",
    ]
    list_filter = ["workspace", "dreaming_enabled", "is_paused"]
    search_fields = ["name", "slug"]
    readonly_fields = ["stable_version", "canary_version", "canary_percent", "new_version_link"]
    inlines = [ConfigVersionInline]
    fieldsets = [
        (
            None,
            {"fields": ["workspace", "slug", "name", "description", "model", "new_version_link"]},
        ),
        (
            "Dreaming",
            {
                "fields": [
                    "dreaming_enabled",
                    "dream_frequency",
                    "dream_window_start",
                    "dream_window_end",
                    "failure_threshold",
                    "cycle_token_budget",
                    "monthly_token_budget",
                    "replay_concurrency",
                ]
            },
        ),
        ("Review", {"fields": ["required_approvals", "protected_sections"]}),
        (
            "Replay sandbox",
            {
                "fields": [
                    "sandbox_tools",
                    "write_tools",
                    "pure_tools",
                    "simulated_user",
                    "environment_url",
                ]
            },
        ),
        ("Notifications", {"fields": ["webhook_url", "webhook_secret"]}),
        (
            "Routing",
            {
                "fields": [
                    "is_paused",
                    "stable_version",
                    "canary_version",
                    "canary_percent",
                    "rollout_stages",
                ]
            },
        ),
    ]

    def get_urls(self) -> list[Any]:
        check = self.admin_site.admin_view(require_POST(self.environment_check))
        return [
            path("environment-check/", check, name="agents_agent_environment_check"),
            *super().get_urls(),
        ]

    def environment_check(self, request: HttpRequest) -> HttpResponse:
        """ "Test connection": probe the environment URL as typed (checked like every environment
        URL), and compare its tools with the agent's when the agent exists."""
        if not (self.has_change_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        agent = None
        agent_id = request.POST.get("agent", "")
        if agent_id.isdigit():
            agent = (
                self.get_queryset(request)
                .select_related("stable_version")
                .filter(pk=agent_id)
                .first()
            )
        probe = probe_environment(
            request.POST.get("environment_url", ""),
            agent_tools=tool_names(agent) if agent else None,
        )
        return render(request, "agents/environment_check.html", {"probe": probe, "agent": agent})

    @admin.display(description="Config")
    def new_version_link(self, obj: Agent) -> str:
        if not obj.pk:
            return "-"
        url = reverse("admin:agents_configversion_add") + f"?agent={obj.pk}"
        return format_html('<a href="{}">Create a new config version</a>', url)

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        changes = {
            f: form.cleaned_data[f] for f in form.changed_data if f in services.AGENT_SETTING_FIELDS
        }
        original = Agent.objects.get(pk=obj.pk)
        services.update_agent_settings(agent=original, actor=request.user, changes=changes)


@admin.register(ConfigVersion)
class ConfigVersionAdmin(admin.ModelAdmin):
    list_display = ["agent", "number", "source", "model", "author", "created_at"]
    list_filter = ["source", "agent"]
    fields: ClassVar[tuple[str, ...]] = (
        "agent",
        "system_prompt",
        "memory_documents",
        "tools",
        "model",
        "note",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.fields, "number", "source", "parent", "content_hash"] if obj else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ConfigVersion, form: Any, change: bool) -> None:
        if change:
            return  # immutable: the form is read-only
        version = services.create_config_version(
            agent=obj.agent,
            system_prompt=obj.system_prompt,
            memory_documents=obj.memory_documents,
            tools=obj.tools,
            model=obj.model,
            parent=obj.agent.stable_version,
            author=request.user,
            note=obj.note,
        )
        obj.pk, obj.number = version.pk, version.number
        obj._state.adding = False


class FeedbackInline(admin.TabularInline):
    model = Feedback
    extra = 0
    fields = ["rating", "score", "comment", "source", "author", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "agent",
        "status",
        "config_version",
        "step_count",
        "started_at",
        "view_link",
    ]
    list_filter = ["status", "agent", "source_format"]
    search_fields = ["external_id"]
    date_hierarchy = "started_at"
    # The recording is evidence for replays: only the outcome labels stay editable.
    readonly_fields = [
        "agent",
        "config_version",
        "external_id",
        "model",
        "system",
        "tools",
        "messages",
        "user_brief",
        "step_count",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "latency_ms",
        "started_at",
        "created_at",
        "metadata",
        "source_format",
    ]
    inlines = [FeedbackInline]
    list_select_related = ["agent", "config_version"]

    @admin.display(description="")
    def view_link(self, obj: Run) -> str:
        return format_html('<a href="{}">open</a>', reverse("run-detail", args=[obj.pk]))


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["run", "rating", "score", "source", "author", "created_at"]
    list_filter = ["rating", "source"]
    search_fields = ["run__external_id", "comment"]
    raw_id_fields = ["run"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "workspace",
        "actor_label",
        "action",
        "target_type",
        "target_label",
    ]
    list_filter = ["action", "workspace"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RunSetMemberInline(admin.TabularInline):
    model = RunSetMember
    extra = 0
    fields = ["external_id", "added_at"]
    readonly_fields = ["external_id", "added_at"]
    can_delete = False


@admin.register(RunSet)
class RunSetAdmin(admin.ModelAdmin):
    """Read-only here: run sets change through their page and API (agents/run_sets.py)."""

    list_display = ["name", "agent", "pinned", "origin", "created_at"]
    list_filter = ["pinned", "origin"]
    search_fields = ["name", "agent__slug"]
    inlines = [RunSetMemberInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
