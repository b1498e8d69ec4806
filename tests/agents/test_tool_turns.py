"""Transcripts the Messages API would refuse are refused at ingest, naming the field; valid
recordings (cut at a step limit, ids reused across turns, OpenAI form) stay accepted."""

import json
from typing import Any

import pytest

from agents.models import Run

pytestmark = pytest.mark.django_db


def tool_use(id_: str, name: str = "lookup_order") -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": {"id": 42}}


def tool_result(id_: str, content: str = "shipped") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id_, "content": content}


def post(api: Any, messages: list[dict[str, Any]], **extra: Any) -> Any:
    body = {"agent": "support", "external_id": "r1", "status": "failure", "messages": messages}
    body.update(extra)
    return api.post("/api/v1/runs", json.dumps(body), content_type="application/json")


def fields_of(response: Any) -> list[str]:
    return list(response.json()["error"]["fields"])


def test_duplicate_tool_use_ids_in_one_assistant_message_are_a_400(api, agent):
    response = post(
        api,
        [
            {"role": "user", "content": "Where are orders 42 and 43?"},
            {"role": "assistant", "content": [tool_use("tu_1"), tool_use("tu_1")]},
            {"role": "user", "content": [tool_result("tu_1"), tool_result("tu_1")]},
        ],
    )

    assert response.status_code == 400, response.content
    assert fields_of(response) == ["messages[1].content[1].id"]
    assert Run.objects.count() == 0


def test_a_tool_use_whose_next_message_lacks_its_result_is_a_400(api, agent):
    response = post(
        api,
        [
            {"role": "user", "content": "Where is order 42?"},
            {"role": "assistant", "content": [tool_use("tu_1"), tool_use("tu_2")]},
            {"role": "user", "content": [tool_result("tu_1")]},
            {"role": "assistant", "content": "It has shipped."},
        ],
    )

    assert response.status_code == 400, response.content
    assert fields_of(response) == ["messages[1].content[1]"]
    assert "tu_2" in response.json()["error"]["message"]


def test_a_tool_use_followed_by_plain_user_text_is_a_400(api, agent):
    response = post(
        api,
        [
            {"role": "user", "content": "Where is order 42?"},
            {"role": "assistant", "content": [tool_use("tu_1")]},
            {"role": "user", "content": "Hello?"},
        ],
    )

    assert response.status_code == 400
    assert fields_of(response) == ["messages[1].content[0]"]


def test_a_run_cut_at_a_step_limit_on_a_tool_use_is_accepted(api, agent):
    response = post(
        api,
        [
            {"role": "user", "content": "Where is order 42?"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Checking."}, tool_use("t")],
            },
        ],
    )

    assert response.status_code == 201, response.content


def test_tool_use_ids_repeated_across_turns_are_accepted(api, agent):
    response = post(
        api,
        [
            {"role": "user", "content": "Where are orders 42 and 43?"},
            {"role": "assistant", "content": [tool_use("call_0")]},
            {"role": "user", "content": [tool_result("call_0", "42 shipped")]},
            {"role": "assistant", "content": [tool_use("call_0")]},
            {"role": "user", "content": [tool_result("call_0", "")]},
            {"role": "assistant", "content": "Both have shipped."},
        ],
    )

    assert response.status_code == 201, response.content


def test_an_openai_tool_call_without_its_tool_message_is_a_400(api, agent):
    response = post(
        api,
        [
            {"role": "user", "content": "Where is order 42?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "user", "content": "Still there?"},
        ],
    )

    assert response.status_code == 400
    assert fields_of(response) == ["messages[1].content[0]"]
