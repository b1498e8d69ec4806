"""Celery tasks of the dreams app: thin wrappers that take ids and call a service."""

import logging

from celery import shared_task

from dreams import experiments

log = logging.getLogger(__name__)


@shared_task(name="dreams.run_experiment", acks_late=True)
def run_experiment_task(experiment_id: int) -> None:
    experiments.run_experiment(experiment_id=experiment_id)


@shared_task(name="dreams.resume_stale_experiments", ignore_result=True)
def resume_stale_experiments() -> None:
    """Beat's sweeper: experiments whose messages were lost or whose worker died run again."""
    for experiment_id in experiments.stale_experiments():
        run_experiment_task.delay(experiment_id)


@shared_task(name="dreams.replay_chunk", acks_late=True, soft_time_limit=3600)
def replay_chunk_task(experiment_id: int, run_ids: list[int]) -> None:
    experiments.replay_chunk(experiment_id=experiment_id, run_ids=run_ids)
