"""Minimal proposal flags for hosted-dream proposals (protected text, injection, growth).

Used only while dreams.guards (the dream helper's shared guard module) is absent from this tree;
`flags_for` prefers dreams.guards.flags_for_change when it exists.
"""

import re
from typing import Any

from agents.models import Agent, ConfigVersion, Run
from agents.transcripts import iter_tool_calls

GROWTH_RATIO = 1.5
GROWTH_MIN_CHARS = 2000
COPY_MIN_CHARS = 40
INJECTION_PATTERNS = re.compile(
    r"ignore (all |any )?(previous|prior|above) instructions|disregard (the )?system prompt"
    r"|you are now|new instructions:|<\s*/?\s*system\s*>",
    re.IGNORECASE,
)


def _documents(version: ConfigVersion) -> dict[str, str]:
    return {"system_prompt": version.system_prompt, **version.memory_documents}


def _untrusted_texts(runs: list[Run]) -> list[str]:
    texts = []
    for run in runs:
        for message in run.messages:
            if message["role"] != "user":
                continue
            for block in message["content"]:
                if block.get("type") == "text":
                    texts.append(block.get("text", ""))
        for call in iter_tool_calls(run.messages):
            result = call["result"]
            if isinstance(result, list):
                result = " ".join(b.get("text", "") for b in result if isinstance(b, dict))
            if isinstance(result, str):
                texts.append(result)
    return [t for t in texts if len(t) >= COPY_MIN_CHARS]


def _added_lines(before: str, after: str) -> list[str]:
    old = set(before.splitlines())
    return [line for line in after.splitlines() if line.strip() and line not in old]


def minimal_flags(
    *, agent: Agent, base: ConfigVersion, candidate: ConfigVersion, runs: list[Run]
) -> list[dict[str, str]]:
    flags: list[dict[str, str]] = []
    old_docs, new_docs = _documents(base), _documents(candidate)
    for protected in agent.protected_sections or []:
        for path, text in old_docs.items():
            if protected and protected in text and protected not in new_docs.get(path, ""):
                flags.append(
                    {
                        "code": "protected_section",
                        "message": f"{path}: changes protected text {protected[:60]!r}",
                    }
                )
    added = [
        (path, line)
        for path, text in new_docs.items()
        for line in _added_lines(old_docs.get(path, ""), text)
    ]
    untrusted = _untrusted_texts(runs)
    for path, line in added:
        if INJECTION_PATTERNS.search(line):
            flags.append(
                {
                    "code": "possible_injection",
                    "message": f"{path}: instruction-like text {line[:80]!r}",
                }
            )
            continue
        chunk = line.strip()
        if len(chunk) >= COPY_MIN_CHARS and any(chunk in text for text in untrusted):
            flags.append(
                {
                    "code": "possible_injection",
                    "message": f"{path}: copies run content {chunk[:80]!r}",
                }
            )
    old_size = sum(len(t) for t in old_docs.values())
    new_size = sum(len(t) for t in new_docs.values())
    if new_size > max(old_size * GROWTH_RATIO, old_size + GROWTH_MIN_CHARS):
        flags.append(
            {
                "code": "growth",
                "message": f"config grows from {old_size} to {new_size} characters",
            }
        )
    return flags


def flags_for(
    *, agent: Agent, base: ConfigVersion, candidate: ConfigVersion, runs: list[Run]
) -> list[dict[str, Any]]:
    try:
        from dreams import guards  # type: ignore[attr-defined]
    except ImportError:
        guards = None
    shared = getattr(guards, "flags_for_change", None)
    if shared is not None:
        return shared(agent=agent, base=base, candidate=candidate, runs=runs)
    return minimal_flags(agent=agent, base=base, candidate=candidate, runs=runs)
