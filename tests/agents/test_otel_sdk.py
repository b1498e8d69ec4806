"""The real anthropic SDK's GenAI spans, exported by the real OpenTelemetry SDK to a live Reverie."""

import pytest

from agents.models import Run
from agents.otel.models import CapturedTrace
from tests.fake_anthropic import FakeAnthropic, text
from tests.otel_support import anthropic_client, otlp_exporter, provider, support_conversation


@pytest.fixture
def fake_anthropic():
    with FakeAnthropic() as fake:
        yield fake


pytestmark = pytest.mark.django_db(transaction=True)


def test_an_agent_loop_traced_by_the_sdk_becomes_one_run(
    live_server, agent, api_key, fake_anthropic
):
    tracer_provider = provider(
        otlp_exporter(live_server.url, api_key), **{"service.name": "support"}
    )
    client = anthropic_client(fake_anthropic, tracer_provider)

    transcript = support_conversation(client, fake_anthropic, tracer_provider)
    tracer_provider.force_flush()

    run = Run.objects.get(agent=agent)
    assert run.external_id.startswith("otel:trace:")
    assert run.source_format == "otel"
    assert run.system.startswith("You are the Northwind support agent")
    assert [m["role"] for m in run.messages] == [m["role"] for m in transcript]
    kinds = [[b["type"] for b in m["content"]] for m in run.messages]
    assert kinds[1] == ["text", "tool_use"] and kinds[2] == ["tool_result"]
    assert run.messages[2]["content"][0]["content"] == [
        {"type": "text", "text": "shipped 2026-11-30"}
    ]
    assert run.messages[-1]["content"][0]["text"] == "Order B-2 is still packing."
    assert run.step_count == 4
    # gen_ai.usage.input_tokens counts cached tokens; Reverie keeps them apart.
    assert (run.input_tokens, run.cache_read_tokens, run.output_tokens) == (10 * 3 + 120, 100, 45)
    assert run.model == "claude-sonnet-5-5"
    assert run.metadata["otel"]["content"] == "full"
    assert run.metadata["otel"]["chat_spans"] == 4


def test_spans_without_content_still_make_a_flagged_run(
    live_server, agent, api_key, fake_anthropic
):
    tracer_provider = provider(
        otlp_exporter(live_server.url, api_key), **{"service.name": "support"}
    )
    client = anthropic_client(fake_anthropic, tracer_provider, content=False)

    support_conversation(client, fake_anthropic, tracer_provider)
    tracer_provider.force_flush()

    run = Run.objects.get(agent=agent)
    assert run.messages == [] and run.step_count == 0
    assert run.metadata["otel"]["content"] == "missing"
    assert "otel:content-missing" in run.tags
    assert run.output_tokens == 45  # what is known is kept


def test_conversation_id_groups_separate_traces_into_one_run(
    live_server, agent, api_key, fake_anthropic
):
    tracer_provider = provider(
        otlp_exporter(live_server.url, api_key), **{"service.name": "support"}
    )
    client = anthropic_client(fake_anthropic, tracer_provider, conversation_id="ticket-981")
    fake_anthropic.queue(fake_anthropic.message([text("Hello.")]))
    fake_anthropic.queue(fake_anthropic.message([text("Bye.")]))

    first = [{"role": "user", "content": "hi"}]
    client.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=first)  # own trace
    second = [
        *first,
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "bye"},
    ]
    client.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=second)
    tracer_provider.force_flush()

    run = Run.objects.get(agent=agent)
    assert run.external_id == "otel:conversation:ticket-981"
    assert [m["content"][0]["text"] for m in run.messages] == ["hi", "Hello.", "bye", "Bye."]
    assert len(run.metadata["otel"]["trace_ids"]) == 2
    assert CapturedTrace.objects.get().trace_spans.count() == 2  # one row per trace


def test_a_streamed_call_is_captured(live_server, agent, api_key, fake_anthropic):
    tracer_provider = provider(
        otlp_exporter(live_server.url, api_key), **{"service.name": "support"}
    )
    client = anthropic_client(fake_anthropic, tracer_provider)
    fake_anthropic.queue(fake_anthropic.message([text("Streaming hello.")]))

    with client.messages.stream(
        model="claude-sonnet-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert stream.get_final_text() == "Streaming hello."
    tracer_provider.force_flush()

    run = Run.objects.get(agent=agent)
    assert run.messages[-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Streaming hello."}],
    }
