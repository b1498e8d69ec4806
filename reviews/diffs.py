"""Multi-document diffs of two config versions, for the proposal and agent pages.

What a reviewer needs from a diff of instructions (GitHub's review diff is the model):

- lines aligned with difflib; inside a changed block, old and new lines are *paired by
  similarity* (RapidFuzz's normalised Indel ratio, then a monotone best alignment), not by
  position, so a rewritten rule sits next to the rule it rewrites;
- word-level changes found across the *whole block*, so a paragraph reflowed into bullets
  shows only the words that really changed, not all-red then all-green;
- lines deleted in one place and added unchanged in another are shown as *moved*;
- headings the candidate adds are called out as new sections.

This module only shapes rows the templates render (escaped, never |safe).
"""

import difflib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process

CONTEXT = 3
SYSTEM_PROMPT_TITLE = "System prompt"
PAIR_SIMILARITY = 50.0  # RapidFuzz ratio (0–100) above which two changed lines are one rule
RELATED_SHARE = 0.3  # a line keeps word highlights only if this share of its text is unchanged
MOVE_MIN_CHARS = 24  # a moved run must carry this much text (not just blank lines or "---")
_BREAK = "\n"  # the token between two lines of a block
_WORDS = re.compile(r"\s+|\w+|[^\w\s]")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(\S.*?)\s*#*\s*$")


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
    moved: int | None = None  # for a moved line: its line number on the other side
    heading: bool = False  # an added heading the old version does not have
    threads: list[Any] = field(default_factory=list)  # review threads anchored here

    @property
    def key(self) -> str:
        """Where a comment anchors: R<new line> for new and unchanged lines, L<old line> else."""
        return f"R{self.new_no}" if self.new_no is not None else f"L{self.old_no}"

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)


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

    @property
    def key(self) -> str:
        return (self.right or self.left).key  # type: ignore[union-attr]

    @property
    def threads(self) -> list[Any]:
        if self.left is self.right or self.left is None:
            return self.right.threads if self.right else []
        return self.left.threads + (self.right.threads if self.right else [])


@dataclass
class Block:
    """A run of lines; unchanged runs far from any change are `collapsed` behind "expand"."""

    lines: list[Line]
    pairs: list[Pair]
    collapsed: bool = False
    hunk: int | None = None  # index of a changed block in its document (comments on a hunk)
    threads: list[Any] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.hunk is not None

    @property
    def key(self) -> str:
        return f"H{self.hunk}"


@dataclass
class DocumentDiff:
    name: str
    status: str  # "modified", "added", "removed", "unchanged"
    blocks: list[Block] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    moved: int = 0
    new_headings: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "doc-" + re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


# ------------------------------------------------------------------------- word level


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbours of one kind; a bare space between two changes joins them, so
    "without exception" reads as one change, not two."""
    merged: list[Segment] = []
    for seg in segments:
        if not seg.text:
            continue
        if merged and merged[-1].changed == seg.changed:
            merged[-1] = Segment(merged[-1].text + seg.text, seg.changed)
        else:
            merged.append(seg)
    bridged: list[Segment] = []
    for index, seg in enumerate(merged):
        between = 0 < index < len(merged) - 1 and not seg.changed and not seg.text.strip()
        if between and merged[index - 1].changed and merged[index + 1].changed:
            seg = Segment(seg.text, True)
        if bridged and bridged[-1].changed == seg.changed:
            bridged[-1] = Segment(bridged[-1].text + seg.text, seg.changed)
        else:
            bridged.append(seg)
    return bridged


def _token_flags(a: list[str], b: list[str]) -> tuple[list[bool], list[bool]]:
    """Changed flags per token of `a` and `b` (whitespace-only changes are not highlighted)."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    left, right = [True] * len(a), [True] * len(b)
    for i, j, size in matcher.get_matching_blocks():
        # A lone space or comma matched between two changes is noise, not a shared word.
        if size == 1 and not a[i].strip("\n ,.;:-*") and len(a) > 1:
            continue
        for k in range(size):
            left[i + k] = right[j + k] = False
    for tokens, flags in ((a, left), (b, right)):
        for k, token in enumerate(tokens):
            if not token.strip():
                flags[k] = False
    return left, right


def word_segments(old: str, new: str) -> tuple[list[Segment], list[Segment]]:
    """Split two changed lines into segments, marking the words that differ."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    left, right = _token_flags(a, b)
    return (
        _merge([Segment(t, f) for t, f in zip(a, left, strict=True)]),
        _merge([Segment(t, f) for t, f in zip(b, right, strict=True)]),
    )


def _related(segments: list[Segment]) -> bool:
    kept = sum(len(s.text.strip()) for s in segments if not s.changed)
    total = sum(len(s.text.strip()) for s in segments)
    return total == 0 or kept / total >= RELATED_SHARE


def _block_segments(
    old: list[str], new: list[str]
) -> tuple[list[list[Segment]], list[list[Segment]]]:
    """Word changes across a whole changed block, split back into lines.

    The block is diffed as one stream of words with line breaks as tokens, so words that only
    moved to another line (a paragraph reflowed into bullets) stay unhighlighted. A pure
    insertion or deletion is marked whole."""
    if not old or not new:
        return [[Segment(line, True)] for line in old], [[Segment(line, True)] for line in new]
    a: list[str] = []
    a_line: list[int] = []
    for index, line in enumerate(old):
        tokens = [*_WORDS.findall(line), _BREAK]
        a += tokens
        a_line += [index] * len(tokens)
    b: list[str] = []
    b_line: list[int] = []
    for index, line in enumerate(new):
        tokens = [*_WORDS.findall(line), _BREAK]
        b += tokens
        b_line += [index] * len(tokens)
    left, right = _token_flags(a, b)

    def split(
        tokens: list[str], lines: list[int], flags: list[bool], count: int
    ) -> list[list[Segment]]:
        out: list[list[Segment]] = [[] for _ in range(count)]
        for word, line, flag in zip(tokens, lines, flags, strict=True):
            if word != _BREAK:
                out[line].append(Segment(word, flag))
        merged = [_merge(segs) for segs in out]
        # An unrelated line (little text kept) is marked whole, not word by word.
        return [
            segs if _related(segs) else [Segment("".join(s.text for s in segs), True)]
            for segs in merged
        ]

    return split(a, a_line, left, len(old)), split(b, b_line, right, len(new))


# ------------------------------------------------------------------------- pairing


def pair_by_similarity(old: list[str], new: list[str]) -> list[tuple[int | None, int | None]]:
    """Monotone alignment of two runs of changed lines maximising total similarity.

    Lines pair only above PAIR_SIMILARITY; the rest stand alone. A 1-to-1 block always pairs."""
    if not old or not new:
        return [(i, None) for i in range(len(old))] + [(None, j) for j in range(len(new))]
    if len(old) == 1 and len(new) == 1:
        return [(0, 0)]
    scores = process.cdist(old, new, scorer=fuzz.ratio, processor=str.lower)
    m, n = len(old), len(new)
    best = [[0.0] * (n + 1) for _ in range(m + 1)]
    for i in range(m - 1, -1, -1):
        row, below = best[i], best[i + 1]
        srow = scores[i]
        for j in range(n - 1, -1, -1):
            value = max(below[j], row[j + 1])
            score = float(srow[j])
            if score >= PAIR_SIMILARITY:
                value = max(value, below[j + 1] + score)
            row[j] = value
    out: list[tuple[int | None, int | None]] = []
    i = j = 0
    while i < m and j < n:
        score = float(scores[i][j])
        if score >= PAIR_SIMILARITY and best[i][j] == best[i + 1][j + 1] + score:
            out.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            out.append((i, None))
            i += 1
        else:
            out.append((None, j))
            j += 1
    out += [(k, None) for k in range(i, m)] + [(None, k) for k in range(j, n)]
    return out


# ------------------------------------------------------------------------- moves


def find_moves(
    deleted: list[tuple[int, str]], added: list[tuple[int, str]]
) -> tuple[dict[int, int], dict[int, int]]:
    """Runs of lines deleted in one place and added unchanged in another: {old: new}, {new: old}.

    `deleted` and `added` are (line index, text) of every removed and added line."""
    by_text: dict[str, list[int]] = defaultdict(list)
    for position, (_, text) in enumerate(added):
        if text.strip():
            by_text[text.strip()].append(position)
    old_to_new: dict[int, int] = {}
    new_to_old: dict[int, int] = {}
    d = 0
    while d < len(deleted):
        text = deleted[d][1].strip()
        best_run, best_at = 0, -1
        for start in by_text.get(text, []) if text else []:
            if added[start][0] in new_to_old:
                continue
            run = 0
            while (
                d + run < len(deleted)
                and start + run < len(added)
                and deleted[d + run][1].strip() == added[start + run][1].strip()
                and added[start + run][0] not in new_to_old
                and (run == 0 or deleted[d + run][0] == deleted[d][0] + run)
                and (run == 0 or added[start + run][0] == added[start][0] + run)
            ):
                run += 1
            if run > best_run:
                best_run, best_at = run, start
        chars = sum(len(deleted[d + k][1].strip()) for k in range(best_run))
        if best_run and chars >= MOVE_MIN_CHARS:
            for k in range(best_run):
                old_to_new[deleted[d + k][0]] = added[best_at + k][0]
                new_to_old[added[best_at + k][0]] = deleted[d + k][0]
            d += best_run
        else:
            d += 1
    return old_to_new, new_to_old


# ------------------------------------------------------------------------- documents


def _headings(lines: list[str]) -> set[str]:
    return {m.group(2).strip().lower() for line in lines if (m := _HEADING.match(line))}


def _changed_block(
    a: list[str],
    b: list[str],
    opcode: tuple[str, int, int, int, int],
    *,
    moved_old: dict[int, int],
    moved_new: dict[int, int],
    old_headings: set[str],
    hunk: int,
) -> Block:
    _, i1, i2, j1, j2 = opcode
    old_idx = [i for i in range(i1, i2) if i not in moved_old]
    new_idx = [j for j in range(j1, j2) if j not in moved_new]
    old_segs, new_segs = _block_segments([a[i] for i in old_idx], [b[j] for j in new_idx])
    dels: dict[int, Line] = {}
    adds: dict[int, Line] = {}
    for k, i in enumerate(old_idx):
        dels[i] = Line("del", i + 1, None, old_segs[k])
    for k, j in enumerate(new_idx):
        match = _HEADING.match(b[j])
        heading = bool(match) and match.group(2).strip().lower() not in old_headings  # type: ignore[union-attr]
        adds[j] = Line("add", None, j + 1, new_segs[k], heading=heading)
    for i in range(i1, i2):
        if i in moved_old:
            dels[i] = Line("del", i + 1, None, [Segment(a[i])], moved=moved_old[i] + 1)
    for j in range(j1, j2):
        if j in moved_new:
            adds[j] = Line("add", None, j + 1, [Segment(b[j])], moved=moved_new[j] + 1)
    # Side by side: similar lines share a row; moved and unmatched lines stand alone, in order.
    pairs: list[Pair] = []
    aligned = pair_by_similarity([a[i] for i in old_idx], [b[j] for j in new_idx])
    moved_left = [i for i in range(i1, i2) if i in moved_old]
    moved_right = [j for j in range(j1, j2) if j in moved_new]
    for o, n in aligned:
        left = dels[old_idx[o]] if o is not None else None
        right = adds[new_idx[n]] if n is not None else None
        while moved_left and left is not None and moved_left[0] < left.old_no - 1:  # type: ignore[operator]
            pairs.append(Pair(dels[moved_left.pop(0)], None))
        while moved_right and right is not None and moved_right[0] < right.new_no - 1:  # type: ignore[operator]
            pairs.append(Pair(None, adds[moved_right.pop(0)]))
        one_to_one = len(aligned) == 1
        if left and right and not one_to_one and not _related(left.segments + right.segments):
            pairs += [Pair(left, None), Pair(None, right)]
        else:
            pairs.append(Pair(left, right))
    pairs += [Pair(dels[i], None) for i in moved_left] + [Pair(None, adds[j]) for j in moved_right]
    lines = [dels[i] for i in range(i1, i2)] + [adds[j] for j in range(j1, j2)]
    return Block(lines=lines, pairs=pairs, hunk=hunk)


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
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    deleted = [(i, a[i]) for tag, i1, i2, _, _ in opcodes if tag != "equal" for i in range(i1, i2)]
    added = [(j, b[j]) for tag, _, _, j1, j2 in opcodes if tag != "equal" for j in range(j1, j2)]
    moved_old, moved_new = find_moves(deleted, added) if status == "modified" else ({}, {})
    old_headings = _headings(a)
    hunk = 0
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
        block = _changed_block(
            a,
            b,
            (tag, i1, i2, j1, j2),
            moved_old=moved_old,
            moved_new=moved_new,
            old_headings=old_headings,
            hunk=hunk,
        )
        hunk += 1
        doc.removed += i2 - i1
        doc.added += j2 - j1
        doc.blocks.append(block)
    doc.moved = len(moved_new)
    doc.new_headings = [
        line.text.lstrip("# ").strip() for b in doc.blocks for line in b.lines if line.heading
    ]
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


def attach_threads(docs: list[DocumentDiff], threads: list[Any]) -> list[Any]:
    """Hang review threads on the lines and hunks they anchor; return those that found none
    (their line is no longer in the diff), which the activity still lists."""
    places: dict[tuple[str, str], list[Any]] = {}
    for doc in docs:
        for block in doc.blocks:
            if block.hunk is not None:
                places[(doc.name, block.key)] = block.threads
            for line in block.lines:
                places.setdefault((doc.name, line.key), line.threads)
    orphans = []
    for thread in threads:
        spot = places.get((thread.document, thread.line))
        if spot is None:
            orphans.append(thread)
        else:
            spot.append(thread)
    return orphans
