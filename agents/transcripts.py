"""Canonical run format (Anthropic Messages form) and the importers that produce it.

Canonical: ``{"system": str, "tools": [{name, description, input_schema}], "messages":
[{"role": "user"|"assistant", "content": [blocks]}], "usage": {...}, "model": str}`` where blocks
are ``text``, ``thinking``, ``redacted_thinking``, ``tool_use`` (id, name, input) and
``tool_result`` (tool_use_id, content, is_error). Content given as a string is normalised to one
text block. Importers accept:

* ``anthropic`` – the canonical form itself (``messages`` with Anthropic content);
* ``anthropic_exchange`` – ``{"request": {...}, "response": {...}}`` or ``{"exchanges": [...]}``:
  the Messages API request(s) an agent sent and the response(s) it got;
* ``openai`` – chat-completions transcripts (``role``, ``tool_calls`` with JSON-string
  ``arguments``, ``tool`` messages with ``tool_call_id``).

Errors are raised as ``TranscriptError(path, message)`` naming the offending field.
"""

import json
from dataclasses import dataclass
from typing import Any

FORMATS = ("anthropic", "anthropic_exchange", "openai", "claude_code")
BLOCK_TYPES = {
    "text",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "image",
    "document",
}
EXPECTED_SHAPE = (
    "expected `messages` (Anthropic Messages or OpenAI chat-completions form), "
    "or `request` + `response` / `exchanges` (Anthropic API transcript)"
)


class TranscriptError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def detect_format(item: dict[str, Any]) -> str:
    declared = item.get("format")
    if declared is not None:
        if declared not in FORMATS:
            raise TranscriptError("format", f"must be one of {', '.join(FORMATS)}")
        return declared
    if "exchanges" in item or ("request" in item and "response" in item):
        return "anthropic_exchange"
    messages = item.get("messages")
    if not isinstance(messages, list):
        raise TranscriptError("messages", f"unknown transcript shape: {EXPECTED_SHAPE}")
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") in ("system", "tool", "developer") or "tool_calls" in message:
            return "openai"
    return "anthropic"


def to_canonical(item: dict[str, Any]) -> dict[str, Any]:
    """Convert one incoming run's transcript to canonical form (system, tools, messages, usage, model)."""
    fmt = detect_format(item)
    if fmt == "anthropic":
        result = _from_anthropic(item)
    elif fmt == "anthropic_exchange":
        result = _from_anthropic_exchange(item)
    elif fmt == "claude_code":
        from agents import claude_code  # it builds on this module's validators

        result = claude_code.to_canonical(item)
    else:
        result = _from_openai(item)
    result["format"] = fmt
    return result


# -- Anthropic ----------------------------------------------------------------------------


def _system_text(system: Any, path: str) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        parts = []
        for i, block in enumerate(system):
            if (
                not isinstance(block, dict)
                or block.get("type") != "text"
                or not isinstance(block.get("text"), str)
            ):
                raise TranscriptError(
                    f"{path}[{i}]", "system blocks must be {type: text, text: str}"
                )
            parts.append(block["text"])
        return "\n\n".join(parts)
    raise TranscriptError(path, "must be a string or a list of text blocks")


def _openai_tool(tool: dict[str, Any], path: str) -> dict[str, Any]:
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise TranscriptError(f"{path}.function.name", "each tool needs a function name")
    converted = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object"},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def canonical_tools(tools: Any, path: str = "tools") -> list[dict[str, Any]]:
    """Tool definitions in Anthropic form; OpenAI ``{"type": "function", "function": {...}}``
    definitions are converted (run import and the versions API both accept either)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise TranscriptError(path, "must be a list")
    out = []
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            out.append(_openai_tool(tool, f"{path}[{i}]"))
            continue
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise TranscriptError(f"{path}[{i}].name", "each tool needs a non-empty name")
        clean = {k: v for k, v in tool.items() if k != "cache_control"}
        clean.setdefault("input_schema", {"type": "object"})
        out.append(clean)
    return out


_DROPPED_KEYS = ("cache_control", "citations")


def _normalise_block(block: Any, seen_tool_ids: set[str], role: str) -> dict[str, Any]:
    """Validate one content block. Error paths are relative ("", ".text", ".content[0].text"):
    the caller prefixes them, so the hot path builds no strings."""
    if not isinstance(block, dict):
        raise TranscriptError("", "content blocks must be objects")
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in BLOCK_TYPES:
        raise TranscriptError(
            ".type",
            f"unknown block type {kind!r}; expected one of {', '.join(sorted(BLOCK_TYPES))}",
        )
    if "cache_control" in block or "citations" in block:
        block = {k: v for k, v in block.items() if k not in _DROPPED_KEYS or v}
        block.pop("cache_control", None)
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise TranscriptError(".text", "must be a string")
    elif kind == "thinking":
        if not isinstance(block.get("thinking"), str):
            raise TranscriptError(".thinking", "must be a string")
    elif kind == "tool_use":
        if role != "assistant":
            raise TranscriptError(".type", "tool_use blocks belong to assistant messages")
        if not isinstance(block.get("id"), str) or not block["id"]:
            raise TranscriptError(".id", "tool_use needs an id")
        if not isinstance(block.get("name"), str) or not block["name"]:
            raise TranscriptError(".name", "tool_use needs a name")
        if "input" not in block:
            block = {**block, "input": {}}
        elif not isinstance(block["input"], dict):
            raise TranscriptError(".input", "must be an object")
        seen_tool_ids.add(block["id"])
    elif kind == "tool_result":
        if role != "user":
            raise TranscriptError(".type", "tool_result blocks belong to user messages")
        tool_use_id = block.get("tool_use_id")
        if not isinstance(tool_use_id, str) or tool_use_id not in seen_tool_ids:
            raise TranscriptError(".tool_use_id", "must reference an earlier tool_use id")
        content = block.get("content", "")
        if isinstance(content, list):
            block = {**block, "content": _normalise_blocks(content, seen_tool_ids, "", ".content")}
        elif not isinstance(content, str):
            raise TranscriptError(".content", "must be a string or a list of blocks")
    return block


def _normalise_blocks(
    blocks: list[Any], seen_tool_ids: set[str], role: str, path: str
) -> list[dict[str, Any]]:
    out = []
    for j, block in enumerate(blocks):
        try:
            out.append(_normalise_block(block, seen_tool_ids, role))
        except TranscriptError as exc:
            raise TranscriptError(f"{path}[{j}]{exc.path}", exc.message) from None
    return out


def normalise_messages(messages: Any, path: str = "messages") -> list[dict[str, Any]]:
    """Validate Anthropic-form messages and return them with every content as a block list."""
    if not isinstance(messages, list) or not messages:
        raise TranscriptError(path, "must be a non-empty list of messages")
    seen_tool_ids: set[str] = set()
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TranscriptError(f"{path}[{i}]", "must be an object with role and content")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise TranscriptError(f"{path}[{i}].role", "must be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            blocks = _normalise_blocks(content, seen_tool_ids, role, f"{path}[{i}].content")
        else:
            raise TranscriptError(
                f"{path}[{i}].content", "must be a string or a list of content blocks"
            )
        out.append({"role": role, "content": blocks})
    return out


MAX_TOKENS = 2**62  # far above any real count, well inside a PostgreSQL bigint


def _token_count(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_TOKENS:
        raise TranscriptError(path, "must be a non-negative integer")
    return value


def _anthropic_usage(usage: Any, path: str) -> dict[str, int]:
    if usage is None:
        return {}
    if not isinstance(usage, dict):
        raise TranscriptError(path, "must be an object")
    out = {}
    for key in (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ):
        value = usage.get(key)
        if value is None:
            continue
        out[key] = _token_count(value, f"{path}.{key}")
    return out


def _from_anthropic(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "system": _system_text(item.get("system"), "system"),
        "tools": canonical_tools(item.get("tools"), "tools"),
        "messages": normalise_messages(item.get("messages")),
        "usage": _anthropic_usage(item.get("usage"), "usage"),
        "model": item.get("model") or "",
    }


def _from_anthropic_exchange(item: dict[str, Any]) -> dict[str, Any]:
    exchanges = item.get("exchanges")
    path = "exchanges"
    if exchanges is None:
        exchanges = [{"request": item.get("request"), "response": item.get("response")}]
        path = ""
    if not isinstance(exchanges, list) or not exchanges:
        raise TranscriptError("exchanges", "must be a non-empty list of {request, response}")
    totals: dict[str, int] = {}
    for i, exchange in enumerate(exchanges):
        prefix = f"{path}[{i}]." if path else ""
        if not isinstance(exchange, dict) or not isinstance(exchange.get("request"), dict):
            raise TranscriptError(f"{prefix}request", "must be the Messages API request object")
        if not isinstance(exchange.get("response"), dict):
            raise TranscriptError(f"{prefix}response", "must be the Messages API response object")
        for key, value in _anthropic_usage(
            exchange["response"].get("usage"), f"{prefix}response.usage"
        ).items():
            totals[key] = totals.get(key, 0) + value
    # The last request carries the whole history; its response is the final assistant turn.
    last = exchanges[-1]
    prefix = f"{path}[{len(exchanges) - 1}]." if path else ""
    request, response = last["request"], last["response"]
    content = response.get("content")
    if not isinstance(content, list):
        raise TranscriptError(f"{prefix}response.content", "must be a list of content blocks")
    history = request.get("messages") or []
    if not isinstance(history, list):
        raise TranscriptError(f"{prefix}request.messages", "must be a list of messages")
    messages = [*history, {"role": "assistant", "content": content}]
    return {
        "system": _system_text(request.get("system"), f"{prefix}request.system"),
        "tools": canonical_tools(request.get("tools"), f"{prefix}request.tools"),
        "messages": normalise_messages(messages, f"{prefix}request.messages"),
        "usage": totals,
        "model": response.get("model") or request.get("model") or "",
    }


def to_anthropic_exchange(canonical: dict[str, Any]) -> dict[str, Any]:
    """Export a canonical run as one Messages API request + response (its final assistant turn)."""
    messages = canonical["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the run does not end with an assistant turn")
    request: dict[str, Any] = {"model": canonical.get("model", ""), "messages": messages[:-1]}
    if canonical.get("system"):
        request["system"] = canonical["system"]
    if canonical.get("tools"):
        request["tools"] = canonical["tools"]
    response = {
        "type": "message",
        "role": "assistant",
        "model": canonical.get("model", ""),
        "content": messages[-1]["content"],
        "usage": canonical.get("usage", {}),
    }
    return {"request": request, "response": response}


# -- OpenAI chat completions --------------------------------------------------------------


def _openai_text(content: Any, path: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                parts.append(str(part.get("text", "")))
            else:
                raise TranscriptError(f"{path}[{j}]", "only text content parts are supported")
        return "".join(parts)
    raise TranscriptError(path, "must be a string, null or a list of text parts")


def _from_openai(item: dict[str, Any]) -> dict[str, Any]:
    raw_messages = item.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise TranscriptError("messages", "must be a non-empty list of chat messages")
    system_parts: list[str] = []
    messages: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic form alternates roles: tool results and any user text that follows them
        # join one user turn (to_openai splits them back into separate messages).
        if messages and messages[-1]["role"] == role == "user":
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for i, message in enumerate(raw_messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranscriptError(path, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system_parts.append(_openai_text(message.get("content"), f"{path}.content"))
        elif role == "user":
            append(
                "user",
                [{"type": "text", "text": _openai_text(message.get("content"), f"{path}.content")}],
            )
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _openai_text(message.get("content"), f"{path}.content")
            if text:
                blocks.append({"type": "text", "text": text})
            tool_calls = message.get("tool_calls") or []
            if not isinstance(tool_calls, list):
                raise TranscriptError(f"{path}.tool_calls", "must be a list of tool calls")
            for j, call in enumerate(tool_calls):
                cpath = f"{path}.tool_calls[{j}]"
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise TranscriptError(
                        f"{cpath}.function.name", "tool call needs a function name"
                    )
                arguments = function.get("arguments") or "{}"
                try:
                    parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
                except json.JSONDecodeError as exc:
                    raise TranscriptError(
                        f"{cpath}.function.arguments", f"is not valid JSON ({exc.msg})"
                    ) from exc
                if not isinstance(parsed, dict):
                    raise TranscriptError(
                        f"{cpath}.function.arguments", "must encode a JSON object"
                    )
                if not isinstance(call.get("id"), str):
                    raise TranscriptError(f"{cpath}.id", "tool call needs an id")
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": function["name"],
                        "input": parsed,
                    }
                )
            if not blocks:
                blocks.append({"type": "text", "text": ""})
            append("assistant", blocks)
        elif role == "tool":
            if not isinstance(message.get("tool_call_id"), str):
                raise TranscriptError(f"{path}.tool_call_id", "tool messages need a tool_call_id")
            append(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message["tool_call_id"],
                        "content": _openai_text(message.get("content"), f"{path}.content"),
                    }
                ],
            )
        else:
            raise TranscriptError(
                f"{path}.role", "must be system, developer, user, assistant or tool"
            )

    raw_tools = item.get("tools") or []
    if not isinstance(raw_tools, list):
        raise TranscriptError("tools", "must be a list of tool definitions")
    tools = canonical_tools(raw_tools)

    usage_in = item.get("usage") or {}
    if not isinstance(usage_in, dict):
        raise TranscriptError("usage", "must be an object")
    details = usage_in.get("prompt_tokens_details") or {}
    if not isinstance(details, dict):
        raise TranscriptError("usage.prompt_tokens_details", "must be an object")
    cached = _token_count(details.get("cached_tokens") or 0, "usage.prompt_tokens_details")
    usage = {}
    if usage_in.get("prompt_tokens") is not None:
        prompt = _token_count(usage_in["prompt_tokens"], "usage.prompt_tokens")
        usage["input_tokens"] = max(prompt - cached, 0)
        usage["cache_read_input_tokens"] = cached
    if usage_in.get("completion_tokens") is not None:
        usage["output_tokens"] = _token_count(
            usage_in["completion_tokens"], "usage.completion_tokens"
        )
    return {
        "system": "\n\n".join(system_parts),
        "tools": tools,
        "messages": normalise_messages(messages),
        "usage": usage,
        "model": item.get("model") or "",
    }


def to_openai(canonical: dict[str, Any]) -> dict[str, Any]:
    """Export a canonical run as an OpenAI chat-completions transcript (text and tool calls)."""
    out: list[dict[str, Any]] = []
    if canonical.get("system"):
        out.append({"role": "system", "content": canonical["system"]})
    for message in canonical["messages"]:
        if message["role"] == "assistant":
            text = "".join(b["text"] for b in message["content"] if b["type"] == "text")
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                }
                for b in message["content"]
                if b["type"] == "tool_use"
            ]
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        for block in message["content"]:
            if block["type"] == "tool_result":
                content = block.get("content", "")
                if isinstance(content, list):
                    content = "".join(b.get("text", "") for b in content)
                out.append(
                    {"role": "tool", "tool_call_id": block["tool_use_id"], "content": content}
                )
            elif block["type"] == "text":
                out.append({"role": "user", "content": block["text"]})
    tools = [
        {
            "type": "function",
            "function": {
                k: v
                for k, v in (
                    ("name", t["name"]),
                    ("description", t.get("description")),
                    ("parameters", t.get("input_schema")),
                )
                if v is not None
            },
        }
        for t in canonical.get("tools", [])
    ]
    result: dict[str, Any] = {"messages": out}
    if tools:
        result["tools"] = tools
    return result


def check_tool_turns(messages: list[dict[str, Any]], path: str = "messages") -> None:
    """Refuse tool turns the Messages API would refuse on replay (canonical messages).

    Within one assistant message every tool_use id is distinct, and when a message follows it,
    that message is the user turn carrying a tool_result for each of them. A run that *ends* on a
    tool_use (cut at a step limit) is a valid recording; ids repeated across turns are allowed.
    """
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        calls: dict[str, int] = {}
        for j, block in enumerate(message["content"]):
            if block.get("type") != "tool_use":
                continue
            if block["id"] in calls:
                raise TranscriptError(
                    f"{path}[{i}].content[{j}].id",
                    f"duplicate tool_use id {block['id']!r} in one assistant message "
                    f"(also content[{calls[block['id']]}])",
                )
            calls[block["id"]] = j
        if not calls or i + 1 == len(messages):
            continue
        following = messages[i + 1]
        answered = {
            b.get("tool_use_id") for b in following["content"] if b.get("type") == "tool_result"
        }
        for tool_use_id, j in calls.items():
            if following["role"] != "user" or tool_use_id not in answered:
                raise TranscriptError(
                    f"{path}[{i}].content[{j}]",
                    f"tool_use {tool_use_id!r} has no tool_result in the next message "
                    f"({path}[{i + 1}])",
                )


# -- steps and tool exchanges --------------------------------------------------------------
#
# One definition of a *step* (an assistant turn, numbered from 0 in message order) and one
# pairing of tool results with the calls they answer. Every reader of a run (replay, the
# dreamer's summaries, sandboxes, pages, markers, exports) goes through these functions.


def step_message_indices(messages: list[dict[str, Any]]) -> list[int]:
    """Message index of each step: ``step_message_indices(m)[step]`` is where step `step` sits."""
    return [i for i, m in enumerate(messages) if m.get("role") == "assistant"]


def count_steps(messages: list[dict[str, Any]]) -> int:
    return len(step_message_indices(messages))


def message_index_of_step(messages: list[dict[str, Any]], step: int | None) -> int | None:
    """The message index of assistant step `step` (None when there is no such step)."""
    if step is None or isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None
    indices = step_message_indices(messages)
    return indices[step] if step < len(indices) else None


def step_of_message(messages: list[dict[str, Any]], index: int) -> int | None:
    """The step number of the assistant message at `index` (None for user messages)."""
    indices = step_message_indices(messages)
    return indices.index(index) if index in indices else None


@dataclass
class ToolExchange:
    """One tool call and the result that answers it (``result`` is None when none came back)."""

    step: int
    message_index: int
    id: str
    name: str
    input: dict[str, Any]
    result: dict[str, Any] | None = None
    result_message_index: int | None = None

    @property
    def content(self) -> Any:
        return self.result.get("content", "") if self.result is not None else None

    @property
    def is_error(self) -> bool:
        return bool(self.result and self.result.get("is_error"))


def pair_tool_results(messages: list[dict[str, Any]]) -> list[ToolExchange]:
    """Every tool_use in order, each with the tool_result that answers it.

    A result answers a call of the assistant turn just before it, in order (so an id reused
    in later turns, as many agents do, never picks up another turn's result). Only a result
    whose id is not among that turn's open calls falls back to the id: the latest earlier
    call with that id still unanswered.
    """
    exchanges: list[ToolExchange] = []
    previous_turn: list[ToolExchange] = []
    unanswered: dict[str, list[ToolExchange]] = {}
    step = -1
    for index, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        if message.get("role") == "assistant":
            step += 1
            previous_turn = []
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    exchange = ToolExchange(
                        step=step,
                        message_index=index,
                        id=str(block.get("id", "")),
                        name=str(block.get("name", "")),
                        input=block.get("input") or {},
                    )
                    exchanges.append(exchange)
                    previous_turn.append(exchange)
                    unanswered.setdefault(exchange.id, []).append(exchange)
            continue
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            tool_use_id = str(block.get("tool_use_id", ""))
            open_calls = [e for e in previous_turn if e.result is None]
            match = next((e for e in open_calls if e.id == tool_use_id), None)
            if match is None:
                # The position is ambiguous (a result out of its turn): fall back to the id.
                earlier = [e for e in unanswered.get(tool_use_id, []) if e.result is None]
                match = earlier[-1] if earlier else None
            if match is None:
                continue
            match.result = block
            match.result_message_index = index
            unanswered[match.id].remove(match)
    return exchanges


def result_owners(messages: list[dict[str, Any]]) -> dict[tuple[int, int], ToolExchange]:
    """(message index, block index) of each tool_result → the exchange it answers (for pages)."""
    owners: dict[tuple[int, int], ToolExchange] = {}
    by_block = {id(e.result): e for e in pair_tool_results(messages) if e.result is not None}
    for index, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            exchange = by_block.get(id(block))
            if exchange is not None:
                owners[(index, j)] = exchange
    return owners


def iter_tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every tool_use block in order, each with its result text and error flag attached."""
    return [
        {
            "step": e.step,
            "id": e.id,
            "name": e.name,
            "input": e.input,
            "result": e.content,
            "is_error": e.is_error,
        }
        for e in pair_tool_results(messages)
    ]


def final_answer(messages: list[dict[str, Any]]) -> str:
    """The text of the last assistant turn that has any (the answer a user was left with)."""
    for message in reversed(messages):
        if message.get("role") != "assistant" or not isinstance(message.get("content"), list):
            continue
        text = "\n".join(
            b.get("text", "") for b in message["content"] if b.get("type") == "text"
        ).strip()
        if text:
            return text
    return ""


def answer_key(text: str) -> str:
    """A final answer reduced to what equivalence means here: case, spacing and the closing
    punctuation do not matter; every word and number does."""
    return " ".join(text.casefold().split()).rstrip(" .!")
