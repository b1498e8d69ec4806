from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_notification_schedules(**kwargs: Any) -> None:
    """Create the digest and webhook-resume beat entries once (editable in the admin afterwards)."""
    from django.conf import settings
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="0",
        hour=str(settings.REVERIE_DIGEST_HOUR),
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.get_or_create(
        name="Daily review digest",
        defaults={"task": "reviews.send_daily_digest", "crontab": crontab},
    )
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.get_or_create(
        name="Resume overdue webhooks",
        defaults={"task": "reviews.resume_webhooks", "interval": every},
    )


class ReviewsConfig(AppConfig):
    name = "reviews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from reviews import notifications

        notifications.connect_receivers()
        post_migrate.connect(ensure_notification_schedules, sender=self)
