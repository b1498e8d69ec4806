"""TEMPORARY stand-in for the model gateway (dreams/llm.py) until the replay branch is merged.

Used only when `dreams.llm` cannot be imported. It goes through the real `anthropic` SDK over an
httpx2 MockTransport whose handler answers forced-tool requests with the simulated dreaming
handlers, and records a ModelCall per call like the gateway contract says. Delete at merge.
"""

import json
from typing import Any

import anthropic
import httpx2

from agents.pricing import cost_of
from dreams.models import ModelCall
from dreams.simulated.dreaming import HANDLERS


def _handler(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    tool_name = body["tool_choice"]["name"]
    tool_input = HANDLERS[tool_name](body)
    return httpx2.Response(
        200,
        json={
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [
                {"type": "tool_use", "id": "toolu_stub", "name": tool_name, "input": tool_input}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": len(json.dumps(body)) // 4,
                "output_tokens": len(json.dumps(tool_input)) // 4,
            },
        },
    )


class StubGateway:
    def __init__(self) -> None:
        self.client = anthropic.Anthropic(
            api_key="sk-stub",
            base_url="http://simulated.local",
            http_client=httpx2.Client(transport=httpx2.MockTransport(_handler)),
            max_retries=0,
            _strict_response_validation=True,
        )
        self.calls = 0

    def structured(
        self,
        *,
        agent: Any,
        purpose: str,
        tool_name: str,
        input_schema: dict[str, Any],
        system: str,
        messages: list[dict[str, Any]],
        cycle: Any = None,
        model: str = "claude-sonnet-5-5",
        max_tokens: int = 1024,
        **_: Any,
    ) -> dict[str, Any]:
        message = self.client.messages.create(
            model=model,
            max_tokens=max_tokens,
            system=system,
            messages=messages,
            tools=[{"name": tool_name, "description": tool_name, "input_schema": input_schema}],
            tool_choice={"type": "tool", "name": tool_name},
        )
        usage = {
            "input_tokens": message.usage.input_tokens,
            "output_tokens": message.usage.output_tokens,
        }
        ModelCall.objects.create(
            agent=agent,
            purpose=purpose,
            cycle=cycle,
            model=model,
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cost_usd=cost_of(model, usage),
        )
        self.calls += 1
        block = next(b for b in message.content if b.type == "tool_use")
        return dict(block.input)
