"""Celery tasks of `reviews`: webhook delivery (with retries and backoff) and the daily digest."""

import logging

from celery import shared_task
from celery.contrib.django.task import DjangoTask

from reviews import digest, notifications

logger = logging.getLogger(__name__)


@shared_task(
    bind=True, name="reviews.deliver_webhook", acks_late=True, max_retries=None, base=DjangoTask
)
def deliver_webhook(self: DjangoTask[[int], str], delivery_id: int) -> str:
    outcome = notifications.deliver(delivery_id=delivery_id)
    if outcome.retry_in is not None and not self.request.is_eager:
        # Attempts are capped by REVERIE_WEBHOOK_MAX_ATTEMPTS inside `deliver`.
        raise self.retry(countdown=outcome.retry_in)
    if outcome.retry_in is not None:
        # Eager mode (embedded, tests): no broker to wait on, so try again at once.
        return self.run(delivery_id)
    return outcome.status


@shared_task(name="reviews.send_daily_digest", ignore_result=True)
def send_daily_digest() -> None:
    sent = digest.send_daily_digest()
    logger.info("daily digest: %s e-mails", sent)


@shared_task(name="reviews.resume_webhooks", ignore_result=True)
def resume_webhooks() -> None:
    """Deliveries whose retry is overdue (a lost broker message): enqueue them again."""
    for delivery_id in notifications.overdue_deliveries():
        deliver_webhook.delay(delivery_id)
