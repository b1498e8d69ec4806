"""Claude Code / Claude Agent SDK session transcripts (the `~/.claude/projects/*/<session>.jsonl`
files) → canonical runs: the `claude_code` format of `POST /api/v1/runs`.

A transcript is one JSON entry per line; `user` / `assistant` entries carry an API `message`
and link to their parent by `parentUuid`. The conversation is the chain from the newest main
entry back to the root (as the SDK's `get_session_messages` builds it), with the sibling
entries of a parallel tool-call turn put back; the CLI writes one assistant entry per content
block, so entries sharing a `message.id` are one assistant message.
"""

from datetime import datetime
from typing import Any

import orjson

from agents.transcripts import BLOCK_TYPES, TranscriptError, normalise_messages

CHAIN_TYPES = {"user", "assistant", "progress", "system", "attachment"}


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The entries of a transcript file; corrupt or partial lines (a file being written) skipped."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _chain(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    linked = [e for e in entries if e.get("type") in CHAIN_TYPES and isinstance(e.get("uuid"), str)]
    by_uuid = {e["uuid"]: e for e in linked}
    messages = [e for e in linked if e.get("type") in ("user", "assistant")]
    main = [e for e in messages if not e.get("isSidechain")] or messages  # a subagent file
    if not main:
        return []
    on_chain: set[str] = set()
    current: dict[str, Any] | None = main[-1]
    while current is not None and current["uuid"] not in on_chain:
        on_chain.add(current["uuid"])
        parent = current.get("parentUuid")
        current = by_uuid.get(parent) if isinstance(parent, str) else None
    # Parallel tool calls: every entry of a response on the chain, and the results of its calls.
    response_ids = {
        _message(e).get("id")
        for e in main
        if e["uuid"] in on_chain and e.get("type") == "assistant"
    } - {None}
    kept: list[dict[str, Any]] = []
    call_ids: set[str] = set()
    for entry in main:
        message = _message(entry)
        if entry.get("type") == "assistant" and (
            entry["uuid"] in on_chain or message.get("id") in response_ids
        ):
            kept.append(entry)
            call_ids |= {
                b["id"]
                for b in _blocks(message)
                if b.get("type") == "tool_use" and b.get("id") is not None
            }
        elif entry.get("type") == "user" and (
            entry["uuid"] in on_chain
            or any(
                b.get("type") == "tool_result" and b.get("tool_use_id") in call_ids
                for b in _blocks(message)
            )
        ):
            kept.append(entry)
    return [e for e in kept if not e.get("isMeta")]


def _message(entry: dict[str, Any]) -> dict[str, Any]:
    message = entry.get("message")
    return message if isinstance(message, dict) else {}


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _clean(block: dict[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind not in BLOCK_TYPES:
        return None
    if kind == "tool_result" and isinstance(block.get("content"), list):
        inner = [c for c in map(_clean, block["content"]) if c is not None]
        return {**block, "content": inner}
    return block


def _time(entry: dict[str, Any]) -> datetime | None:
    raw = entry.get("timestamp")
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")) if isinstance(raw, str) else None
    except ValueError:
        return None


def to_canonical(item: dict[str, Any]) -> dict[str, Any]:
    """Canonical transcript (system, tools, messages, usage, model) of a `claude_code` run item.

    The item carries the file as `transcript` (a list of entries, or the JSONL text).
    """
    raw = item.get("transcript")
    if isinstance(raw, str):
        entries = parse_jsonl(raw)
    elif isinstance(raw, list):
        entries = [e for e in raw if isinstance(e, dict)]
    else:
        raise TranscriptError("transcript", "must be the session's JSONL text or a list of entries")
    messages: list[dict[str, Any]] = []
    usage_by_response: dict[str, dict[str, Any]] = {}
    model = ""
    seen_calls: set[str] = set()
    for entry in _chain(entries):
        message = _message(entry)
        role = "assistant" if entry.get("type") == "assistant" else "user"
        blocks = []
        for block in map(_clean, _blocks(message)):
            if block is None:
                continue
            if block["type"] == "tool_use":
                seen_calls.add(str(block.get("id")))
            if block["type"] == "tool_result" and block.get("tool_use_id") not in seen_calls:
                continue  # its call was compacted away
            blocks.append(block)
        if role == "assistant":
            model = message.get("model") or model
            if isinstance(message.get("usage"), dict):
                usage_by_response[str(message.get("id") or entry["uuid"])] = message["usage"]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)  # one API message split over entries
        else:
            messages.append({"role": role, "content": blocks})
    if not messages:
        raise TranscriptError("transcript", "has no user or assistant messages")
    usage: dict[str, int] = {}
    for entry_usage in usage_by_response.values():
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
            value = entry_usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                usage[key] = usage.get(key, 0) + value
    return {
        "system": item.get("system") if isinstance(item.get("system"), str) else "",
        "tools": [],
        "messages": normalise_messages(messages, "transcript"),
        "usage": usage,
        "model": model if model and not model.startswith("<") else "",  # "<synthetic>"
    }


def run_item(*, agent: str, external_id: str, transcript: str, **extra: Any) -> dict[str, Any]:
    """A `POST /runs` item for a transcript file, with its start time and duration."""
    entries = parse_jsonl(transcript)
    times = [t for t in map(_time, entries) if t is not None]
    item: dict[str, Any] = {
        "agent": agent,
        "external_id": external_id,
        "format": "claude_code",
        "transcript": entries,
        "tags": ["claude-code"],
        **extra,
    }
    if times:
        item["started_at"] = min(times).isoformat()
        item["latency_ms"] = int((max(times) - min(times)).total_seconds() * 1000)
    return item
