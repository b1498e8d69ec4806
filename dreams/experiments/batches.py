"""Replays through the Message Batches API, polled from beat.

A chunk task claims its slots, submits every replay's first step as one Message Batch
(`submit_replay_batch`) and ends: no worker waits up to a day for a batch. Beat's
`dreams.poll_replay_batches` (every REVERIE_BATCH_POLL_SECONDS) calls `poll_replay_batch` on
each open batch: when it has ended, the answers are fed to the replays, the next step is
submitted while any replay goes on, and finished replays are graded and saved; a batch
older than REVERIE_BATCH_MAX_WAIT_SECONDS is cancelled and its open replays fail. Each poll
refreshes the slots' claims, so a resumed experiment never replays a slot a batch holds.
"""

import logging
from typing import Any

from anthropic.types import Message
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dreams.experiments.execution import _save_slot, arm_versions, claim_slot
from dreams.grading import grade
from dreams.llm import BudgetExceeded, CallContext, ModelError, ModelUnavailable, get_gateway
from dreams.models import Experiment, Replay, ReplayBatch
from dreams.replay import REPLAY, ReplaySession, new_session

log = logging.getLogger(__name__)


def _sessions(batch: ReplayBatch, slots: list[Replay]) -> dict[str, ReplaySession]:
    """The batch's replays rebuilt from the answers of the steps already taken (the agent's
    turns and its simulated user's, in order). With a sandbox environment the rebuild runs the
    replay's calls again in a fresh session, so its state is the replay's own; close them with
    `_close_sessions`."""
    gateway = get_gateway()
    versions = arm_versions(batch.experiment)
    sessions = {}
    for slot in slots:
        session = new_session(slot.run, versions[slot.arm], gateway)
        for answer in batch.answers.get(str(slot.pk), []):
            session.feed(Message.model_validate(answer))
        sessions[str(slot.pk)] = session
    return sessions


def _close_sessions(sessions: dict[str, ReplaySession]) -> None:
    for session in sessions.values():
        session.close_environment()


def _submit(
    batch: ReplayBatch, sessions: dict[str, ReplaySession], slots: dict[str, Replay]
) -> str:
    """Submit the next call of every open replay (its agent's turn or its simulated user's);
    returns the Message Batch id."""
    gateway = get_gateway()
    open_ids = [sid for sid, session in sessions.items() if not session.done]
    agent = batch.experiment.agent
    calls = {sid: sessions[sid].next_call() for sid in open_ids}
    batch_id, _ = gateway.submit_batch(
        agent=agent,
        purpose=REPLAY,
        requests={sid: call.kwargs for sid, call in calls.items()},
        contexts={
            sid: CallContext(agent, call.purpose, None, batch.experiment, slots[sid])
            for sid, call in calls.items()
        },
        cache_prefix=True,
    )
    return batch_id


def _load_slots(slot_ids: list[int]) -> dict[str, Replay]:
    rows = Replay.objects.filter(pk__in=slot_ids).select_related("run__agent", "experiment")
    return {str(r.pk): r for r in rows.prefetch_related("run__feedback")}


def submit_replay_batch(*, experiment: Experiment, slots: list[Replay]) -> ReplayBatch | None:
    """Claim the slots and submit their first step; None when no slot could be claimed.
    Raises BudgetExceeded (nothing submitted) when the batch would go over a budget."""
    slots = [s for s in slots if claim_slot(s)]
    if not slots:
        return None
    batch = ReplayBatch(
        experiment=experiment, slot_ids=[s.pk for s in slots], submitted_at=timezone.now()
    )
    by_id = {str(s.pk): s for s in slots}
    sessions = _sessions(batch, slots)
    try:
        if all(session.done for session in sessions.values()):
            batch.anthropic_id = ""
            batch.save()
            _finish(batch, sessions, by_id)
            return batch
        try:
            batch.anthropic_id = _submit(batch, sessions, by_id)
        except ModelError as exc:
            for slot in slots:
                session = sessions[str(slot.pk)]
                session.fail(exc)
                _save_slot(slot, session.result, None, session.result.error)
            raise
        batch.save()
        return batch
    finally:
        _close_sessions(sessions)


def open_batch_ids() -> list[int]:
    return list(
        ReplayBatch.objects.filter(status=ReplayBatch.Status.OPEN).values_list("pk", flat=True)
    )


def poll_replay_batch(*, batch_id: int, now: Any = None) -> str:
    """Advance one open batch; returns its status afterwards (open, done or cancelled), or
    "busy" when another poller holds it or it is closed."""
    from dreams.experiments.lifecycle import fail_experiment, settle_chunk

    now = now or timezone.now()
    with transaction.atomic():
        batch = (
            ReplayBatch.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related(
                "experiment__agent",
                "experiment__baseline_version",
                "experiment__candidate_version",
            )
            .filter(pk=batch_id, status=ReplayBatch.Status.OPEN)
            .first()
        )
        if batch is None:
            return "busy"
        pending = Replay.objects.filter(pk__in=batch.slot_ids, status=Replay.Status.PENDING)
        if batch.experiment.status != Experiment.Status.RUNNING:
            # Cancelled meanwhile: stop paying, and free the slots for a re-run.
            get_gateway().cancel_batch(batch.anthropic_id)
            pending.update(claimed_at=None)
            _close(batch, ReplayBatch.Status.CANCELLED, now)
            return batch.status
        pending.update(claimed_at=now)  # still ours: a resumed experiment skips these slots
        outcome = _advance(batch, now)
    if outcome == "budget":
        fail_experiment(
            experiment_id=batch.experiment_id, error="Token budget exceeded; replays stopped."
        )
    elif batch.status != ReplayBatch.Status.OPEN:
        settle_chunk(experiment_id=batch.experiment_id)
    return batch.status


def _advance(batch: ReplayBatch, now: Any) -> str:
    """One poll of a locked open batch: wait, time out, or take the step's answers."""
    gateway = get_gateway()
    slots = _load_slots(batch.slot_ids)
    waited = (now - batch.submitted_at).total_seconds()
    sessions = _sessions(batch, list(slots.values()))
    try:
        return _advance_sessions(batch, now, gateway, slots, sessions, waited)
    finally:
        _close_sessions(sessions)


def _advance_sessions(
    batch: ReplayBatch,
    now: Any,
    gateway: Any,
    slots: dict[str, Replay],
    sessions: dict[str, ReplaySession],
    waited: float,
) -> str:
    open_ids = [sid for sid, session in sessions.items() if not session.done]
    calls = {sid: sessions[sid].next_call() for sid in open_ids}  # what the batch was asked
    if not gateway.batch_ended(batch.anthropic_id):
        if waited <= settings.REVERIE_BATCH_MAX_WAIT_SECONDS:
            return "waiting"
        gateway.cancel_batch(batch.anthropic_id)
        error = ModelUnavailable(
            f"batch {batch.anthropic_id} did not end within "
            f"{settings.REVERIE_BATCH_MAX_WAIT_SECONDS:.0f}s"
        )
        for sid in open_ids:
            sessions[sid].fail(error)
        _finish(batch, sessions, slots, status=ReplayBatch.Status.CANCELLED, now=now)
        return "timed_out"
    agent = batch.experiment.agent
    answers = gateway.collect_batch(
        batch.anthropic_id,
        agent=agent,
        purpose=REPLAY,
        models={sid: call.kwargs.get("model", "") for sid, call in calls.items()},
        contexts={
            sid: CallContext(agent, call.purpose, None, batch.experiment, slots[sid])
            for sid, call in calls.items()
        },
        latency_ms=int(waited * 1000),
    )
    stored = dict(batch.answers)
    for sid in open_ids:
        answer = answers[sid]
        if isinstance(answer, ModelError):
            sessions[sid].fail(answer)
        else:
            sessions[sid].feed(answer)
            stored[sid] = [*stored.get(sid, []), answer.model_dump(mode="json")]
    batch.answers = stored
    if all(session.done for session in sessions.values()):
        _finish(batch, sessions, slots, now=now)
        return "done"
    try:
        batch.anthropic_id = _submit(batch, sessions, slots)
    except ModelError as exc:
        for session in sessions.values():
            if not session.done:
                session.fail(exc)
        _finish(batch, sessions, slots, now=now)
        return "budget" if isinstance(exc, BudgetExceeded) else "failed"
    batch.step += 1
    batch.submitted_at = now
    batch.save(update_fields=["anthropic_id", "step", "answers", "submitted_at"])
    return "next_step"


def _finish(
    batch: ReplayBatch,
    sessions: dict[str, ReplaySession],
    slots: dict[str, Replay],
    *,
    status: str = ReplayBatch.Status.DONE,
    now: Any = None,
) -> None:
    """Grade the finished replays and save every slot; close the batch."""
    gateway = get_gateway()
    for sid, session in sessions.items():
        slot, result = slots[sid], session.result
        graded, error = None, result.error
        if not error:
            try:
                graded = grade(
                    slot.run, result, gateway=gateway, experiment=slot.experiment, replay_row=slot
                )
            except ModelError as exc:
                error = f"judge: {type(exc).__name__}: {exc}"
        _save_slot(slot, result, graded, error)
    _close(batch, status, now or timezone.now())


def _close(batch: ReplayBatch, status: str, now: Any) -> None:
    batch.status = status
    batch.finished_at = now
    batch.save(update_fields=["status", "finished_at", "answers"])
