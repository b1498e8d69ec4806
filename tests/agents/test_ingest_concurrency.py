"""Two requests racing with the same runs store each run once and agree on the ids."""

import threading
from typing import Any

import pytest
from django.db import connection

from agents.ingest import ingest_runs
from agents.models import Run
from tests.factories import simple_messages


@pytest.mark.django_db(transaction=True)  # each thread commits on its own connection
def test_racing_batches_with_the_same_runs_store_each_once(agent, workspace):
    items = [
        {"agent": "support", "external_id": f"race-{i}", "messages": simple_messages()}
        for i in range(300)
    ]
    barrier = threading.Barrier(3)
    outcomes: list[Any] = []

    def post(batch: list[dict[str, Any]]) -> None:
        try:
            barrier.wait()
            outcomes.append(ingest_runs(workspace=workspace, items=batch))
        except BaseException as exc:  # reported below
            outcomes.append(exc)
        finally:
            connection.close()

    # Overlapping batches in different orders: a deadlock would surface as an error here.
    batches = [items, list(reversed(items)), items[100:] + items[:100]]
    threads = [threading.Thread(target=post, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert Run.objects.filter(agent=agent).count() == 300
    ids_seen = [{r.external_id: r.id for r in result} for result in outcomes]
    assert ids_seen[0] == ids_seen[1] == ids_seen[2]
    assert sum(r.created for result in outcomes for r in result) == 300


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: SQLite serialises writers, so 20 concurrent batches never race",
)
@pytest.mark.django_db(transaction=True)
def test_twenty_overlapping_batches_at_once_never_exhaust_the_retry_loop(agent, workspace):
    """Ten rounds of 20 concurrent batches, each a staggered slice of one pool of keys."""
    failures: list[BaseException] = []
    for round_ in range(10):
        items = [
            {"agent": "support", "external_id": f"o{round_}-{i}", "messages": simple_messages()}
            for i in range(60)
        ]
        barrier = threading.Barrier(20)
        outcomes: list[Any] = []

        def post(
            batch: list[dict[str, Any]],
            outcomes: list[Any] = outcomes,
            barrier: threading.Barrier = barrier,
        ) -> None:
            try:
                barrier.wait()
                outcomes.append(ingest_runs(workspace=workspace, items=batch))
            except BaseException as exc:  # reported below
                outcomes.append(exc)
            finally:
                connection.close()

        # Batch i holds every key from 2i on: each batch overlaps every other one.
        batches = [items[2 * i :] for i in range(20)]
        threads = [threading.Thread(target=post, args=(b,)) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        failures += [o for o in outcomes if isinstance(o, BaseException)]
        stored = dict(
            Run.objects.filter(agent=agent, external_id__startswith=f"o{round_}-").values_list(
                "external_id", "id"
            )
        )
        assert len(stored) == 60
        answered = [r for o in outcomes if not isinstance(o, BaseException) for r in o]
        assert all(stored[r.external_id] == r.id for r in answered)
        if len(answered) == sum(len(b) for b in batches):
            assert sum(r.created for r in answered) == 60  # each key created by one batch

    assert failures == []
