"""The fault battery: each fault tried several times, and how much work or data it lost.

Run `pytest -q -s tests/test_fault_battery.py` to print the counts the README quotes
(`fault battery: <fault>: tried N, lost M`); each test also fails if anything was lost.
"""

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from agents.ingest import ingest_runs
from agents.models import Run
from dreams.models import BudgetCounter, DreamCycle, Experiment
from dreams.tasks import resume_stale_cycles, resume_stale_experiments
from tests.dreams.test_budget_counters import (
    NEEDS_PG,
    kill_a_holder,
    race_for_one_budget,
    race_for_replay_slots,
)
from tests.dreams.test_recovery import (  # noqa: F401
    _experiment,
    broker_back,
    broker_down,
    reviewer_api,
    seeded,
)
from tests.factories import AgentFactory, simple_messages


def report(fault: str, tried: int, lost: int) -> None:
    print(f"fault battery: {fault}: tried {tried}, lost {lost}")


@pytest.mark.django_db
def test_broker_down_loses_no_dream_cycle(
    seeded,  # noqa: F811
    reviewer_api,  # noqa: F811
    broker_down,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    agents = [AgentFactory(workspace=seeded.workspace, slug=f"desk-{i}") for i in range(5)]
    ids = []
    for agent in agents:
        with django_capture_on_commit_callbacks(execute=True):
            response = reviewer_api.post(f"/api/v1/agents/{agent.slug}/dreams")
        assert response.status_code == 202
        ids.append(response.json()["id"])
    broker_back()
    DreamCycle.objects.filter(pk__in=ids).update(created_at=timezone.now() - timedelta(hours=1))
    resume_stale_cycles.apply()
    done = DreamCycle.objects.filter(pk__in=ids, status=DreamCycle.Status.SUCCEEDED).count()
    report("broker down at 'Dream now'", len(ids), len(ids) - done)
    assert done == len(ids)


@pytest.mark.django_db
def test_a_killed_worker_loses_no_experiment(seeded, django_capture_on_commit_callbacks):  # noqa: F811
    experiments = [
        _experiment(seeded, django_capture_on_commit_callbacks, execute=False) for _ in range(3)
    ]
    ids = [e.pk for e in experiments]
    Experiment.objects.filter(pk__in=ids).update(
        status=Experiment.Status.RUNNING, started_at=timezone.now() - timedelta(hours=2)
    )
    with django_capture_on_commit_callbacks(execute=True):
        resume_stale_experiments.apply()
    done = Experiment.objects.filter(pk__in=ids, status=Experiment.Status.COMPLETED).count()
    report("worker killed mid-experiment", len(ids), len(ids) - done)
    assert done == len(ids)


BAD_RUNS = [
    {"started_at": "9999-12-31T23:00:00-12:00"},
    {"started_at": "2026-11-01T10:00:00+16:00"},
    {"started_at": "0001-01-01T00:00:00+01:00"},
    {"latency_ms": 10**12},
    {"cost_usd": 10**9},
    {"usage": {"input_tokens": 2**70}},
    {"expectations": {"expected_answer_pattern": "(a)\\1"}},
    {"outcome_reason": "\u0000"},
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]},
            {"role": "user", "content": "Hello?"},
        ]
    },
]
BAD_QUERIES = [
    {"since": "9999-12-31T23:00:00-12:00"},
    {"until": "2026-11-01T10:00:00+16:00"},
    {"until": ""},
    {"page_size": "abc"},
    {"page_size": "0"},
]
BAD_SETTINGS = [
    {"protected_sections": None},
    {"rollout_stages": [50, 5]},
    {"replay_concurrency": 0},
    {"dream_window_start": "22:00"},
    {"model": 5},
]


@pytest.mark.django_db
def test_bad_inputs_are_refused_with_a_400_and_never_stored(api, agent):
    tried = lost = 0
    for extra in BAD_RUNS:
        body = {"agent": "support", "external_id": f"bad-{tried}", "messages": simple_messages()}
        body.update(extra)
        response = api.post("/api/v1/runs", json.dumps(body), content_type="application/json")
        tried += 1
        lost += response.status_code != 400
    for params in BAD_QUERIES:
        tried += 1
        lost += api.get("/api/v1/runs", params).status_code != 400
    for changes in BAD_SETTINGS:
        tried += 1
        lost += api.patch(f"/api/v1/agents/{agent.slug}", changes, format="json").status_code != 400
    stored = Run.objects.filter(external_id__startswith="bad-").count()
    report("bad inputs (runs, filters, agent settings)", tried, lost + stored)
    assert lost == stored == 0


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: SQLite serialises writers, so concurrent batches never race",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_batches_lose_nothing(agent, workspace):
    items = [
        {"agent": "support", "external_id": f"fb-{i}", "messages": simple_messages()}
        for i in range(100)
    ]
    barrier = threading.Barrier(20)
    failures: list[BaseException] = []

    def post(batch: list[dict[str, Any]]) -> None:
        try:
            barrier.wait()
            ingest_runs(workspace=workspace, items=batch)
        except BaseException as exc:  # counted below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(items[i * 4 :],)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stored = Run.objects.filter(agent=agent, external_id__startswith="fb-").count()
    report("20 concurrent overlapping batches", 20, len(failures) + (100 - stored))
    assert failures == [] and stored == 100


@NEEDS_PG
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_racing_for_one_budget_never_overspend(agent):
    races = 3
    overspent = sum(race_for_one_budget(agent, budget=20_000)[1] > 20_000 for _ in range(races))
    report("two worker processes racing for one budget (PostgreSQL)", races, overspent)
    assert overspent == 0


@NEEDS_PG
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_racing_for_replay_slots_never_exceed_the_limit(agent):
    races = 3
    over = sum(race_for_replay_slots(agent, limit=5) > 5 for _ in range(races))
    report("two worker processes racing for 5 replay slots (PostgreSQL)", races, over)
    assert over == 0


@NEEDS_PG
@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_budget_and_slot_are_reclaimed(agent):
    tries, leaked = 3, 0
    for _ in range(tries):
        held, reclaimed = kill_a_holder(agent, estimate=500)
        counter = BudgetCounter.objects.get(agent=agent, cycle_id=0)
        # It held its chunk (at least the call's 500 tokens) and the slot; all of it came back.
        lost = held[0] < 500 or held[2] != 1 or reclaimed != 1
        leaked += lost or (counter.reserved, counter.slots) != (0, 0)
    report("worker killed holding budget and a replay slot, reclaimed by beat", tries, leaked)
    assert leaked == 0
