"""Unified diffs over config documents: apply a model-written patch strictly, render diffs.

The standard library writes unified diffs (difflib) but does not apply them, so `apply_patch`
does: every hunk's context and removed lines must match the document exactly, at the stated
line or, failing that, at exactly one other place after the previous hunk. Hunk line counts are
not trusted (models miscount them); the lines themselves are.
"""

import difflib
import re

HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    """The patch is malformed or does not apply to the document."""


def _hunks(patch: str) -> list[tuple[int, list[str], list[str]]]:
    hunks: list[tuple[int, list[str], list[str]]] = []
    current: tuple[int, list[str], list[str]] | None = None
    for raw in patch.splitlines():
        header = HUNK_HEADER.match(raw)
        if header:
            current = (int(header.group(1)), [], [])
            hunks.append(current)
            continue
        if current is None:
            if raw.startswith(("---", "+++", "diff ", "index ")) or not raw.strip():
                continue
            raise PatchError(f"text before the first hunk: {raw[:60]!r}")
        if raw.startswith("\\"):
            continue  # "\ No newline at end of file"
        kind, line = (raw[0], raw[1:]) if raw else (" ", "")
        if kind == " ":
            current[1].append(line)
            current[2].append(line)
        elif kind == "-":
            current[1].append(line)
        elif kind == "+":
            current[2].append(line)
        else:
            raise PatchError(f"unexpected line in hunk: {raw[:60]!r}")
    if not hunks:
        raise PatchError("no hunks")
    return hunks


def _matches(lines: list[str], at: int, block: list[str]) -> bool:
    return lines[at : at + len(block)] == block


def apply_patch(text: str, patch: str) -> str:
    """Apply a unified diff to `text`; raise PatchError unless every hunk applies cleanly."""
    lines = text.splitlines()
    trailing_newline = text.endswith("\n")
    offset = 0
    floor = 0
    for start, old, new in _hunks(patch):
        # "-N,0" inserts after line N; otherwise the hunk starts at line N (1-based).
        base_index = start if not old else max(start - 1, 0)
        expected = base_index + offset
        if not old:
            at = min(max(expected, floor), len(lines))
        elif expected >= floor and _matches(lines, expected, old):
            at = expected
        else:
            places = [i for i in range(floor, len(lines) - len(old) + 1) if _matches(lines, i, old)]
            if len(places) != 1:
                where = "nowhere" if not places else f"{len(places)} places"
                raise PatchError(
                    f"hunk at line {start} does not apply: its context matches {where}"
                )
            at = places[0]
        lines[at : at + len(old)] = new
        offset = at - base_index + len(new) - len(old)
        floor = at + len(new)
    result = "\n".join(lines)
    return result + "\n" if trailing_newline or (not text and result) else result


def unified_diff(before: str, after: str, *, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )


def line_matcher(before: str, after: str) -> difflib.SequenceMatcher:
    return difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)


def changed_ranges(before: str, after: str) -> list[tuple[int, int]]:
    """Line ranges of `before` that an edit replaces (an insertion is an empty range)."""
    matcher = line_matcher(before, after)
    return [(i1, i2) for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal"]


def ranges_touch(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    """Whether two edits of the same text change overlapping or adjacent lines."""
    return any(a1 <= b2 and b1 <= a2 for a1, a2 in a for b1, b2 in b)
