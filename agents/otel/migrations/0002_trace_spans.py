"""One buffer row per trace instead of per span: TraceSpans replaces CapturedSpan (data kept)."""

from collections import defaultdict

import django.db.models.deletion
from django.db import migrations, models


def spans_to_traces(apps, schema_editor):
    CapturedSpan = apps.get_model("otel", "CapturedSpan")
    TraceSpans = apps.get_model("otel", "TraceSpans")
    grouped = defaultdict(list)
    for span in CapturedSpan.objects.order_by("id").iterator():
        grouped[(span.captured_trace_id, span.agent_id, span.trace_id)].append(span)
    rows = []
    for (trace_pk, agent_id, trace_id), spans in grouped.items():
        rows.append(
            TraceSpans(
                captured_trace_id=trace_pk,
                agent_id=agent_id,
                trace_id=trace_id,
                span_ids=" ".join(s.span_id for s in spans),
                span_count=len(spans),
                data="[" + ",".join(s.data for s in spans) + "]",
                received_at=max(s.received_at for s in spans),
            )
        )
    TraceSpans.objects.bulk_create(rows, batch_size=500)


def traces_to_spans(apps, schema_editor):
    import json

    CapturedSpan = apps.get_model("otel", "CapturedSpan")
    TraceSpans = apps.get_model("otel", "TraceSpans")
    for row in TraceSpans.objects.iterator():
        CapturedSpan.objects.bulk_create(
            [
                CapturedSpan(
                    captured_trace_id=row.captured_trace_id,
                    agent_id=row.agent_id,
                    trace_id=row.trace_id,
                    span_id=span["span_id"],
                    data=json.dumps(span),
                    received_at=row.received_at,
                )
                for span in json.loads(row.data)
            ]
        )


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("otel", "0001_span_buffer"),
    ]

    operations = [
        migrations.CreateModel(
            name="TraceSpans",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("trace_id", models.CharField(max_length=32)),
                ("span_ids", models.TextField(help_text="the received span ids, space-separated")),
                ("span_count", models.PositiveIntegerField(default=0)),
                ("data", models.TextField()),
                ("received_at", models.DateTimeField()),
                ("agent", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="agents.agent")),
                ("captured_trace", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="trace_spans", to="otel.capturedtrace")),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("agent", "trace_id"), name="tracespans_unique_trace")
                ],
            },
        ),
        migrations.RunPython(spans_to_traces, traces_to_spans),
        migrations.DeleteModel(name="CapturedSpan"),
    ]
