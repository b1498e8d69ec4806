"""Run an experiment's replay slots concurrently (AsyncAnthropic, at most
`Agent.replay_concurrency` at once across every worker), each claimed before its model calls;
grade; save.
Batch mode is batches.py."""

import asyncio
import logging
from datetime import timedelta

from anyio.from_thread import BlockingPortal
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Prefetch, Q
from django.utils import timezone

from agents.models import Agent, ConfigVersion, Feedback
from dreams.grading import Grade, agrade
from dreams.llm import ModelError, get_gateway
from dreams.llm.gateway import Gateway
from dreams.models import Experiment, Replay
from dreams.replay import ReplayResult, areplay

log = logging.getLogger(__name__)


def pending_slots(experiment_id: int, run_ids: list[int]) -> list[Replay]:
    return list(
        Replay.objects.filter(
            experiment_id=experiment_id, run_id__in=run_ids, status=Replay.Status.PENDING
        )
        .select_related("run__agent", "experiment")
        .prefetch_related(
            Prefetch("run__feedback", queryset=Feedback.objects.order_by("-created_at"))
        )
        .order_by("run_id", "arm", "replicate")
    )


def claim_slot(slot: Replay) -> bool:
    """Claim a pending slot of a running experiment before its model calls (one conditional
    UPDATE, atomic on SQLite and PostgreSQL): a redelivered chunk or a resumed experiment that
    reaches a slot another worker holds skips it instead of replaying and paying for it again.
    A claim older than REVERIE_REPLAY_CLAIM_SECONDS (its worker died) is taken over."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.REVERIE_REPLAY_CLAIM_SECONDS)
    claimed = (
        Replay.objects.filter(
            pk=slot.pk,
            status=Replay.Status.PENDING,
            experiment__status=Experiment.Status.RUNNING,  # a cancelled experiment stops here
        )
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale))
        .update(claimed_at=now)
    )
    if claimed:
        slot.claimed_at = now
    return bool(claimed)


def _save_slot(slot: Replay, result: ReplayResult | None, graded: Grade | None, error: str) -> None:
    now = timezone.now()
    if result is not None:
        slot.messages = result.messages
        slot.tool_calls = result.tool_calls
        slot.simulated_turns = result.simulated_turns
        slot.simulated_user_tokens = result.simulated_user_tokens
        slot.steps = result.steps
        slot.stop_reason = result.stop_reason
        slot.model_stop_reason = result.model_stop_reason
        slot.divergence_step = result.divergence_step
        slot.divergence_kind = result.divergence_kind
        slot.off_recording = result.off_recording
        slot.unverifiable = result.unverifiable
        slot.input_tokens = result.usage.get("input_tokens", 0)
        slot.output_tokens = result.usage.get("output_tokens", 0)
        slot.cache_read_tokens = result.usage.get("cache_read_input_tokens", 0)
        slot.cache_write_tokens = result.usage.get("cache_creation_input_tokens", 0)
        slot.cost_usd = result.cost_usd
        slot.latency_ms = result.latency_ms
    if graded is not None and not error:
        slot.verdict, slot.reason, slot.grader = graded.verdict, graded.reason, graded.grader
        slot.status = Replay.Status.DONE
    else:
        slot.status = Replay.Status.FAILED
    slot.error = error[:2000]
    slot.finished_at = now
    slot.save()


def arm_versions(experiment: Experiment) -> dict[str, ConfigVersion]:
    return {
        Replay.Arm.BASELINE: experiment.baseline_version,
        Replay.Arm.CANDIDATE: experiment.candidate_version,
    }


class SharedSlots:
    """The agent's replay slots as one chunk sees them: at most `Agent.replay_concurrency`
    replays at once across every worker (taken from the database, `BudgetGuard.take_slot`).
    A slot a finished replay frees goes to this chunk's next replay without the database while
    any are still waiting; the rest go back at once, so other workers can have them."""

    def __init__(self, gateway: Gateway, agent: Agent, waiting: int) -> None:
        self.guard = gateway.budget
        self.agent = agent
        self.local = asyncio.Semaphore(max(1, agent.replay_concurrency))
        self.waiting = waiting
        self.idle = 0  # taken from the database, not replaying now
        self.held = 0  # taken from the database, not given back yet

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait for a slot; False (and no slot) once `stop` is set."""
        await self.local.acquire()
        self.waiting -= 1
        if stop.is_set():
            self.local.release()
            await self._trim()
            return False
        if self.idle:
            self.idle -= 1
            return True
        delay = 0.02
        while not await sync_to_async(self.guard.take_slot)(self.agent):
            if stop.is_set():
                self.local.release()
                return False
            await asyncio.sleep(delay)  # another worker holds them all: poll, backing off
            delay = min(delay * 2, 1.0)
        self.held += 1
        return True

    async def release(self) -> None:
        if self.waiting > 0:
            self.idle += 1
        else:
            await self._give_one()
        self.local.release()

    async def _give_one(self) -> None:
        self.held -= 1
        await sync_to_async(self.guard.give_slot)(self.agent)

    async def _trim(self) -> None:
        """Give back idle slots no waiting replay will use."""
        while self.idle > self.waiting:
            self.idle -= 1
            await self._give_one()

    async def close(self) -> None:
        """Every replay has ended: give back all this chunk took (also a replay's that was
        interrupted before it could), so a live worker never keeps a slot it does not use."""
        self.idle = self.waiting = 0
        while self.held > 0:
            await self._give_one()


async def replay_slots_async(
    slots: list[Replay], versions: dict[str, ConfigVersion], comments: dict[int, str]
) -> bool:
    """Replay and grade slots concurrently; returns False when the budget ran out."""
    gateway = get_gateway()
    agent = slots[0].run.agent
    shared = SharedSlots(gateway, agent, waiting=len(slots))
    budget_hit = asyncio.Event()

    async def one(slot: Replay) -> None:
        try:
            await replay_and_grade(slot)
        except Exception as exc:  # one broken replay must not sink the others
            log.exception("replay %s failed", slot.pk)
            await sync_to_async(_save_slot)(slot, None, None, f"{type(exc).__name__}: {exc}")

    async def replay_and_grade(slot: Replay) -> None:
        if not await shared.acquire(budget_hit):
            return
        try:
            if not await sync_to_async(claim_slot)(slot):
                return  # another worker holds it (or the experiment was cancelled)
            result = await areplay(
                slot.run,
                versions[slot.arm],
                gateway=gateway,
                experiment=slot.experiment,
                replay_row=slot,
                portal=portal,
            )
            graded, error = None, result.error
            if not error:
                try:
                    graded = await agrade(
                        slot.run,
                        result,
                        gateway=gateway,
                        comment=comments[slot.run_id],
                        experiment=slot.experiment,
                        replay_row=slot,
                    )
                except ModelError as exc:
                    error = f"judge: {type(exc).__name__}: {exc}"
            if "BudgetExceeded" in error:
                budget_hit.set()
        finally:
            await shared.release()
        # Saved outside the slot: waiting for the database must not hold a model slot.
        await sync_to_async(_save_slot)(slot, result, graded, error)

    try:
        # Environment sessions' MCP clients run on this loop (one session a replay, each
        # opened and closed by its replay), not on an event loop thread of their own each.
        async with BlockingPortal() as portal:
            await asyncio.gather(*(one(s) for s in slots))
    finally:
        await shared.close()
        await gateway.aclose()
    return not budget_hit.is_set()
