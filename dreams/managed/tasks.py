"""Celery tasks of the Managed Agents connector: thin, take ids, call a service, safe to re-run."""

import logging

import anthropic
from celery import shared_task

from dreams.managed import apply, hosted, sync, webhooks
from dreams.managed.client import ManagedNotConfigured
from dreams.managed.models import HostedDream, ManagedAgentLink

logger = logging.getLogger(__name__)


@shared_task(name="dreams.managed.sync_all", acks_late=True)
def sync_all() -> None:
    """Periodic: sync every link, start scheduled hosted dreams, poll the ones that are due."""
    for link_id in ManagedAgentLink.objects.values_list("pk", flat=True):
        sync_agent_sessions.delay(link_id)
    hosted.start_due_hosted_dreams()
    hosted.poll_due()
    hosted.archive_decided_outputs()


@shared_task(name="dreams.managed.sync_agent", acks_late=True, soft_time_limit=900)
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


@shared_task(name="dreams.managed.sync_webhook_session", acks_late=True)
def sync_webhook_session(event_pk: int) -> None:
    webhooks.sync_webhook_session(event_pk=event_pk)


@shared_task(name="dreams.managed.submit_hosted_dream", acks_late=True)
def submit_hosted_dream(hosted_id: int) -> None:
    dream = hosted.submit(hosted_id=hosted_id)
    if dream.dream_id and not dream.is_terminal:
        _schedule_poll(dream)


@shared_task(name="dreams.managed.poll_hosted_dream", bind=True, acks_late=True)
def poll_hosted_dream(self, hosted_id: int) -> None:  # noqa: ANN001 - bound task
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


@shared_task(name="dreams.managed.apply_memory", acks_late=True)
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
