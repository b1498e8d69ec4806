"""GenAI semantic-convention spans → one run item for `agents.ingest.parse_run`.

Read from the conventions (gen-ai spans, `gen_ai.*` attributes) and from the spans the
`anthropic` SDK itself emits (`anthropic.messages.create`, `anthropic.messages.tool_runner`,
`anthropic.custom_tool_use <name>`): messages come from `gen_ai.input.messages` /
`gen_ai.output.messages` (JSON parts: text, reasoning, tool_call, tool_call_response), the
system prompt from `gen_ai.system_instructions`, and from the older per-message span events
(`gen_ai.user.message`, `gen_ai.choice`, …) when those attributes are absent. Usage is summed
over the chat spans (`gen_ai.usage.input_tokens` includes cached tokens, so they are taken out).
"""

import json
from datetime import UTC, datetime
from typing import Any

import orjson

AGENT_ATTRIBUTE = "reverie.agent"
VERSION_ATTRIBUTE = "reverie.config_version"
EXTERNAL_ID_ATTRIBUTE = "reverie.external_id"
USER_BRIEF_ATTRIBUTE = "reverie.user_brief"
CONVERSATION_ATTRIBUTE = "gen_ai.conversation.id"
CHAT_SPAN_NAMES = ("anthropic.messages.create",)
LEGACY_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
    "gen_ai.choice": "assistant",
}


def is_genai(span: dict[str, Any]) -> bool:
    """Whether a span is part of a GenAI operation (other spans of a trace are ignored)."""
    return span["name"].startswith("anthropic.") or any(
        key.startswith("gen_ai.") for key in span["attributes"]
    )


def operation(span: dict[str, Any]) -> str:
    """`chat`, `execute_tool`, `invoke_agent`, … from `gen_ai.operation.name` or the span name."""
    declared = span["attributes"].get("gen_ai.operation.name")
    if isinstance(declared, str) and declared:
        return declared
    name = span["name"]
    if name in CHAT_SPAN_NAMES or name.startswith(("chat ", "text_completion ")):
        return "chat"
    return name.split(" ", 1)[0]


def lookup(span: dict[str, Any], name: str) -> Any:
    """A span attribute, else the same attribute of its resource."""
    value = span["attributes"].get(name)
    return value if value is not None else span["resource"].get(name)


def agent_slug(span: dict[str, Any]) -> str | None:
    """`reverie.agent` on the span or its resource, else the resource's `service.name`."""
    slug = lookup(span, AGENT_ATTRIBUTE) or span["resource"].get("service.name")
    return slug if isinstance(slug, str) and slug else None


def group_key(span: dict[str, Any]) -> str | None:
    """What groups this span's run other than its trace: an explicit id, else a conversation id."""
    explicit = lookup(span, EXTERNAL_ID_ATTRIBUTE)
    if isinstance(explicit, str) and explicit:
        return explicit
    conversation = lookup(span, CONVERSATION_ATTRIBUTE)
    if isinstance(conversation, str) and conversation:
        return f"otel:conversation:{conversation}"
    return None


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


class _Flags:
    def __init__(self) -> None:
        self.dropped_parts: set[str] = set()
        self.orphan_results = 0
        self.discontinuous = False


def _tool_result_content(response: Any) -> Any:
    if isinstance(response, str):
        return response
    if isinstance(response, list):
        blocks = []
        for block in response:
            if isinstance(block, dict) and block.get("type") == "text":
                blocks.append({"type": "text", "text": str(block.get("text", ""))})
            elif isinstance(block, dict):
                blocks.append({"type": "text", "text": json.dumps(block, ensure_ascii=False)})
        return blocks
    if response is None:
        return ""
    return json.dumps(response, ensure_ascii=False)


def _arguments(value: Any) -> dict[str, Any]:
    parsed = _json(value) if isinstance(value, str) else value
    if isinstance(parsed, dict):
        return parsed
    return {} if parsed is None else {"value": parsed}


def _part_to_block(part: Any, flags: _Flags) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        flags.dropped_parts.add("invalid")
        return None
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("content") or "")}
    if kind == "reasoning":
        return {"type": "thinking", "thinking": str(part.get("content") or "")}
    if kind == "tool_call" and part.get("name"):
        return {
            "type": "tool_use",
            "id": str(part.get("id") or ""),
            "name": str(part["name"]),
            "input": _arguments(part.get("arguments")),
        }
    if kind == "tool_call_response":
        return {
            "type": "tool_result",
            "tool_use_id": str(part.get("id") or ""),
            "content": _tool_result_content(part.get("response")),
        }
    flags.dropped_parts.add(str(kind))
    return None


def _messages_from_parts(value: Any, flags: _Flags) -> tuple[list[dict[str, Any]], list[str]]:
    """Anthropic messages (and any system texts) from a `gen_ai.*.messages` JSON value."""
    messages: list[dict[str, Any]] = []
    system: list[str] = []
    for message in _json(value) or []:
        if not isinstance(message, dict):
            continue
        blocks = [
            b for b in map(lambda p: _part_to_block(p, flags), message.get("parts") or []) if b
        ]
        role = message.get("role")
        if role == "system":
            system += [b["text"] for b in blocks if b["type"] == "text"]
            continue
        if role == "tool":
            role = "user"
        if role not in ("user", "assistant") or not blocks:
            continue
        messages.append({"role": role, "content": blocks})
    return messages, system


def _messages_from_events(
    span: dict[str, Any], flags: _Flags
) -> tuple[list[dict], list[dict], list[str]]:
    """(input, output, system) from the older per-message span events."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    system: list[str] = []
    for event in span["events"]:
        role = LEGACY_EVENTS.get(event["name"])
        if role is None:
            continue
        body = dict(event["attributes"])
        body.update(_json(body.pop("gen_ai.event.content", None)) or {})
        if event["name"] == "gen_ai.choice":
            body = _json(body.get("message")) or body
        content = (
            _json(body.get("content"))
            if str(body.get("content", "")).startswith("[")
            else body.get("content")
        )
        blocks: list[dict[str, Any]] = []
        if isinstance(content, str) and content:
            blocks.append({"type": "text", "text": content})
        elif isinstance(content, list):
            blocks += [
                {"type": "text", "text": str(c.get("text", ""))}
                for c in content
                if isinstance(c, dict) and c.get("type") == "text"
            ]
        if role == "system":
            system += [b["text"] for b in blocks]
            continue
        if role == "tool":
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": str(body.get("id") or ""),
                    "content": blocks or "",
                }
            ]
            role = "user"
        for call in _json(body.get("tool_calls")) or []:
            function = call.get("function") or {} if isinstance(call, dict) else {}
            if function.get("name"):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or ""),
                        "name": str(function["name"]),
                        "input": _arguments(function.get("arguments")),
                    }
                )
        if blocks:
            target = outputs if event["name"] == "gen_ai.choice" else inputs
            target.append({"role": role, "content": blocks})
    return inputs, outputs, system


def _chat_content(
    span: dict[str, Any], flags: _Flags
) -> tuple[list[dict], list[dict], list[str]] | None:
    """(input, output, system) of one chat span, or None when the span carries no content."""
    sources = [span["attributes"]] + [e["attributes"] for e in span["events"]]
    for attrs in sources:
        if "gen_ai.input.messages" in attrs or "gen_ai.output.messages" in attrs:
            inputs, system = _messages_from_parts(attrs.get("gen_ai.input.messages"), flags)
            outputs, _ = _messages_from_parts(attrs.get("gen_ai.output.messages"), flags)
            instructions = _json(attrs.get("gen_ai.system_instructions"))
            if isinstance(instructions, list):
                system = [
                    str(p.get("content") or "")
                    for p in instructions
                    if isinstance(p, dict) and p.get("type") == "text"
                ] + system
            return inputs, outputs, system
    inputs, outputs, system = _messages_from_events(span, flags)
    if inputs or outputs or system:
        return inputs, outputs, system
    return None


def _assemble(
    conversation: list[dict], inputs: list[dict], outputs: list[dict], flags: _Flags
) -> list[dict]:
    """Extend the conversation with one call: its input usually repeats everything so far."""
    if inputs[: len(conversation)] == conversation:
        return inputs + outputs
    flags.discontinuous = True
    return conversation + inputs + outputs


def _pair_tools(messages: list[dict], flags: _Flags) -> list[dict]:
    """Drop tool results whose call was cut off (truncated content), so the transcript validates."""
    seen: set[str] = set()
    out = []
    for message in messages:
        blocks = []
        for block in message["content"]:
            if block["type"] == "tool_use":
                seen.add(block["id"])
            if block["type"] == "tool_result" and block["tool_use_id"] not in seen:
                flags.orphan_results += 1
                continue
            blocks.append(block)
        if blocks:
            out.append({"role": message["role"], "content": blocks})
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _tools(value: Any) -> list[dict[str, Any]]:
    tools = []
    for tool in _json(value) or []:
        if not isinstance(tool, dict):
            continue
        function = tool["function"] if isinstance(tool.get("function"), dict) else tool
        if isinstance(function.get("name"), str) and function["name"]:
            entry = {"name": function["name"]}
            if function.get("description"):
                entry["description"] = str(function["description"])
            schema = function.get("parameters") or function.get("input_schema")
            entry["input_schema"] = schema if isinstance(schema, dict) else {"type": "object"}
            tools.append(entry)
    return tools


def build_run(*, agent: str, external_id: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """The run item (POST /runs shape) that a group's GenAI spans describe, with what is known.

    `messages` may be empty (spans sent without content): the caller stores the run flagged.
    """
    spans = sorted(spans, key=lambda s: (s["start_ns"], s["end_ns"]))
    flags = _Flags()
    conversation: list[dict[str, Any]] = []
    system: list[str] = []
    usage = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    model = ""
    tools: list[dict[str, Any]] = []
    errors: list[str] = []
    tool_runs: list[dict[str, Any]] = []
    chat_spans = content_spans = 0
    truncated = False
    version: Any = None
    brief: Any = None
    for span in spans:
        attrs = span["attributes"]
        kind = operation(span)
        version = version if version is not None else lookup(span, VERSION_ATTRIBUTE)
        brief = brief or lookup(span, USER_BRIEF_ATTRIBUTE)
        truncated = truncated or attrs.get("anthropic.content.truncated") is True
        if span["status"]["code"] == "error" and kind != "execute_tool":
            reason = attrs.get("error.type") or span["status"]["message"] or "error"
            errors.append(f"{span['name']}: {reason}")
        if kind == "execute_tool":
            tool_runs.append(
                {
                    "name": attrs.get("gen_ai.tool.name", ""),
                    "call_id": attrs.get("gen_ai.tool.call.id", ""),
                    "status": span["status"]["code"],
                    "duration_ms": round((span["end_ns"] - span["start_ns"]) / 1e6, 3),
                }
            )
            continue
        if kind != "chat":
            continue
        chat_spans += 1
        model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model") or model
        tools = _tools(attrs.get("gen_ai.tool.definitions")) or tools
        cache_read = _int(attrs.get("gen_ai.usage.cache_read.input_tokens"))
        cache_write = _int(attrs.get("gen_ai.usage.cache_write.input_tokens")) or _int(
            attrs.get("gen_ai.usage.cache_creation.input_tokens")
        )
        usage["input_tokens"] += max(
            _int(attrs.get("gen_ai.usage.input_tokens")) - cache_read - cache_write, 0
        )
        usage["output_tokens"] += _int(attrs.get("gen_ai.usage.output_tokens"))
        usage["cache_read_input_tokens"] += cache_read
        usage["cache_creation_input_tokens"] += cache_write
        content = _chat_content(span, flags)
        if content is None:
            continue
        content_spans += 1
        inputs, outputs, span_system = content
        system = span_system or system
        conversation = _assemble(conversation, inputs, outputs, flags)
    messages = _pair_tools(conversation, flags)

    starts = [s["start_ns"] for s in spans if s["start_ns"]]
    ends = [s["end_ns"] for s in spans if s["end_ns"]]
    if not messages:
        coverage = "missing"
    elif content_spans < chat_spans or truncated or flags.dropped_parts or flags.orphan_results:
        coverage = "partial"
    else:
        coverage = "full"
    otel = {
        "trace_ids": sorted({s["trace_id"] for s in spans}),
        "span_count": len(spans),
        "chat_spans": chat_spans,
        "content": coverage,
        "truncated": truncated,
        "dropped_parts": sorted(flags.dropped_parts),
        "orphan_tool_results": flags.orphan_results,
        "discontinuous": flags.discontinuous,
        "tool_runs": tool_runs,
        "service": spans[0]["resource"].get("service.name", "") if spans else "",
    }
    metadata: dict[str, Any] = {"otel": otel}
    if isinstance(brief, str) and brief:
        metadata["user_brief"] = brief
    item: dict[str, Any] = {
        "agent": agent,
        "external_id": external_id,
        "format": "anthropic",
        "system": "\n\n".join(system),
        "tools": tools,
        "messages": messages,
        "usage": usage,
        "model": model or None,
        "status": "error" if errors else "unknown",
        "outcome_reason": "; ".join(errors)[:2000],
        "tags": ["otel"] + ([] if coverage == "full" else [f"otel:content-{coverage}"]),
        "metadata": metadata,
    }
    if starts:
        item["started_at"] = datetime.fromtimestamp(min(starts) / 1e9, tz=UTC).isoformat()
        if ends:
            item["latency_ms"] = max(int((max(ends) - min(starts)) / 1e6), 0)
    if version is not None:
        item["config_version"] = int(version) if str(version).isdigit() else version
    return item
