"""Celery tasks of the dreams app: run a dream cycle, start due cycles, resume stale ones, run an
experiment's replays, and the Managed Agents connector's sync, hosted dreams and memory apply.
Thin wrappers that take ids and call a service; found by autodiscovery."""

import logging

import anthropic
from celery import Task, shared_task
from celery.contrib.django.task import DjangoTask

from dreams import cycles, experiments, scheduling
from dreams.managed import apply, hosted, sync, webhooks
from dreams.managed.client import ManagedNotConfigured
from dreams.managed.models import HostedDream, ManagedAgentLink

logger = logging.getLogger(__name__)


@shared_task(name="dreams.run_experiment", acks_late=True)
def run_experiment_task(experiment_id: int) -> None:
    experiments.run_experiment(experiment_id=experiment_id)


@shared_task(name="dreams.resume_stale_experiments", ignore_result=True)
def resume_stale_experiments() -> None:
    """Beat's sweeper: experiments whose messages were lost or whose worker died run again, and
    budget tokens and replay slots a dead worker held go back to their agents."""
    from dreams.llm.budget import sweep_leases

    reclaimed = sweep_leases()
    if reclaimed:
        logger.warning("gave back the budget leases of %d dead workers", reclaimed)
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
def run_dream_cycle(self: Task[[int], None], cycle_id: int) -> None:
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


# -- Managed Agents connector ---------------------------------------------------------------


@shared_task(name="dreams.managed.sync_all", acks_late=True)
def sync_all() -> None:
    """Periodic: sync every link, start scheduled hosted dreams, poll the ones that are due."""
    for link_id in ManagedAgentLink.objects.values_list("pk", flat=True):
        sync_agent_sessions.delay(link_id)
    hosted.start_due_hosted_dreams()
    hosted.poll_due()
    hosted.archive_decided_outputs()


@shared_task(name="dreams.managed.sync_agent", acks_late=True, soft_time_limit=900, base=DjangoTask)
def sync_agent_sessions(link_id: int) -> None:
    if not ManagedAgentLink.objects.filter(pk=link_id).exists():
        logger.info("link %s is gone; nothing to sync", link_id)
        return
    try:
        sync.sync_link(link_id=link_id)
        # Embedded mode has no timer for polls: a sync also advances this agent's hosted dreams.
        link = ManagedAgentLink.objects.get(pk=link_id)
        hosted.poll_due(agent_id=link.agent_id)
    except (anthropic.APIError, ManagedNotConfigured) as exc:
        # The message names the failure, never a key.
        sync.record_sync_error(link_id=link_id, message=f"{type(exc).__name__}: {exc}")


@shared_task(name="dreams.managed.sync_webhook_session", acks_late=True, base=DjangoTask)
def sync_webhook_session(event_pk: int) -> None:
    webhooks.sync_webhook_session(event_pk=event_pk)


@shared_task(name="dreams.managed.submit_hosted_dream", acks_late=True, base=DjangoTask)
def submit_hosted_dream(hosted_id: int) -> None:
    dream = hosted.submit(hosted_id=hosted_id)
    if dream.dream_id and not dream.is_terminal:
        _schedule_poll(dream)


@shared_task(name="dreams.managed.poll_hosted_dream", bind=True, acks_late=True)
def poll_hosted_dream(self: Task[[int], None], hosted_id: int) -> None:
    if not HostedDream.objects.filter(pk=hosted_id).exists():
        return
    dream = hosted.poll(hosted_id=hosted_id)
    if not dream.is_terminal:
        _schedule_poll(dream)


def _schedule_poll(dream: HostedDream) -> None:
    # Eager mode (embedded, tests) has no timer: re-enqueueing would spin, so the periodic
    # sync_all picks the dream up from the database instead.
    if poll_hosted_dream.app.conf.task_always_eager:
        return
    poll_hosted_dream.apply_async((dream.pk,), countdown=hosted.poll_delay(dream.poll_count))


@shared_task(name="dreams.managed.apply_memory", acks_late=True, base=DjangoTask)
def apply_memory(proposal_id: int, user_id: int | None = None) -> None:
    from django.contrib.auth import get_user_model

    actor = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    apply.apply_approved_memory(proposal_id=proposal_id, actor=actor)


@shared_task(name="dreams.managed.archive_hosted_output", acks_late=True)
def archive_hosted_output(proposal_id: int) -> None:
    for hosted_id in HostedDream.objects.filter(proposal_id=proposal_id).values_list(
        "pk", flat=True
    ):
        hosted.archive_output_store(hosted_id=hosted_id)


def on_proposal_decided(sender: object, *, proposal_id: int, **kwargs: object) -> None:
    """dreams.signals.proposal_decided: a decided hosted-dream proposal's output store is archived."""
    if HostedDream.objects.filter(proposal_id=proposal_id).exists():
        archive_hosted_output.delay(proposal_id)
