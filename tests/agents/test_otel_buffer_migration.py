"""Migration otel 0002 keeps the spans buffered before it: one TraceSpans row per trace."""

import orjson
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

OLD = [("otel", "0001_span_buffer")]
NEW = [("otel", "0002_trace_spans")]


@pytest.mark.django_db(transaction=True)
def test_spans_buffered_one_row_each_become_one_row_per_trace(agent):
    executor = MigrationExecutor(connection)
    executor.migrate(OLD)
    old = executor.loader.project_state(OLD).apps
    now = timezone.now()
    trace = old.get_model("otel", "CapturedTrace").objects.create(
        agent_id=agent.pk, key="otel:conversation:c1", first_received_at=now, last_received_at=now
    )
    Span = old.get_model("otel", "CapturedSpan")
    for trace_id, span_id in [("t1", "a"), ("t1", "b"), ("t2", "c")]:
        Span.objects.create(
            captured_trace=trace,
            agent_id=agent.pk,
            trace_id=trace_id,
            span_id=span_id,
            data=orjson.dumps({"trace_id": trace_id, "span_id": span_id}).decode(),
            received_at=now,
        )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(NEW)

    new = executor.loader.project_state(NEW).apps
    rows = {r.trace_id: r for r in new.get_model("otel", "TraceSpans").objects.all()}
    assert set(rows) == {"t1", "t2"}
    assert rows["t1"].span_ids.split() == ["a", "b"] and rows["t1"].span_count == 2
    assert [s["span_id"] for s in orjson.loads(rows["t1"].data)] == ["a", "b"]
    assert rows["t2"].captured_trace_id == trace.pk
