"""Celery tasks of the dreams app: run a dream cycle, start due cycles, resume stale ones, and
run an experiment's replays. Thin wrappers that take ids and call a service; found by autodiscovery."""

import logging

from celery import shared_task

from dreams import cycles, experiments, scheduling

logger = logging.getLogger(__name__)


@shared_task(name="dreams.run_experiment", acks_late=True)
def run_experiment_task(experiment_id: int) -> None:
    experiments.run_experiment(experiment_id=experiment_id)


@shared_task(name="dreams.resume_stale_experiments", ignore_result=True)
def resume_stale_experiments() -> None:
    """Beat's sweeper: experiments whose messages were lost or whose worker died run again;
    budget reservations that no longer count are deleted."""
    from dreams.llm.budget import BudgetGuard

    BudgetGuard.sweep()
    for experiment_id in experiments.stale_experiments():
        run_experiment_task.delay(experiment_id)


@shared_task(name="dreams.poll_replay_batches", ignore_result=True)
def poll_replay_batches() -> None:
    """Beat, every REVERIE_BATCH_POLL_SECONDS: advance each open replay batch (batch mode)."""
    from dreams.experiments.batches import open_batch_ids, poll_replay_batch

    for batch_id in open_batch_ids():
        try:
            poll_replay_batch(batch_id=batch_id)
        except Exception:  # one unreachable batch must not stop the others; polled again
            logger.exception("polling replay batch %s failed", batch_id)


@shared_task(name="dreams.replay_chunk", acks_late=True, soft_time_limit=3600)
def replay_chunk_task(experiment_id: int, run_ids: list[int]) -> None:
    experiments.replay_chunk(experiment_id=experiment_id, run_ids=run_ids)


@shared_task(
    bind=True,
    name="dreams.run_cycle",
    acks_late=True,
    max_retries=5,
    soft_time_limit=1800,
)
def run_dream_cycle(self, cycle_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        cycles.run_cycle(cycle_id=cycle_id)  # idempotent: safe to run twice
    except Exception as exc:
        # Another worker holds the cycle, or the model is unavailable: try again later; the
        # next run resumes from what is in the database.
        if isinstance(exc, cycles.CycleBusy) or cycles.is_transient(exc):
            raise self.retry(exc=exc, countdown=60 * 2**self.request.retries) from exc
        raise


@shared_task(name="dreams.enqueue_due_cycles", ignore_result=True)
def enqueue_due_cycles() -> None:
    started = scheduling.enqueue_due_cycles()
    if started:
        logger.info("started dream cycles %s", started)


@shared_task(name="dreams.resume_stale_cycles", ignore_result=True)
def resume_stale_cycles() -> None:
    for cycle_id in cycles.stale_cycles():
        run_dream_cycle.delay(cycle_id)
