"""Multi-document diffs of two config versions, for the proposal and agent pages.

Line alignment and word-level highlights come from the standard library's difflib;
this module only shapes its opcodes into rows the templates render (escaped, never |safe).
"""

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

CONTEXT = 3
SYSTEM_PROMPT_TITLE = "System prompt"
_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass
class Segment:
    text: str
    changed: bool = False


@dataclass
class Line:
    kind: str  # "equal", "add", "del"
    old_no: int | None
    new_no: int | None
    segments: list[Segment]


@dataclass
class Pair:
    """One side-by-side row: left (old) and right (new), either may be empty."""

    left: Line | None
    right: Line | None

    @property
    def kind(self) -> str:
        if self.left and self.right and self.left.kind == "equal":
            return "equal"
        return "change"


@dataclass
class Block:
    """A run of lines; unchanged runs far from any change are `collapsed` behind "expand"."""

    lines: list[Line]
    pairs: list[Pair]
    collapsed: bool = False


@dataclass
class DocumentDiff:
    name: str
    status: str  # "modified", "added", "removed", "unchanged"
    blocks: list[Block] = field(default_factory=list)
    added: int = 0
    removed: int = 0

    @property
    def anchor(self) -> str:
        return "doc-" + re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def word_segments(old: str, new: str) -> tuple[list[Segment], list[Segment]]:
    """Split two changed lines into segments, marking the words that differ."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    left: list[Segment] = []
    right: list[Segment] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            left.append(Segment("".join(a[i1:i2])))
            right.append(Segment("".join(b[j1:j2])))
            continue
        if i2 > i1:
            left.append(Segment("".join(a[i1:i2]), changed=True))
        if j2 > j1:
            right.append(Segment("".join(b[j1:j2]), changed=True))
    return _merge(left), _merge(right)


def _merge(segments: list[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for seg in segments:
        if merged and merged[-1].changed == seg.changed:
            merged[-1] = Segment(merged[-1].text + seg.text, seg.changed)
        else:
            merged.append(seg)
    return merged


def _replace_lines(
    old: list[str], new: list[str], i1: int, j1: int
) -> tuple[list[Line], list[Pair]]:
    dels: list[Line] = []
    adds: list[Line] = []
    pairs: list[Pair] = []
    for k in range(max(len(old), len(new))):
        o = old[k] if k < len(old) else None
        n = new[k] if k < len(new) else None
        if o is not None and n is not None:
            # Word highlights only help when the lines are related; otherwise mark the whole line.
            if difflib.SequenceMatcher(None, o, n, autojunk=False).quick_ratio() >= 0.4:
                left, right = word_segments(o, n)
            else:
                left, right = [Segment(o, True)], [Segment(n, True)]
        else:
            left = [Segment(o, True)] if o is not None else []
            right = [Segment(n, True)] if n is not None else []
        dl = Line("del", i1 + k + 1, None, left) if o is not None else None
        al = Line("add", None, j1 + k + 1, right) if n is not None else None
        if dl:
            dels.append(dl)
        if al:
            adds.append(al)
        pairs.append(Pair(dl, al))
    return dels + adds, pairs


def diff_text(
    name: str, old: str | None, new: str | None, *, context: int = CONTEXT
) -> DocumentDiff:
    """Diff one document; `None` means the document does not exist on that side."""
    if old is None:
        status = "added"
    elif new is None:
        status = "removed"
    elif old == new:
        status = "unchanged"
    else:
        status = "modified"
    a = (old or "").splitlines()
    b = (new or "").splitlines()
    doc = DocumentDiff(name=name, status=status)
    if status == "unchanged":
        return doc
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    opcodes = matcher.get_opcodes()
    for index, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            lines = [
                Line("equal", i1 + k + 1, j1 + k + 1, [Segment(a[i1 + k])]) for k in range(i2 - i1)
            ]
            head = context if index > 0 else 0
            tail = context if index < len(opcodes) - 1 else 0
            if len(lines) > head + tail + 1:
                if head:
                    doc.blocks.append(_block(lines[:head]))
                doc.blocks.append(_block(lines[head : len(lines) - tail], collapsed=True))
                if tail:
                    doc.blocks.append(_block(lines[len(lines) - tail :]))
            else:
                doc.blocks.append(_block(lines))
            continue
        lines, pairs = _replace_lines(a[i1:i2], b[j1:j2], i1, j1)
        doc.removed += i2 - i1
        doc.added += j2 - j1
        doc.blocks.append(Block(lines=lines, pairs=pairs))
    return doc


def _block(lines: list[Line], *, collapsed: bool = False) -> Block:
    return Block(lines=lines, pairs=[Pair(line, line) for line in lines], collapsed=collapsed)


def diff_versions(
    base: Any, candidate: Any, *, include_unchanged: bool = False
) -> list[DocumentDiff]:
    """Diff the system prompt and every memory document of two ConfigVersions."""
    docs = [diff_text(SYSTEM_PROMPT_TITLE, base.system_prompt, candidate.system_prompt)]
    old_docs: dict[str, str] = base.memory_documents or {}
    new_docs: dict[str, str] = candidate.memory_documents or {}
    for path in sorted(set(old_docs) | set(new_docs)):
        docs.append(diff_text(path, old_docs.get(path), new_docs.get(path)))
    if not include_unchanged:
        docs = [d for d in docs if d.status != "unchanged"]
    return docs
