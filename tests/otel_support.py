"""Real OpenTelemetry spans from the real `anthropic` SDK, for the OTLP receiver's tests and bench.

`provider_exporting_to(url, key)` is an SDK TracerProvider whose OTLP/HTTP exporter (protobuf,
gzip) posts to a live Reverie; `support_conversation` drives an agent loop through the SDK
against the loopback fake Messages API (tests/fake_anthropic.py), with tool calls, a repeated
tool-call id and two user turns, inside one parent span so the calls share a trace.
"""

from typing import Any

import anthropic
import httpx2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from tests.fake_anthropic import FakeAnthropic, text, tool_use

SYSTEM = "You are the Northwind support agent. Look orders up before answering."
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order by id",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    }
]


def provider(exporter: SpanExporter, **resource: Any) -> TracerProvider:
    tracer_provider = TracerProvider(resource=Resource.create(resource))
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def otlp_exporter(base_url: str, api_key: str) -> OTLPSpanExporter:
    return OTLPSpanExporter(
        endpoint=f"{base_url}/api/otel/v1/traces",
        headers={"Authorization": f"Bearer {api_key}"},
        compression=Compression.Gzip,
        timeout=10,
    )


def anthropic_client(
    fake: FakeAnthropic, tracer_provider: TracerProvider, *, content: bool = True, **options: Any
) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-test-fake",
        base_url=fake.url,
        max_retries=0,
        http_client=httpx2.Client(),
        open_telemetry={
            "tracer_provider": tracer_provider,
            "traces": {"content_mode": "content" if content else "metadata_only"},
            **options,
        },
    )


def support_conversation(
    client: anthropic.Anthropic, fake: FakeAnthropic, tracer_provider: TracerProvider
) -> list[dict[str, Any]]:
    """Two user turns, two tool calls sharing one id; returns the transcript the app kept."""
    fake.queue(
        FakeAnthropic.message(
            [text("Let me look that up."), tool_use("lookup_order", {"order_id": "A-17"})],
            usage={"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 100},
        ),
        FakeAnthropic.message([text("Order A-17 shipped on Monday.")]),
        FakeAnthropic.message([tool_use("lookup_order", {"order_id": "B-2"})]),  # same id again
        FakeAnthropic.message([text("Order B-2 is still packing.")]),
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Where is order A-17?"}]
    results = iter(["shipped 2026-11-30", ""])  # a long-ish result, then an empty one
    tracer = tracer_provider.get_tracer("northwind.support")
    with tracer.start_as_current_span("support conversation"):
        for turn in ("Where is order A-17?", "And order B-2?"):
            if turn != messages[0]["content"]:
                messages.append({"role": "user", "content": turn})
            while True:
                reply = client.messages.create(
                    model="claude-sonnet-5-5",
                    max_tokens=512,
                    system=SYSTEM,
                    tools=TOOLS,
                    messages=messages,
                )
                messages.append(
                    {"role": "assistant", "content": [b.model_dump() for b in reply.content]}
                )
                calls = [b for b in reply.content if b.type == "tool_use"]
                if not calls:
                    break
                messages.append(
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": c.id, "content": next(results)}
                            for c in calls
                        ],
                    }
                )
    return messages
