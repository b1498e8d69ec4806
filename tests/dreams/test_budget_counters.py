"""Budgets and the replay concurrency limit hold across workers: each worker takes tokens and
replay slots from one shared counter row (a conditional UPDATE), so a second worker — here a
second BudgetGuard, or a second OS process — sees what the first one holds and spent; a dead
worker's share goes back when beat's sweeper finds its lease expired."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from dreams.llm import BudgetExceeded, CallContext
from dreams.llm.accounting import Accountant
from dreams.llm.budget import MONTH, BudgetGuard, lease_seconds, sweep_leases
from dreams.models import BudgetCounter, BudgetLease, ModelCall
from dreams.tasks import resume_stale_experiments
from tests.dreams.test_recovery import _experiment, seeded  # noqa: F401

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
NEEDS_PG = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: the worker processes share the test database over the network "
    "(the SQLite test database is in this process's memory)",
)


@pytest.fixture
def capped(agent):
    agent.monthly_token_budget = 1_000
    agent.cycle_token_budget = 1_000
    agent.replay_concurrency = 2
    agent.save(update_fields=["monthly_token_budget", "cycle_token_budget", "replay_concurrency"])
    return agent


def _record(guard: BudgetGuard, context: CallContext, *, tokens: int, estimate: int) -> None:
    Accountant(backend="simulated", guard=guard).record(
        context, model="claude-haiku-5-5", usage={"input_tokens": tokens}, latency_ms=1,
        release=estimate,
    )  # fmt: skip


def _held(agent, cycle_id: int = MONTH) -> tuple[int, int, int]:
    row = BudgetCounter.objects.get(agent=agent, cycle_id=cycle_id)
    return row.reserved, row.recorded, row.slots


def test_a_second_worker_sees_the_first_workers_hold_and_its_recorded_spend(capped):
    worker_a, worker_b = BudgetGuard(), BudgetGuard()
    context = CallContext(capped, "replay")

    worker_a.reserve(context, estimate=600)
    with pytest.raises(BudgetExceeded, match="monthly budget 1000"):
        worker_b.reserve(context, estimate=600)
    worker_b.reserve(context, estimate=400)  # what is left fits

    # A's call is recorded (100 tokens): its hold ends, its tokens count at once for B too,
    # although B's cached spend (read before the call was recorded) does not have them yet.
    _record(worker_a, context, tokens=100, estimate=600)
    assert ModelCall.objects.filter(agent=capped).count() == 1
    assert _held(capped) == (400, 100, 0)
    with pytest.raises(BudgetExceeded):
        worker_b.reserve(context, estimate=600)  # 100 spent + 400 held + 600 > 1000
    worker_b.reserve(context, estimate=500)
    assert _held(capped)[0] == 900


def test_a_worker_takes_a_chunk_and_gives_back_what_it_did_not_use(agent):
    guard = BudgetGuard()
    context = CallContext(agent, "replay")
    guard.reserve(context, estimate=100)
    chunk = _held(agent)[0]
    assert chunk == 800  # eight calls' estimates: the next seven need no database
    guard.reserve(context, estimate=100, cached_only=True)
    _record(guard, context, tokens=50, estimate=100)
    assert _held(agent) == (100, 50, 0)  # the one still in flight
    guard.release(context, estimate=100)
    assert _held(agent)[0] == 0
    assert BudgetLease.objects.get(agent=agent, cycle_id=MONTH).tokens == 0


def test_a_cycles_cap_is_shared_too(capped):
    from tests.factories import DreamCycleFactory

    capped.monthly_token_budget = 10_000
    capped.save(update_fields=["monthly_token_budget"])
    cycle = DreamCycleFactory(agent=capped)
    context = CallContext(capped, "dream", cycle=cycle)
    BudgetGuard().reserve(context, estimate=700)
    with pytest.raises(BudgetExceeded, match=f"cycle {cycle.pk}"):
        BudgetGuard().reserve(context, estimate=700)
    BudgetGuard().reserve(CallContext(capped, "dream"), estimate=700)  # outside the cycle


def test_a_refused_reservation_holds_nothing(capped):
    guard = BudgetGuard()
    with pytest.raises(BudgetExceeded):
        guard.reserve(CallContext(capped, "replay"), estimate=5_000)
    assert _held(capped)[0] == 0


def test_the_replay_concurrency_limit_spans_workers(capped):
    worker_a, worker_b = BudgetGuard(), BudgetGuard()
    assert worker_a.take_slot(capped) and worker_a.take_slot(capped)
    assert not worker_b.take_slot(capped)
    worker_a.give_slot(capped)
    assert worker_b.take_slot(capped)
    assert not worker_a.take_slot(capped)


def test_a_dead_workers_tokens_and_slots_go_back_when_its_lease_expires(capped):
    dead = BudgetGuard()
    dead.reserve(CallContext(capped, "replay"), estimate=900)
    assert dead.take_slot(capped)
    assert dead.take_slot(capped)
    other = BudgetGuard()
    with pytest.raises(BudgetExceeded):
        other.reserve(CallContext(capped, "replay"), estimate=900)
    assert not other.take_slot(capped)

    assert sweep_leases() == 0  # not expired yet: a live worker keeps what it holds
    BudgetLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    resume_stale_experiments.apply()  # beat's sweeper
    assert _held(capped) == (0, 0, 0)
    other.reserve(CallContext(capped, "replay"), estimate=900)
    assert other.take_slot(capped)

    # The "dead" worker was only slow: what it gives back now is not given back twice.
    dead.release(CallContext(capped, "replay"), estimate=900)
    dead.give_slot(capped)
    assert _held(capped) == (900, 0, 1)


# -- real worker processes (PostgreSQL) ------------------------------------------------------


def _worker_env() -> dict[str, str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}


def _workers(*args_per_worker: list[Any]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.dreams.budget_worker", *map(str, args)],
            cwd=ROOT,
            env=_worker_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for args in args_per_worker
    ]


def _outputs(processes: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        outputs.append(out.strip())
    return outputs


def race_for_one_budget(agent, *, budget: int = 20_000, estimate: int = 300) -> tuple[int, int]:
    """Two worker processes spend from one budget until it refuses them; (calls, tokens)."""
    agent.monthly_token_budget = agent.cycle_token_budget = budget
    agent.save(update_fields=["monthly_token_budget", "cycle_token_budget"])
    ModelCall.objects.filter(agent=agent).delete()
    BudgetCounter.objects.filter(agent=agent).delete()
    start_at = time.time() + 3
    outputs = _outputs(_workers(*[["spend", agent.pk, estimate, 250, start_at]] * 2))
    calls = sum(map(int, outputs))
    tokens = sum(c.total_tokens for c in ModelCall.objects.filter(agent=agent))
    return calls, tokens


@NEEDS_PG
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_never_spend_past_one_budget(agent):
    calls, tokens = race_for_one_budget(agent)
    assert calls == ModelCall.objects.filter(agent=agent).count()
    assert tokens <= 20_000
    # Neither refused early: the last call left less than two chunks' worth unused.
    assert tokens > 20_000 - 2 * 8 * 300
    assert BudgetCounter.objects.get(agent=agent, cycle_id=MONTH).reserved == 0


def race_for_replay_slots(agent, *, limit: int = 5) -> int:
    """Two worker processes each try to take `limit` replay slots; how many they got."""
    agent.replay_concurrency = limit
    agent.save(update_fields=["replay_concurrency"])
    BudgetCounter.objects.filter(agent=agent).delete()
    start_at = time.time() + 3
    return sum(map(int, _outputs(_workers(*[["slots", agent.pk, limit, start_at]] * 2))))


@NEEDS_PG
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_never_exceed_the_replay_concurrency(agent):
    assert race_for_replay_slots(agent) == 5
    assert BudgetCounter.objects.get(agent=agent, cycle_id=MONTH).slots == 5


def kill_a_holder(agent, *, estimate: int = 900) -> tuple[tuple[int, int, int], int]:
    """A worker process takes `estimate` tokens and a replay slot and is SIGKILLed; then the
    sweeper runs past its lease. What the counter held after the kill, and how many leases
    the sweeper reclaimed."""
    (holder,) = _workers(["hold", agent.pk, estimate])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    held = _held(agent)
    return held, sweep_leases(timezone.now() + timedelta(seconds=lease_seconds() + 1))


@NEEDS_PG
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_process_s_hold_is_reclaimed(capped):
    held, reclaimed = kill_a_holder(capped)
    assert held == (900, 0, 1)  # nobody gave it back when it died
    assert reclaimed == 1
    assert _held(capped) == (0, 0, 0)
    BudgetGuard().reserve(CallContext(capped, "replay"), estimate=900)
    assert BudgetGuard().take_slot(capped)


# -- a chunk's replays share the agent's slots with other workers ----------------------------


def test_a_chunk_waits_for_a_slot_another_worker_holds_and_gives_back_what_it_took(capped):
    import asyncio

    from asgiref.sync import async_to_sync, sync_to_async

    from dreams.experiments.execution import SharedSlots
    from dreams.llm import get_gateway

    other = BudgetGuard()
    assert other.take_slot(capped) and other.take_slot(capped)  # both of the agent's 2 slots
    stop = asyncio.Event()

    async def run() -> tuple[bool, bool, int, int]:
        shared = SharedSlots(get_gateway(), capped, waiting=1)
        waiting = asyncio.ensure_future(shared.acquire(stop))
        await asyncio.sleep(0.2)
        blocked = not waiting.done()
        await sync_to_async(other.give_slot)(capped)
        got = await asyncio.wait_for(waiting, timeout=60)
        during = (await sync_to_async(_held)(capped))[2]
        await shared.close()  # the replay was interrupted before its release: close gives it back
        return blocked, got, during, shared.held

    blocked, got, during, left = async_to_sync(run)()
    assert blocked and got
    assert during == 2  # the other worker's one and this chunk's one, never more
    assert left == 0 and _held(capped)[2] == 1  # only the other worker's slot is still taken


def test_after_an_experiment_nothing_is_held_and_every_recorded_token_is_counted(
    seeded,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    experiment = _experiment(seeded, django_capture_on_commit_callbacks, execute=True)
    assert experiment.status == "completed", experiment.error
    spent = sum(c.total_tokens for c in ModelCall.objects.filter(agent=seeded))
    assert spent > 0
    reserved, recorded, slots = _held(seeded)
    assert (reserved, slots) == (0, 0)
    assert recorded == spent
