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
