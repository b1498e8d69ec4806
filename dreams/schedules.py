"""Periodic tasks of dreaming, created in django-celery-beat's tables (editable in the admin)."""

from typing import Any

from django.conf import settings


def ensure_schedules(**kwargs: Any) -> None:
    """Create the beat entries once; later edits in the admin are kept (post_migrate receiver)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = settings.REVERIE_DREAM_SCHEDULE_MINUTES
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=every, period=IntervalSchedule.MINUTES
    )
    for name, task in (
        ("Start due dream cycles", "dreams.enqueue_due_cycles"),
        ("Resume stalled dream cycles", "dreams.resume_stale_cycles"),
        ("Resume stalled experiments", "dreams.resume_stale_experiments"),
    ):
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": interval})
