"""Celery tasks for rollouts: the periodic canary check and webhook delivery (thin)."""

import logging

import httpx2
from celery import shared_task

from reviews import rollouts
from reviews.models import Rollout
from reviews.rollout_notifications import WebhookRefused, deliver

logger = logging.getLogger(__name__)


@shared_task(name="reviews.check_rollouts")
def check_rollouts() -> int:
    """Fan out one canary evaluation per active rollout (scheduled by beat)."""
    ids = rollouts.active_rollout_ids()
    for rollout_id in ids:
        evaluate_rollout.delay(rollout_id)
    return len(ids)


@shared_task(name="reviews.evaluate_rollout", acks_late=True, soft_time_limit=120)
def evaluate_rollout(rollout_id: int) -> None:
    try:
        rollouts.evaluate_rollout(rollout_id=rollout_id)
    except Rollout.DoesNotExist:
        logger.info("rollout %s is gone; nothing to evaluate", rollout_id)


@shared_task(
    name="reviews.deliver_rollout_webhook",
    acks_late=True,
    autoretry_for=(OSError, httpx2.HTTPError),
    retry_backoff=True,
    max_retries=6,
)
def deliver_rollout_webhook(agent_id: int, message_id: str, body: str) -> None:
    try:
        deliver(agent_id=agent_id, message_id=message_id, body=body)
    except WebhookRefused as exc:
        logger.warning("webhook %s refused: %s", message_id, exc)
