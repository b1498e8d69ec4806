"""The span buffer: spans received per trace (or conversation) until its run is settled.

One CapturedTrace per run (a trace, or a conversation of several traces); one TraceSpans row per
trace id in it holding all that trace's spans.
"""

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


class TraceSpans(models.Model):
    """The spans received of one trace id, in one row (not one per span): one insert per trace
    on the hot path; late spans of the same trace are appended to it."""

    captured_trace = models.ForeignKey(
        CapturedTrace, on_delete=models.CASCADE, related_name="trace_spans"
    )
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    trace_id = models.CharField(max_length=32)
    span_ids = models.TextField(help_text="the received span ids, space-separated")
    span_count = models.PositiveIntegerField(default=0)
    # The decoded spans as one orjson list: written on every export, read back only to rebuild.
    data = models.TextField()
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "trace_id"], name="tracespans_unique_trace")
        ]

    def __str__(self) -> str:
        return f"{self.trace_id} ({self.span_count} spans)"
