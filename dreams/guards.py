"""Stage *guard*: flag candidate edits that touch protected text, copy run content, change a
policy value (a number, amount or limit), relax a check, or grow.

Flags follow the shared contract ({"code", "message"}); a flagged proposal needs an admin to
approve. Documents are {"system_prompt": text, <memory path>: text}. Everything a run carries
into the dreamer's prompt is untrusted: user text, tool results, assistant text, tool inputs,
the grader's outcome reason, the user brief and feedback comments.
"""

import difflib
import json
import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from agents.models import Agent, ConfigVersion, Run

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


def _block_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content or "")


def untrusted_texts(runs: list[Run]) -> list[str]:
    """Every run field that reaches the dreamer: what run authors, tools, graders or feedback
    could have planted (user and assistant text, tool inputs and results, outcome reasons,
    the user brief, feedback comments)."""
    texts = []
    for run in runs:
        texts += [run.outcome_reason or "", run.user_brief or ""]
        texts += [f.comment for f in run.feedback.all() if f.comment] if run.pk else []
        for message in run.messages or []:
            content = message.get("content", [])
            if isinstance(content, str):
                texts.append(content)
                continue
            for block in content:
                if not isinstance(block, dict):
                    continue
                kind = block.get("type")
                if kind == "text":
                    texts.append(block.get("text", ""))
                elif kind == "tool_result":
                    texts.append(_block_text(block.get("content")))
                elif kind == "tool_use":
                    texts.append(json.dumps(block.get("input", {}), ensure_ascii=False))
    return [t for t in texts if t]


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
                f"The edit copies {words}+ words from run content (what users, tools, graders "
                f"or feedback wrote): "
                f"{passages[0][:160]!r}.",
            )
        )
    return flags


# -- policy values: numbers, amounts, limits ---------------------------------------------

# A number with an optional currency sign, thousands separators, decimals and percent; not part
# of a word ("v2", "sha256") and not a Markdown list marker ("3. Do this").
NUMBER = re.compile(
    r"(?<![\w.,])[$€£]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?|(?<![\w.,])[$€£]?\d+(?:\.\d+)?%?"
)
LIST_MARKER = re.compile(r"^\s*\d+[.)]\s")


def numbers_in(lines: Iterable[str]) -> set[str]:
    """The numeric values in `lines`, normalised ("$1,000" and "1000" are one value)."""
    found = set()
    for line in lines:
        for match in NUMBER.finditer(LIST_MARKER.sub("", line)):
            value = match.group(0).lstrip("$€£").replace(",", "").rstrip("%")
            found.add(value + ("%" if match.group(0).endswith("%") else ""))
    return found


def changed_lines(
    *, base: dict[str, str], candidate: dict[str, str]
) -> tuple[list[str], list[str]]:
    """(added, removed) lines over all documents."""
    added, removed = [], []
    for name in sorted(set(base) | set(candidate)):
        old, new = base.get(name, "").splitlines(), candidate.get(name, "").splitlines()
        for line in difflib.ndiff(old, new):
            if line.startswith("+ "):
                added.append(line[2:])
            elif line.startswith("- "):
                removed.append(line[2:])
    return added, removed


def _sorted_values(values: set[str]) -> list[str]:
    def key(value: str) -> tuple[float, str]:
        try:
            return float(value.rstrip("%")), value
        except ValueError:
            return 0.0, value

    return sorted(values, key=key)


def check_policy_values(*, base: dict[str, str], candidate: dict[str, str]) -> list[dict[str, str]]:
    """A number, amount or limit the edit introduces, or one it drops, is a policy change:
    "30-day window" → "365-day window" is exactly what a poisoned grader reason asks for."""
    added, removed = changed_lines(base=base, candidate=candidate)
    introduced = numbers_in(added) - numbers_in(base.values())
    dropped = numbers_in(removed) - numbers_in(candidate.values())
    if not introduced and not dropped:
        return []
    parts = []
    if dropped and introduced:
        parts.append(
            f"{', '.join(_sorted_values(dropped))} → {', '.join(_sorted_values(introduced))}"
        )
    elif introduced:
        parts.append(f"introduces {', '.join(_sorted_values(introduced))}")
    else:
        parts.append(f"removes {', '.join(_sorted_values(dropped))}")
    return [
        flag(
            "policy_value",
            f"The edit changes a policy value ({parts[0]}); check the number against the real "
            "policy: run content may have planted it.",
        )
    ]


# -- relaxed checks -------------------------------------------------------------------------

_CHECK = (
    r"(?:check(?:ing)?|verif(?:y|ying|ication)|confirm(?:ing|ation)?|validat(?:e|ing|ion)"
    r"|look(?:ing)? ?up|lookup|review(?:ing)?|approv(?:al|e|ing)|authori[sz](?:e|ing|ation)"
    r"|asking|proof|id|identity|escalat(?:e|ing|ion))"
)
# Phrases that drop a check; in a sentence that also negates ("never … without checking"),
# "without" tightens instead, so those are left alone.
RELAXING = [
    (re.compile(rf"\bwithout (?:first |any |a |an |the )?{_CHECK}\b", re.I), True),
    (
        re.compile(
            rf"\bno (?:need|longer need|requirement) (?:to |for )?(?:a |an |the )?{_CHECK}", re.I
        ),
        False,
    ),
    (
        re.compile(
            rf"\b(?:need not|needn't|don't need to|do not need to|doesn't need to|does not need to|no longer) {_CHECK}",
            re.I,
        ),
        False,
    ),
    (
        re.compile(
            rf"\b(?:skip|bypass|ignore|omit|waive|disable)(?:s|ping|ing)? (?:the |any |all |a |an )?(?:\w+ )?{_CHECK}",
            re.I,
        ),
        True,
    ),
    (
        re.compile(
            rf"\b{_CHECK}s? (?:is|are) (?:now )?(?:optional|unnecessary|not required)\b", re.I
        ),
        False,
    ),
    (
        re.compile(
            r"\bregardless of (?:the )?(?:policy|window|limit|amount|order|status|eligibility)",
            re.I,
        ),
        False,
    ),
    (
        re.compile(r"\b(?:take|trust|accept) the (?:customer|user)'?s? (?:word|claim|say)", re.I),
        False,
    ),
]
NEGATION = re.compile(r"\b(?:never|not|no|don't|do not|must not|mustn't|cannot|can't|nor)\b", re.I)
SENTENCE = re.compile(r"[^.!?;\n]+[.!?;]?")


def relaxed_checks(text: str) -> list[str]:
    """Phrases of `text` that drop or loosen a check ("without checking", "no need to verify")."""
    hits = []
    for sentence in SENTENCE.findall(text):
        for pattern, negation_tightens in RELAXING:
            match = pattern.search(sentence)
            if match is None:
                continue
            before = sentence[: match.start()]
            if negation_tightens and NEGATION.search(before):
                continue  # "never refund without checking", "do not skip the lookup"
            if re.search(
                r"\b(?:asks?|asking|tells?|wants?|requests?) (?:you )?to\s*$", before, re.I
            ):
                continue  # "even when the customer asks you to skip the check" describes a request
            hits.append(match.group(0))
            break
    return hits


def check_relaxed(*, base: dict[str, str], candidate: dict[str, str]) -> list[dict[str, str]]:
    added, _ = changed_lines(base=base, candidate=candidate)
    base_hits = {h.lower() for h in relaxed_checks("\n".join(base.values()))}
    hits = [h for h in relaxed_checks("\n".join(added)) if h.lower() not in base_hits]
    if not hits:
        return []
    return [
        flag(
            "relaxes_check",
            f"The edit relaxes a check ({hits[0]!r}); an admin must approve it.",
        )
    ]


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
        *check_policy_values(base=base, candidate=candidate),
        *check_relaxed(base=base, candidate=candidate),
        *check_growth(base=base, candidate=candidate),
    ]


def flags_for_change(
    *, agent: Agent, base: ConfigVersion, candidate: ConfigVersion, runs: list[Run]
) -> list[dict[str, Any]]:
    """Guard flags for a proposal from `base` to `candidate` (dreamt, hosted or edited by hand)."""
    return check(
        base=base.documents,
        candidate=candidate.documents,
        agent_sections=list(agent.protected_sections or []),
        runs=runs,
    )
