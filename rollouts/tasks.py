"""Celery tasks for rollouts: the periodic canary check (thin). Webhooks go through reviews.tasks."""

import logging

from celery import shared_task

from rollouts import services
from rollouts.models import Rollout

logger = logging.getLogger(__name__)


@shared_task(name="rollouts.check_rollouts")
def check_rollouts() -> int:
    """Fan out one canary evaluation per active rollout (scheduled by beat)."""
    ids = services.active_rollout_ids()
    for rollout_id in ids:
        evaluate_rollout.delay(rollout_id)
    return len(ids)


@shared_task(name="rollouts.evaluate_rollout", acks_late=True, soft_time_limit=120)
def evaluate_rollout(rollout_id: int) -> None:
    try:
        services.evaluate_rollout(rollout_id=rollout_id)
    except Rollout.DoesNotExist:
        logger.info("rollout %s is gone; nothing to evaluate", rollout_id)
