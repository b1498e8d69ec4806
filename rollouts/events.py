"""Rollout webhooks: Standard Webhooks–signed events to the agent's URL, sent after commit.

Delivery, signing, the private-address refusal and the attempt log are the shared ones in
reviews/notifications.py; this module only says what a rollout event contains.
"""

from typing import Any

from django.utils import timezone

from reviews.notifications import enqueue_delivery
from rollouts.models import Rollout


def rollout_payload(*, rollout: Rollout, event: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": event,
        "timestamp": timezone.now().isoformat(),
        "data": {
            "rollout_id": rollout.pk,
            "agent": rollout.agent.slug,
            "status": rollout.status,
            "from_version": rollout.from_version.number,
            "to_version": rollout.to_version.number,
            "stage": rollout.current_stage + 1,
            "proposal_id": rollout.proposal_id,
            **detail,
        },
    }


def notify_rollout_event(
    *, rollout: Rollout, event: str, detail: dict[str, Any] | None = None
) -> None:
    """Enqueue a signed webhook for a rollout event once the surrounding transaction commits."""
    payload = rollout_payload(rollout=rollout, event=event, detail=detail or {})
    enqueue_delivery(
        agent=rollout.agent,
        event_key=f"{event}:{rollout.pk}:{rollout.current_stage}:{payload['timestamp']}",
        payload=payload,
        event_type=event,
    )
