"""Budgets and the replay concurrency limit hold across workers: each model call reserves its
estimate in the database (TokenReservation) before it is made, so a second worker process (here
a second BudgetGuard, with none of the first one's state) sees the first one's calls in flight."""

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from dreams.llm import BudgetExceeded, CallContext
from dreams.llm.budget import AtCapacity, BudgetGuard
from dreams.models import ModelCall, TokenReservation

pytestmark = pytest.mark.django_db


@pytest.fixture
def capped(agent):
    agent.monthly_token_budget = 1_000
    agent.cycle_token_budget = 1_000
    agent.replay_concurrency = 2
    agent.save(update_fields=["monthly_token_budget", "cycle_token_budget", "replay_concurrency"])
    return agent


def test_a_second_worker_sees_the_first_workers_reservation(capped):
    worker_a, worker_b = BudgetGuard(), BudgetGuard()
    context = CallContext(capped, "dream")

    held = worker_a.reserve(context, estimate=600)
    with pytest.raises(BudgetExceeded, match="monthly budget 1000"):
        worker_b.reserve(context, estimate=600)
    assert worker_b.reserve(context, estimate=400)  # what is left fits

    # Settled to the real tokens (its ModelCall row written), the rest is free again.
    ModelCall.objects.create(agent=capped, purpose="dream", input_tokens=100, output_tokens=0)
    worker_a.release(held, tokens=100)
    assert TokenReservation.objects.get(pk=held).tokens == 100
    with pytest.raises(BudgetExceeded):
        worker_b.reserve(context, estimate=600)  # 100 spent + 400 held + 600 > 1000
    assert worker_b.reserve(context, estimate=400)


def test_a_refused_reservation_holds_nothing(capped):
    guard = BudgetGuard()
    with pytest.raises(BudgetExceeded):
        guard.reserve(CallContext(capped, "dream"), estimate=5_000)
    assert not TokenReservation.objects.exists()


def test_the_replay_concurrency_limit_spans_workers(capped):
    worker_a, worker_b = BudgetGuard(), BudgetGuard()
    replay = CallContext(capped, "replay")

    first = worker_a.reserve(replay, estimate=10)
    worker_a.reserve(replay, estimate=10)
    with pytest.raises(AtCapacity):
        worker_b.reserve(replay, estimate=10)
    assert worker_b.reserve(CallContext(capped, "judge"), estimate=10)  # judges are not capped
    worker_a.release(first, tokens=10)
    assert worker_b.reserve(replay, estimate=10)


def test_a_dead_workers_reservation_stops_counting_when_it_expires(capped):
    guard = BudgetGuard()
    guard.reserve(CallContext(capped, "dream"), estimate=900)
    TokenReservation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert BudgetGuard().reserve(CallContext(capped, "dream"), estimate=900)
    assert BudgetGuard.sweep() == 1


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: SQLite serialises writers, so concurrent reservations never race",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_reserve_past_the_budget(capped):
    """12 threads, each its own guard (a worker process), race for a budget that fits 5."""
    barrier = threading.Barrier(12)
    outcomes: list[Any] = []

    def reserve() -> None:
        try:
            barrier.wait()
            outcomes.append(BudgetGuard().reserve(CallContext(capped, "dream"), estimate=200))
        except BaseException as exc:  # counted below
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    granted = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert len(granted) == 5 and len(refused) == 7, outcomes
    assert TokenReservation.objects.filter(agent=capped).count() == 5


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: SQLite serialises writers, so concurrent reservations never race",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_exceed_the_replay_concurrency(capped):
    barrier = threading.Barrier(8)
    outcomes: list[Any] = []

    def reserve() -> None:
        try:
            barrier.wait()
            outcomes.append(BudgetGuard().reserve(CallContext(capped, "replay"), estimate=10))
        except BaseException as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(isinstance(o, int) for o in outcomes) == 2, outcomes
    assert sum(isinstance(o, AtCapacity) for o in outcomes) == 6
