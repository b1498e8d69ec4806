"""Managed Agents connector data: the link to a Managed Agent, hosted dreams, memory applications.

Imported into dreams.models (app label `dreams`). API keys are never stored here: a link names
which configured key to use (REVERIE_MANAGED_API_KEYS); the key itself stays in the environment.
"""

from django.conf import settings
from django.db import models

from agents.models import Agent

__all__ = ["HostedDream", "ManagedAgentLink", "ManagedWebhookEvent", "MemoryApplication"]


class ManagedAgentLink(models.Model):
    """Ties a Reverie agent to a Claude Managed Agent and its live memory store."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="managed_link")
    managed_agent_id = models.CharField(max_length=100, help_text="agent_… in the Anthropic API")
    memory_store_id = models.CharField(max_length=100, help_text="memstore_… the agent reads")
    anthropic_workspace_id = models.CharField(
        max_length=100, blank=True, help_text="wrkspc_…; sent as anthropic-workspace-id"
    )
    api_key_name = models.CharField(
        max_length=100,
        blank=True,
        help_text="name in REVERIE_MANAGED_API_KEYS; empty = the workspace slug, then ANTHROPIC_API_KEY",
    )
    hosted_dream_enabled = models.BooleanField(
        default=False,
        help_text="start hosted dreams on the agent's dream schedule / failure threshold",
    )
    managed_agent_version = models.PositiveIntegerField(null=True, blank=True)
    sync_cursor = models.DateTimeField(
        null=True, blank=True, help_text="sessions created from here on are listed at next sync"
    )
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_sync_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["managed_agent_id", "anthropic_workspace_id"],
                name="managedlink_unique_remote_agent",
            )
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} ↔ {self.managed_agent_id}"


class HostedDream(models.Model):
    """One call to the Dreams API; its DreamCycle (trigger=hosted) carries the shared status."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"  # not yet sent
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Canceled"

    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELED)

    cycle = models.OneToOneField(
        "dreams.DreamCycle", on_delete=models.CASCADE, related_name="hosted_dream"
    )
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="hosted_dreams")
    dream_id = models.CharField(max_length=100, blank=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    model = models.CharField(max_length=100)
    instructions = models.TextField(blank=True)
    session_ids = models.JSONField(default=list, help_text="input sessions (failed runs)")
    input_memory_store_id = models.CharField(max_length=100)
    output_memory_store_id = models.CharField(max_length=100, blank=True)
    output_archived_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="when the output store was archived at Anthropic (after the proposal's decision)",
    )
    usage = models.JSONField(default=dict, blank=True)
    error_type = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    poll_count = models.PositiveIntegerField(default=0)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    proposal = models.ForeignKey(
        "dreams.Proposal", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"hosted dream {self.dream_id or self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class MemoryApplication(models.Model):
    """One attempt to write an approved proposal into the live memory store, write by write."""

    class Status(models.TextChoices):
        APPLYING = "applying", "Applying"
        APPLIED = "applied", "Applied"
        CONFLICT = "conflict", "Conflict"
        FAILED = "failed", "Failed"

    proposal = models.ForeignKey(
        "dreams.Proposal", on_delete=models.CASCADE, related_name="memory_applications"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.APPLYING)
    memory_store_id = models.CharField(max_length=100)
    planned = models.JSONField(default=list, help_text="[{op, path}] in write order")
    written = models.JSONField(
        default=list, help_text="[{op, path, memory_id, content_sha256}] writes that succeeded"
    )
    conflict = models.JSONField(
        default=dict,
        blank=True,
        help_text="{path, memory_id, expected_sha256, live_sha256, live_content, message}",
    )
    agent_version_before = models.PositiveIntegerField(null=True, blank=True)
    agent_version_after = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["proposal"],
                condition=models.Q(status="applying"),
                name="memoryapplication_one_running_per_proposal",
            )
        ]

    def __str__(self) -> str:
        return f"memory application {self.pk} ({self.status})"


class ManagedWebhookEvent(models.Model):
    """A verified Anthropic webhook delivery; the unique id makes redelivery a no-op."""

    event_id = models.CharField(max_length=100, unique=True)
    event_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=100, help_text="data.id, e.g. the session id")
    anthropic_workspace_id = models.CharField(max_length=100, blank=True)
    link = models.ForeignKey(
        ManagedAgentLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.object_id}"
