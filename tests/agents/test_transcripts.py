"""Importers: Anthropic request/response exchanges and OpenAI chat transcripts round-trip losslessly."""

import copy
import json
from typing import Any

import pytest

from agents.models import Run
from agents.transcripts import (
    TranscriptError,
    iter_tool_calls,
    to_anthropic_exchange,
    to_canonical,
    to_openai,
)

SYSTEM = "You are the refunds desk. Verify the order before refunding."
TOOLS_ANTHROPIC = [
    {
        "name": "lookup_order",
        "description": "Look up an order.",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    },
    {
        "name": "issue_refund",
        "description": "Refund an order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
        },
    },
]


def openai_fixture() -> dict[str, Any]:
    """A chat-completions transcript with parallel tool calls, tool messages and unicode."""
    return {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Refund order A-17 please — the tent leaks ☔"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id": "A-17"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {
                            "name": "issue_refund",
                            "arguments": '{"order_id": "A-17", "amount": 129.5, "items": [1, 2]}',
                        },
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "delivered"}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "refund r-9 issued"},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "Done: refund r-9 for $129.50 is on its way."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t["description"],
                    "parameters": t["input_schema"],
                },
            }
            for t in TOOLS_ANTHROPIC
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 80,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
    }


def exchange_fixture() -> dict[str, Any]:
    """Two Messages API calls of one run: the second request carries the whole history."""
    first_request = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "tools": TOOLS_ANTHROPIC,
        "messages": [{"role": "user", "content": "Refund order A-17 please"}],
    }
    first_response = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": [
            {"type": "thinking", "thinking": "Check the order first.", "signature": "sig"},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "lookup_order",
                "input": {"order_id": "A-17"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 500, "output_tokens": 40, "cache_creation_input_tokens": 300},
    }
    second_request = copy.deepcopy(first_request)
    second_request["messages"] += [
        {"role": "assistant", "content": first_response["content"]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": '{"status": "delivered"}'}],
                }
            ],
        },
    ]
    second_response = {
        "id": "msg_2",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": [{"type": "text", "text": "Your order A-17 is eligible; refund issued."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 600, "output_tokens": 30, "cache_read_input_tokens": 300},
    }
    return {
        "exchanges": [
            {"request": first_request, "response": first_response},
            {"request": second_request, "response": second_response},
        ]
    }


def calls_of(canonical: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], Any]]:
    return [
        (c["id"], c["name"], c["input"], c["result"])
        for c in iter_tool_calls(canonical["messages"])
    ]


def test_openai_transcript_becomes_anthropic_blocks_with_linked_tool_calls():
    canonical = to_canonical(openai_fixture())

    assert canonical["format"] == "openai"
    assert canonical["system"] == SYSTEM
    assert [m["role"] for m in canonical["messages"]] == ["user", "assistant", "user", "assistant"]
    assert calls_of(canonical) == [
        ("call_1", "lookup_order", {"order_id": "A-17"}, '{"status": "delivered"}'),
        (
            "call_2",
            "issue_refund",
            {"order_id": "A-17", "amount": 129.5, "items": [1, 2]},
            "refund r-9 issued",
        ),
    ]
    # The user's text after the tool results joins the same user turn, after them.
    assert [b["type"] for b in canonical["messages"][2]["content"]] == [
        "tool_result",
        "tool_result",
        "text",
    ]
    assert canonical["tools"] == TOOLS_ANTHROPIC
    assert canonical["usage"] == {
        "input_tokens": 200,
        "cache_read_input_tokens": 1000,
        "output_tokens": 80,
    }


def test_openai_round_trip_is_lossless_for_text_tools_arguments_and_results():
    original = openai_fixture()
    exported = to_openai(to_canonical(original))

    def comparable(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            m = dict(m)
            for call in m.get("tool_calls", []):
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
            out.append(m)
        return out

    assert comparable(exported["messages"]) == comparable(original["messages"])
    assert exported["tools"] == original["tools"]
    # And back again: the canonical form is a fixed point.
    assert to_canonical(exported)["messages"] == to_canonical(original)["messages"]


def test_anthropic_exchanges_become_one_run_with_summed_usage():
    canonical = to_canonical(exchange_fixture())

    assert canonical["format"] == "anthropic_exchange"
    assert canonical["system"] == SYSTEM
    assert canonical["model"] == "claude-sonnet-5-5"
    assert [m["role"] for m in canonical["messages"]] == ["user", "assistant", "user", "assistant"]
    assert canonical["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "Check the order first.",
        "signature": "sig",
    }
    assert calls_of(canonical) == [
        (
            "toolu_1",
            "lookup_order",
            {"order_id": "A-17"},
            [{"type": "text", "text": '{"status": "delivered"}'}],
        )
    ]
    assert canonical["usage"] == {
        "input_tokens": 1100,
        "output_tokens": 70,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 300,
    }
    assert "cache_control" not in json.dumps(canonical)


def test_anthropic_exchange_round_trip_is_lossless():
    canonical = to_canonical(exchange_fixture())
    exported = to_anthropic_exchange(canonical)
    again = to_canonical(exported)

    assert again["messages"] == canonical["messages"]
    assert again["system"] == canonical["system"]
    assert again["tools"] == canonical["tools"]
    assert again["model"] == canonical["model"]
    assert exported["request"]["messages"] == canonical["messages"][:-1]
    assert exported["response"]["content"] == canonical["messages"][-1]["content"]


def test_anthropic_exchange_to_openai_keeps_tool_calls_and_results():
    exported = to_openai(to_canonical(exchange_fixture()))

    assert exported["messages"][0] == {"role": "system", "content": SYSTEM}
    call = exported["messages"][2]["tool_calls"][0]
    assert call["id"] == "toolu_1"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "A-17"}
    assert exported["messages"][3] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": '{"status": "delivered"}',
    }


@pytest.mark.django_db
@pytest.mark.parametrize("fixture", [openai_fixture, exchange_fixture])
def test_both_formats_are_stored_through_the_api(api, agent, fixture):
    payload = {**fixture(), "agent": "support", "external_id": fixture.__name__}
    response = api.post("/api/v1/runs", payload, format="json")

    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    canonical = to_canonical(fixture())
    assert run.messages == canonical["messages"]
    assert run.system == SYSTEM
    assert run.tools == TOOLS_ANTHROPIC
    assert run.source_format == canonical["format"]
    assert run.input_tokens == canonical["usage"]["input_tokens"]
    assert run.step_count == 2


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "system", "content": "s"}], "usage": {"prompt_tokens": "many"}},
            "usage.prompt_tokens",
        ),
        ({"request": {"messages": []}, "response": {"content": "hi"}}, "response.content"),
        ({"exchanges": []}, "exchanges"),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": []}, "messages"),
        ({"request": {"messages": 5}, "response": {"content": []}}, "request.messages"),
        ({"messages": [{"role": "assistant", "tool_calls": 1.5}]}, "messages[0].tool_calls"),
        ({"messages": [{"role": "system", "content": "s"}], "tools": True}, "tools"),
        (
            {"messages": [{"role": "user", "content": [{"type": []}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_importer_errors_name_the_offending_field(item, path):
    with pytest.raises(TranscriptError) as caught:
        to_canonical(item)

    assert caught.value.path == path
