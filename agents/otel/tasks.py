"""Periodic housekeeping of the span buffer."""

from celery import shared_task

from agents.otel import services


@shared_task(name="otel.settle_traces", acks_late=True)
def settle_traces() -> int:
    """Mark quiet traces final (safe to run twice: settled ones are skipped)."""
    return services.settle_traces()
