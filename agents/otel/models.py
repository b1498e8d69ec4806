"""The span buffer: spans received per trace (or conversation) until its run is settled."""

from django.db import models

from agents.models import Agent, Run


class CapturedTrace(models.Model):
    """The spans of one trace or one conversation; together they build one run."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="captured_traces")
    key = models.CharField(max_length=255, help_text="the run's external_id")
    run = models.OneToOneField(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="captured_trace"
    )
    first_received_at = models.DateTimeField()
    last_received_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "key"], name="capturedtrace_unique_key")
        ]
        indexes = [models.Index(fields=["settled_at", "last_received_at"], name="trace_settle")]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.key}"


class CapturedSpan(models.Model):
    """One received span, as decoded (attributes, events, status, resource)."""

    captured_trace = models.ForeignKey(
        CapturedTrace, on_delete=models.CASCADE, related_name="spans"
    )
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    # The decoded span as orjson text: written on every export, read back only to rebuild a run.
    data = models.TextField()
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "trace_id", "span_id"], name="capturedspan_unique_span"
            )
        ]
        indexes = [models.Index(fields=["agent", "trace_id"], name="span_agent_trace")]

    def __str__(self) -> str:
        return f"{self.trace_id}/{self.span_id}"
