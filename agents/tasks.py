"""Celery tasks of the capture side: thin, take ids, call a service."""

import logging

from celery import shared_task

from agents import services

logger = logging.getLogger(__name__)


@shared_task(name="agents.recount_steps", acks_late=True)
def recount_steps(run_id: int) -> None:
    """Housekeeping: re-derive a run's step count from its messages (safe to run twice)."""
    if services.recount_steps(run_id=run_id) is None:
        logger.info("run %s is gone; nothing to recount", run_id)
