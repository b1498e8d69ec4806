"""Read-only admin views of rollouts and their stages: state changes go through the services."""

from typing import Any, ClassVar

from django.contrib import admin
from django.http import HttpRequest

from reviews.admin import ReadOnlyAdmin
from rollouts.models import Rollout, RolloutStage


class RolloutStageInline(admin.TabularInline):
    model = RolloutStage
    extra = 0
    can_delete = False
    fields: ClassVar[tuple[str, ...]] = (
        "index",
        "percent",
        "status",
        "min_runs",
        "min_duration",
        "approved_by_label",
        "approved_at",
        "started_at",
        "ended_at",
        "verdict",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin):
    list_display = ["pk", "agent", "proposal", "status", "current_stage", "created_at", "ended_at"]
    list_filter = ["status", "agent"]
    list_select_related = ["agent", "proposal"]
    inlines = [RolloutStageInline]
