"""Stage *guard*: flag candidate edits that touch protected text, copy run content, or grow.

Flags follow the shared contract ({"code", "message"}); a flagged proposal needs an admin to
approve. Documents are {"system_prompt": text, <memory path>: text}.
"""

import difflib
import re
from typing import Any

from django.conf import settings

from agents.models import Agent, ConfigVersion, Run

# The document name of the system prompt (memory documents are named by their paths).
SYSTEM_PROMPT_DOCUMENT = "system_prompt"

# The body stops at the next opening marker (a tempered dot), so unclosed openers cost linear time.
PROTECTED_BLOCK = re.compile(
    r"<!--\s*protected\s*-->(?:(?!<!--\s*protected\s*-->).)*?<!--\s*/protected\s*-->",
    re.S | re.I,
)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
WORD = re.compile(r"\w+")


def flag(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


# -- protected sections --------------------------------------------------------------------


def heading_section(text: str, heading: str) -> str | None:
    """The text of the section under `heading` (through the next heading of the same or higher level)."""
    wanted = HEADING.match(heading.strip())
    wanted_title = (wanted.group(2) if wanted else heading.strip().lstrip("#")).strip().lower()
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        match = HEADING.match(line.rstrip("\n"))
        if not match or match.group(2).strip().lower() != wanted_title:
            continue
        level = len(match.group(1))
        end = len(lines)
        for j in range(i + 1, len(lines)):
            other = HEADING.match(lines[j].rstrip("\n"))
            if other and len(other.group(1)) <= level:
                end = j
                break
        return "".join(lines[i:end]).rstrip("\n")
    return None


def protected_texts(
    *, documents: dict[str, str], agent_sections: list[str]
) -> list[tuple[str, str]]:
    """(document, text) pairs that must survive unchanged: marked blocks and the agent's list."""
    found = []
    for name, text in documents.items():
        found += [(name, block) for block in PROTECTED_BLOCK.findall(text)]
        for entry in agent_sections or []:
            if not isinstance(entry, str) or not entry.strip():
                continue
            section = heading_section(text, entry) if entry.lstrip().startswith("#") else None
            if section is not None:
                found.append((name, section))
            elif entry in text:
                found.append((name, entry))
    return found


def check_protected(
    *, base: dict[str, str], candidate: dict[str, str], agent_sections: list[str]
) -> list[dict[str, str]]:
    flags = []
    for name, text in protected_texts(documents=base, agent_sections=agent_sections):
        if text not in candidate.get(name, ""):
            first_line = text.strip().splitlines()[0][:80] if text.strip() else ""
            flags.append(
                flag(
                    "protected_section",
                    f"The edit changes protected text in {name} ({first_line!r}).",
                )
            )
    return flags


# -- copies of untrusted run content -------------------------------------------------------


def added_text(*, base: dict[str, str], candidate: dict[str, str]) -> str:
    """The lines the candidate adds, over all documents."""
    added = []
    for name, text in candidate.items():
        old = base.get(name, "").splitlines()
        for line in difflib.ndiff(old, text.splitlines()):
            if line.startswith("+ "):
                added.append(line[2:])
    return "\n".join(added)


def untrusted_texts(runs: list[Run]) -> list[str]:
    """User text and tool results of runs: what run authors (or tools) could have planted."""
    texts = []
    for run in runs:
        for message in run.messages:
            if message.get("role") != "user":
                continue
            for block in message.get("content", []):
                if block.get("type") == "text":
                    texts.append(block.get("text", ""))
                elif block.get("type") == "tool_result":
                    content = block.get("content")
                    if isinstance(content, list):
                        content = " ".join(
                            c.get("text", "") for c in content if isinstance(c, dict)
                        )
                    texts.append(str(content or ""))
    return texts


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def copied_passages(*, text: str, sources: list[str], words: int) -> list[str]:
    """Passages of `words`+ consecutive words of `text` that also appear in one of `sources`."""
    grams: set[tuple[str, ...]] = set()
    for source in sources:
        tokens = _words(source)
        grams.update(tuple(tokens[i : i + words]) for i in range(len(tokens) - words + 1))
    tokens = _words(text)
    hits = [i for i in range(len(tokens) - words + 1) if tuple(tokens[i : i + words]) in grams]
    passages: list[str] = []
    start, end = 0, -1
    for i in hits:
        if i <= end:  # extends the previous passage
            passages[-1] = " ".join(tokens[start : i + words])
        else:
            start = i
            passages.append(" ".join(tokens[i : i + words]))
        end = i + words - 1
    return passages


# Phrases that try to override the agent's instructions, whoever wrote them into the edit.
INSTRUCTION_OVERRIDE = re.compile(
    r"ignore (all |any )?(previous|prior|above) instructions|disregard (the )?system prompt"
    r"|you are now|new instructions:|<\s*/?\s*system\s*>",
    re.IGNORECASE,
)


def check_injection(
    *, base: dict[str, str], candidate: dict[str, str], runs: list[Run]
) -> list[dict[str, str]]:
    words = settings.REVERIE_DREAM_INJECTION_WORDS
    added = added_text(base=base, candidate=candidate)
    flags = []
    override = INSTRUCTION_OVERRIDE.search(added)
    if override:
        flags.append(
            flag(
                "possible_injection",
                f"The edit contains instruction-override text: {override.group(0)!r}.",
            )
        )
    passages = copied_passages(text=added, sources=untrusted_texts(runs), words=words)
    if passages:
        flags.append(
            flag(
                "possible_injection",
                f"The edit copies {words}+ words from run content (user text or tool output): "
                f"{passages[0][:160]!r}.",
            )
        )
    return flags


# -- growth --------------------------------------------------------------------------------


def check_growth(*, base: dict[str, str], candidate: dict[str, str]) -> list[dict[str, str]]:
    before = sum(len(t) for t in base.values())
    after = sum(len(t) for t in candidate.values())
    limit = settings.REVERIE_DREAM_MAX_GROWTH_PCT
    if before == 0 or (after - before) * 100 <= before * limit:
        return []
    pct = (after - before) * 100 / before
    return [flag("growth", f"The edit grows the instructions by {pct:.0f}% (limit {limit}%).")]


def check(
    *, base: dict[str, str], candidate: dict[str, str], agent_sections: list[str], runs: list[Run]
) -> list[dict[str, Any]]:
    """All guard flags for a candidate; an empty list means a clean edit."""
    return [
        *check_protected(base=base, candidate=candidate, agent_sections=agent_sections),
        *check_injection(base=base, candidate=candidate, runs=runs),
        *check_growth(base=base, candidate=candidate),
    ]


def documents_of(version: ConfigVersion) -> dict[str, str]:
    """A version's documents as guards, drafts and diffs see them."""
    return {SYSTEM_PROMPT_DOCUMENT: version.system_prompt, **(version.memory_documents or {})}


def flags_for_change(
    *, agent: Agent, base: ConfigVersion, candidate: ConfigVersion, runs: list[Run]
) -> list[dict[str, Any]]:
    """Guard flags for a proposal from `base` to `candidate` (dreamt, hosted or edited by hand)."""
    return check(
        base=documents_of(base),
        candidate=documents_of(candidate),
        agent_sections=list(agent.protected_sections or []),
        runs=runs,
    )
