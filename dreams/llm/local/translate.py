"""Messages API ↔ llama.cpp chat completions, as pure functions (no model, no Django).

A Messages request becomes one llama.cpp `/v1/chat/completions` request. Tool use and
structured output are decoded under a JSON schema (llama.cpp turns `json_schema` into a
grammar), because the small local models write no tool-call syntax of their own:

- forced tool (`tool_choice: {"type": "tool"}`): the answer *is* the tool's input, constrained
  by its `input_schema`;
- tools with `auto` / `any`: the answer is one of `{"type": "text", "text": …}` (auto only) or
  `{"type": "tool_use", "name": <tool>, "input": <its schema>}`;
- `output_config.format` (`json_schema`): the text answer is constrained by that schema.

The answer is translated back into a Messages response (or its stream events). An answer that
does not parse (cut off at max_tokens) comes back as text with its stop reason, never invented.
"""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

TEXT, FORCED_TOOL, TOOL_CHOICE, JSON_OUTPUT = "text", "forced_tool", "tool_choice", "json"
DRY_SAMPLING = {"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2}


class RequestInvalid(ValueError):
    """The Messages request cannot be served (answered as a 400 invalid_request_error)."""


@dataclass
class Plan:
    """How to read llama.cpp's answer back: the decoding mode and the tools by name."""

    mode: str
    model: str
    tool_name: str = ""
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)


def _text_of(content: Any) -> str:
    """Plain text of a tool_result's content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict):
            parts.append(f"[{block.get('type', 'block')} omitted]")
    return "\n".join(parts)


def _render_block(block: Any) -> str:
    if isinstance(block, str):
        return block
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_use":
        arguments = json.dumps(block.get("input", {}), sort_keys=True)
        return f"[called tool {block.get('name')} (id {block.get('id')}) with {arguments}]"
    if kind == "tool_result":
        label = "error from" if block.get("is_error") else "result of"
        return f"[{label} tool call {block.get('tool_use_id')}: {_text_of(block.get('content'))}]"
    if kind in ("thinking", "redacted_thinking"):
        return ""
    return f"[{kind} omitted]"


def _render_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part for part in (_render_block(b) for b in content or []) if part)


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(str(b.get("text", "")) for b in system or [] if isinstance(b, dict))


def _tool_lines(tools: list[dict[str, Any]]) -> str:
    lines = ["You can call these tools (answer with JSON only):"]
    for tool in tools:
        description = tool.get("description") or ""
        lines.append(
            f"- {tool['name']}: {description} Input schema: "
            f"{json.dumps(tool.get('input_schema', {}), sort_keys=True)}"
        )
    return "\n".join(lines)


def choice_schema(tools: list[dict[str, Any]], *, allow_text: bool) -> dict[str, Any]:
    """The schema of an answer that is either text (auto) or one call of one of `tools`."""
    options: list[dict[str, Any]] = []
    if allow_text:
        options.append(
            {
                "type": "object",
                "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                "required": ["type", "text"],
                "additionalProperties": False,
            }
        )
    for tool in tools:
        options.append(
            {
                "type": "object",
                "properties": {
                    "type": {"const": "tool_use"},
                    "name": {"const": tool["name"]},
                    "input": tool.get("input_schema") or {"type": "object"},
                },
                "required": ["type", "name", "input"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def to_chat_request(
    body: dict[str, Any], *, max_tokens_cap: int = 0, seed: int = 0
) -> tuple[dict[str, Any], Plan]:
    """The llama.cpp chat request for a Messages request body, and how to read its answer."""
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise RequestInvalid("messages: at least one message is required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestInvalid("max_tokens: a positive integer is required")
    if max_tokens_cap:
        max_tokens = min(max_tokens, max_tokens_cap)
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    choice = body.get("tool_choice") or {"type": "auto"}
    output_format = (body.get("output_config") or {}).get("format") or body.get("output_format")
    plan = Plan(mode=TEXT, model=str(body.get("model", "")), tools={t["name"]: t for t in tools})
    system = _system_text(body.get("system"))
    chat: dict[str, Any] = {"max_tokens": max_tokens, "seed": seed}
    if tools and choice.get("type") != "none":
        if choice.get("type") == "tool":
            name = choice.get("name")
            if name not in plan.tools:
                raise RequestInvalid(f"tool_choice: no tool named {name!r}")
            plan.mode, plan.tool_name = FORCED_TOOL, name
            chat["json_schema"] = plan.tools[name].get("input_schema") or {"type": "object"}
            instruction = (
                f"Answer by calling the tool {name}: write only its JSON input.\n"
                + _tool_lines([plan.tools[name]])
            )
        else:
            plan.mode = TOOL_CHOICE
            chat["json_schema"] = choice_schema(tools, allow_text=choice.get("type") == "auto")
            instruction = _tool_lines(tools) + (
                '\nAnswer {"type": "text", "text": ...} or '
                '{"type": "tool_use", "name": ..., "input": ...}.'
                if choice.get("type") == "auto"
                else '\nAnswer {"type": "tool_use", "name": ..., "input": ...}.'
            )
        system = f"{system}\n\n{instruction}" if system else instruction
    elif isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        plan.mode = JSON_OUTPUT
        chat["json_schema"] = output_format.get("schema") or {"type": "object"}
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for message in body["messages"]:
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise RequestInvalid(f"messages: unknown role {role!r}")
        messages.append({"role": role, "content": _render_content(message.get("content"))})
    chat["messages"] = messages
    if "json_schema" in chat:
        # Small models loop inside long JSON strings until max_tokens; DRY sampling breaks
        # the repetition (llama.cpp's `dry_*` options), the grammar still holds the shape.
        chat.update(DRY_SAMPLING)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    return chat, plan


def _new_id(prefix: str) -> str:
    return f"{prefix}_local_{uuid.uuid4().hex[:20]}"


def content_blocks(text: str, plan: Plan) -> list[dict[str, Any]]:
    """Messages content blocks for llama.cpp's answer text under `plan`."""
    if plan.mode == FORCED_TOOL:
        value = _parse(text)
        if isinstance(value, dict):
            return [
                {"type": "tool_use", "id": _new_id("toolu"), "name": plan.tool_name, "input": value}
            ]
    elif plan.mode == TOOL_CHOICE:
        value = _parse(text)
        if isinstance(value, dict) and value.get("type") == "text":
            return [{"type": "text", "text": str(value.get("text", ""))}]
        if (
            isinstance(value, dict)
            and value.get("name") in plan.tools
            and isinstance(value.get("input"), dict)
        ):
            return [
                {
                    "type": "tool_use",
                    "id": _new_id("toolu"),
                    "name": value["name"],
                    "input": value["input"],
                }
            ]
    return [{"type": "text", "text": text}]


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def stop_reason(finish_reason: str | None, blocks: list[dict[str, Any]]) -> str:
    if finish_reason == "length":
        return "max_tokens"
    if any(b["type"] == "tool_use" for b in blocks):
        return "tool_use"
    if finish_reason == "stop_sequence":
        return "stop_sequence"
    return "end_turn"


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, int]:
    chat_usage = chat_usage or {}
    return {
        "input_tokens": int(chat_usage.get("prompt_tokens") or 0),
        "output_tokens": int(chat_usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def to_message(chat_response: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The Messages response for llama.cpp's chat completion response."""
    if chat_response.get("error"):
        raise RuntimeError(str(chat_response["error"]))
    choice = (chat_response.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    blocks = content_blocks(text, plan)
    return {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": blocks,
        "stop_reason": stop_reason(choice.get("finish_reason"), blocks),
        "stop_sequence": None,
        "usage": usage_of(chat_response.get("usage")),
    }


# -- streaming -----------------------------------------------------------------------------


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event as the Messages API frames it."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def message_start(plan: Plan, *, message_id: str = "", input_tokens: int = 0) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": message_id or _new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        },
    }


def message_end(stop: str, usage: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
            },
        },
        {"type": "message_stop"},
    ]


def message_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream events of a whole message (tool calls and JSON answers stream this way)."""
    plan = Plan(mode=TEXT, model=message["model"])
    events = [message_start(plan, message_id=message["id"])]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": json.dumps(block["input"]),
                    },
                }
            )
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": block["text"]},
                }
            )
        events.append({"type": "content_block_stop", "index": index})
    return events + message_end(message["stop_reason"], message["usage"])


class TextStream:
    """Turns llama.cpp's streamed chunks of a plain-text answer into Messages stream events."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.started = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.output_chunks = 0

    def begin(self) -> list[dict[str, Any]]:
        self.started = True
        return [
            message_start(self.plan),
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events = [] if self.started else self.begin()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            text = (choice.get("delta") or {}).get("content")
            if text:
                self.output_chunks += 1
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": text},
                    }
                )
        return events

    def end(self) -> list[dict[str, Any]]:
        events = [] if self.started else self.begin()
        usage = usage_of(self.usage)
        if not usage["output_tokens"]:
            usage["output_tokens"] = self.output_chunks  # llama.cpp streams one token a chunk
        stop = "max_tokens" if self.finish_reason == "length" else "end_turn"
        return [*events, {"type": "content_block_stop", "index": 0}, *message_end(stop, usage)]


def count_text(body: dict[str, Any]) -> str:
    """The text whose tokens `count_tokens` counts: system, tools and every message."""
    parts = [_system_text(body.get("system"))]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    if tools:
        parts.append(_tool_lines(tools))
    parts += [_render_content(m.get("content")) for m in body.get("messages") or []]
    return "\n".join(p for p in parts if p)
