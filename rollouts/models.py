"""Rollouts and their stages: an approved candidate reaches production a stage at a time.

State machine (DESIGN.md, *States*): stage k `running` ↔ stage k `awaiting_approval`
→ `completed` | `halted` | `rolled_back`; the tables are in `rollouts/states.py`. The routing
itself lives on the agent.
"""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

from agents.models import Agent, ConfigVersion
from dreams.models import Proposal

__all__ = ["Rollout", "RolloutStage", "DEFAULT_STAGES"]

DEFAULT_STAGES = [5, 25, 100]


class Rollout(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Stage running"
        AWAITING_APPROVAL = "awaiting_approval", "Stage awaiting approval"
        COMPLETED = "completed", "Completed"
        HALTED = "halted", "Halted"
        ROLLED_BACK = "rolled_back", "Rolled back"

    ACTIVE = (Status.RUNNING, Status.AWAITING_APPROVAL)

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="rollouts")
    proposal = models.ForeignKey(Proposal, on_delete=models.PROTECT, related_name="rollouts")
    from_version = models.ForeignKey(ConfigVersion, on_delete=models.PROTECT, related_name="+")
    to_version = models.ForeignKey(ConfigVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    current_stage = models.PositiveSmallIntegerField(default=0, help_text="0-based stage index")
    halt_reason = models.TextField(blank=True)
    halted_automatically = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_by_label = models.CharField(max_length=200, blank=True, help_text="user or API key")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent"],
                condition=Q(status__in=["running", "awaiting_approval"]),
                name="rollout_one_active_per_agent",
            )
        ]
        indexes = [models.Index(fields=["status"], name="rollout_status")]

    def __str__(self) -> str:
        return f"Rollout #{self.pk} of {self.agent.slug} v{self.to_version.number}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class RolloutStage(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        HALTED = "halted", "Halted"
        SKIPPED = "skipped", "Not reached"

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="stages")
    index = models.PositiveSmallIntegerField()
    percent = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    min_runs = models.PositiveIntegerField(help_text="canary-arm runs before it may advance")
    min_duration = models.DurationField(default=timedelta(minutes=30))
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    approved_by_label = models.CharField(max_length=200, blank=True, help_text="user or API key")
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    verdict = models.CharField(max_length=200, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="canary analysis at the end")

    class Meta:
        ordering = ["rollout", "index"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "index"], name="rolloutstage_unique_index"),
            models.CheckConstraint(
                condition=Q(percent__gte=1) & Q(percent__lte=100), name="rolloutstage_percent_range"
            ),
        ]

    def __str__(self) -> str:
        return f"stage {self.index + 1} ({self.percent}%)"

    @property
    def number(self) -> int:
        return self.index + 1
