"""The local model's adapter without the model: Messages ↔ llama.cpp translation, and the HTTP
adapter driven by the official SDK over a canned llama.cpp backend (its answers are the shapes
xllamacpp's server returns, recorded from SmolLM2-135M-Instruct)."""

import json
import os
from typing import Any

import anthropic
import pytest

from dreams.llm.local import translate
from dreams.llm.local.server import Adapter, serve

LOOKUP = {
    "name": "lookup_order",
    "description": "Look up an order",
    "input_schema": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


def chat_response(content: str, *, finish: str = "stop", prompt: int = 30, completion: int = 7):
    """A llama.cpp /v1/chat/completions answer, as xllamacpp returns it."""
    return {
        "choices": [
            {
                "finish_reason": finish,
                "index": 0,
                "message": {"role": "assistant", "content": content},
            }
        ],
        "model": "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "object": "chat.completion",
        "usage": {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": 37},
        "id": "chatcmpl-1",
    }


def chunk(content: str | None = None, finish: str | None = None, usage: Any = None):
    delta = {} if content is None else {"content": content}
    out: dict[str, Any] = {
        "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
        "object": "chat.completion.chunk",
    }
    if usage:
        out["usage"] = usage
    return out


# -- request translation ---------------------------------------------------------------------


def test_a_forced_tool_is_decoded_under_its_input_schema_and_max_tokens_is_capped():
    chat, plan = translate.to_chat_request(
        {
            "model": "claude-sonnet-5-5",
            "max_tokens": 4096,
            "system": [
                {"type": "text", "text": "Be exact.", "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [LOOKUP],
            "tool_choice": {"type": "tool", "name": "lookup_order"},
            "messages": [{"role": "user", "content": "Where is A17?"}],
        },
        max_tokens_cap=256,
    )

    assert plan.mode == translate.FORCED_TOOL and plan.tool_name == "lookup_order"
    assert chat["json_schema"] == LOOKUP["input_schema"]
    assert chat["max_tokens"] == 256
    assert chat["messages"][0]["role"] == "system"
    assert chat["messages"][0]["content"].startswith("Be exact.")
    assert "lookup_order" in chat["messages"][0]["content"]
    assert chat["messages"][1] == {"role": "user", "content": "Where is A17?"}


def test_tool_use_and_tool_result_turns_are_rendered_as_text_for_the_model():
    chat, plan = translate.to_chat_request(
        {
            "model": "m",
            "max_tokens": 50,
            "tools": [LOOKUP],
            "messages": [
                {"role": "user", "content": "Where is A17?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me look."},
                        {
                            "type": "tool_use",
                            "id": "tu_1",
                            "name": "lookup_order",
                            "input": {"order_id": "A17"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu_1",
                            "content": [{"type": "text", "text": "shipped"}],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu_2",
                            "is_error": True,
                            "content": "timeout",
                        },
                    ],
                },
            ],
        }
    )

    assert plan.mode == translate.TOOL_CHOICE
    assistant, results = chat["messages"][2]["content"], chat["messages"][3]["content"]
    assert assistant == (
        'Let me look.\n[called tool lookup_order (id tu_1) with {"order_id": "A17"}]'
    )
    assert "[result of tool call tu_1: shipped]" in results
    assert "[error from tool call tu_2: timeout]" in results


def test_auto_tool_choice_allows_text_or_a_call_and_any_requires_a_call():
    body = {
        "model": "m",
        "max_tokens": 50,
        "tools": [LOOKUP],
        "messages": [{"role": "user", "content": "hi"}],
    }
    auto, _ = translate.to_chat_request(body)
    anyone, _ = translate.to_chat_request({**body, "tool_choice": {"type": "any"}})
    none, plan = translate.to_chat_request({**body, "tool_choice": {"type": "none"}})

    kinds = [o["properties"]["type"]["const"] for o in auto["json_schema"]["anyOf"]]
    assert kinds == ["text", "tool_use"]
    assert anyone["json_schema"]["properties"]["name"] == {"const": "lookup_order"}
    assert anyone["json_schema"]["properties"]["input"] == LOOKUP["input_schema"]
    assert "json_schema" not in none and plan.mode == translate.TEXT


def test_structured_output_constrains_the_text_answer():
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    chat, plan = translate.to_chat_request(
        {
            "model": "m",
            "max_tokens": 50,
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
            "messages": [{"role": "user", "content": "Is water wet?"}],
            "stop_sequences": ["END"],
            "temperature": 0.2,
        }
    )

    assert plan.mode == translate.JSON_OUTPUT and chat["json_schema"] == schema
    assert chat["stop"] == ["END"] and chat["temperature"] == 0.2
    # Schema-constrained answers sample with DRY (SmolLM2 looped in a draft's rationale until
    # max_tokens without it); plain text does not.
    assert chat["dry_multiplier"] > 0
    text_chat, _ = translate.to_chat_request(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert "dry_multiplier" not in text_chat


@pytest.mark.parametrize(
    "body, message",
    [
        ({"max_tokens": 5, "messages": []}, "at least one message"),
        ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {
                "max_tokens": 5,
                "tools": [LOOKUP],
                "tool_choice": {"type": "tool", "name": "nope"},
                "messages": [{"role": "user", "content": "x"}],
            },
            "no tool named 'nope'",
        ),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "unknown role"),
    ],
)
def test_requests_the_adapter_cannot_serve_are_refused(body, message):
    with pytest.raises(translate.RequestInvalid, match=message):
        translate.to_chat_request(body)


# -- response translation --------------------------------------------------------------------


def test_a_forced_tool_answer_becomes_a_tool_use_block():
    _, plan = translate.to_chat_request(
        {
            "model": "claude-sonnet-5-5",
            "max_tokens": 50,
            "tools": [LOOKUP],
            "tool_choice": {"type": "tool", "name": "lookup_order"},
            "messages": [{"role": "user", "content": "A17?"}],
        }
    )
    message = translate.to_message(chat_response('{\n  "order_id": "A17"\n}'), plan)

    (block,) = message["content"]
    assert block["type"] == "tool_use" and block["name"] == "lookup_order"
    assert block["input"] == {"order_id": "A17"} and block["id"].startswith("toolu_local_")
    assert message["stop_reason"] == "tool_use"
    assert message["model"] == "claude-sonnet-5-5"
    assert message["usage"] == {
        "input_tokens": 30,
        "output_tokens": 7,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_an_answer_cut_off_at_max_tokens_comes_back_as_text_never_as_an_invented_call():
    _, plan = translate.to_chat_request(
        {
            "model": "m",
            "max_tokens": 8,
            "tools": [LOOKUP],
            "tool_choice": {"type": "tool", "name": "lookup_order"},
            "messages": [{"role": "user", "content": "A17?"}],
        }
    )
    message = translate.to_message(chat_response('{"order_id": "A1', finish="length"), plan)

    assert message["content"] == [{"type": "text", "text": '{"order_id": "A1'}]
    assert message["stop_reason"] == "max_tokens"


def test_a_tool_choice_answer_is_text_or_a_call_of_a_known_tool():
    _, plan = translate.to_chat_request(
        {
            "model": "m",
            "max_tokens": 50,
            "tools": [LOOKUP],
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    said = translate.to_message(chat_response('{"type": "text", "text": "Hello!"}'), plan)
    called = translate.to_message(
        chat_response('{"type": "tool_use", "name": "lookup_order", "input": {"order_id": "B2"}}'),
        plan,
    )
    unknown = translate.to_message(
        chat_response('{"type": "tool_use", "name": "rm_rf", "input": {}}'), plan
    )

    assert said["content"] == [{"type": "text", "text": "Hello!"}]
    assert said["stop_reason"] == "end_turn"
    assert called["content"][0]["input"] == {"order_id": "B2"}
    assert called["stop_reason"] == "tool_use"
    assert unknown["content"][0]["type"] == "text"  # never a call of a tool it was not given


def test_a_text_stream_becomes_messages_stream_events():
    plan = translate.Plan(mode=translate.TEXT, model="m")
    stream = translate.TextStream(plan)
    events = [
        *stream.feed(chunk()),
        *stream.feed(chunk("Hel")),
        *stream.feed(chunk("lo")),
        *stream.feed(chunk(finish="length")),
        *stream.feed({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}}),
        *stream.end(),
    ]

    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert (
        "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == "Hello"
    )
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"] == {"input_tokens": 12, "output_tokens": 2}
    assert translate.sse(events[-1]) == b'event: message_stop\ndata: {"type": "message_stop"}\n\n'


# -- the adapter over HTTP, driven by the SDK ------------------------------------------------


class CannedLlama:
    """A llama.cpp backend that answers from a script and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self.stream_chunks: list[dict[str, Any]] = []

    def chat(self, request: dict[str, Any], on_chunk: Any = None) -> dict[str, Any] | None:
        self.requests.append(request)
        if on_chunk is not None:
            for item in self.stream_chunks:
                on_chunk(json.dumps(item))  # xllamacpp may hand chunks over as JSON text
            return None
        return self.answers.pop(0)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def adapter_port() -> int:
    """A port in this helper's range (18900–18999), one per xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 18960 + int(worker.removeprefix("gw") or 0)


@pytest.fixture
def llama() -> Any:
    backend = CannedLlama()
    server = serve(Adapter(backend, max_tokens_cap=128), port=adapter_port())
    client = anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{adapter_port()}", api_key="local", max_retries=0, timeout=10
    )
    yield backend, client
    client.close()
    server.shutdown()
    server.server_close()


def test_the_sdk_gets_text_tool_calls_and_tool_result_follow_ups(llama):
    backend, client = llama
    backend.answers = [
        chat_response('{"order_id": "A17"}'),
        chat_response('{"type": "text", "text": "It shipped."}'),
    ]

    first = client.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=4000,
        tools=[LOOKUP],
        tool_choice={"type": "tool", "name": "lookup_order"},
        messages=[{"role": "user", "content": "Where is A17?"}],
    )
    (call,) = first.content
    second = client.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=100,
        tools=[LOOKUP],
        messages=[
            {"role": "user", "content": "Where is A17?"},
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "shipped"}],
            },
        ],
    )

    assert call.type == "tool_use" and call.input == {"order_id": "A17"}
    assert first.stop_reason == "tool_use" and first.usage.output_tokens == 7
    assert backend.requests[0]["max_tokens"] == 128  # the adapter's cap
    assert (
        f"[result of tool call {call.id}: shipped]"
        in backend.requests[1]["messages"][-1]["content"]
    )
    assert second.content[0].text == "It shipped." and second.stop_reason == "end_turn"


def test_the_sdk_streams_text_and_tool_calls(llama):
    backend, client = llama
    backend.stream_chunks = [
        chunk(),
        chunk("One"),
        chunk(", two"),
        chunk(finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
    ]
    with client.messages.stream(
        model="m", max_tokens=20, messages=[{"role": "user", "content": "Count"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    backend.answers = [chat_response('{"order_id": "C3"}')]
    with client.messages.stream(
        model="m",
        max_tokens=20,
        tools=[LOOKUP],
        tool_choice={"type": "tool", "name": "lookup_order"},
        messages=[{"role": "user", "content": "C3?"}],
    ) as stream:
        called = stream.get_final_message()

    assert pieces == ["One", ", two"]
    assert final.content[0].text == "One, two" and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 9 and final.usage.output_tokens == 2
    assert backend.requests[0]["stream"] is True
    assert called.content[0].type == "tool_use" and called.content[0].input == {"order_id": "C3"}


def test_the_sdk_counts_tokens_and_gets_a_400_for_a_request_the_adapter_refuses(llama):
    _, client = llama

    counted = client.messages.count_tokens(
        model="m", system="two words", messages=[{"role": "user", "content": "three more words"}]
    )
    with pytest.raises(anthropic.BadRequestError, match="no tool named"):
        client.messages.create(
            model="m",
            max_tokens=5,
            tools=[LOOKUP],
            tool_choice={"type": "tool", "name": "nope"},
            messages=[{"role": "user", "content": "x"}],
        )

    assert counted.input_tokens == 5
