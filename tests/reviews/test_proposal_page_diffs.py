"""reviews/diffs.py: multi-document diffs with word highlights and collapsed context."""

from types import SimpleNamespace

from reviews.diffs import diff_text, diff_versions, word_segments


def _version(prompt: str, docs: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(system_prompt=prompt, memory_documents=docs)


def test_word_segments_mark_only_the_changed_words():
    left, right = word_segments("Refund within 30 days.", "Refund within 14 days.")
    assert [s.text for s in left if s.changed] == ["30"]
    assert [s.text for s in right if s.changed] == ["14"]
    assert "".join(s.text for s in left) == "Refund within 30 days."


def test_long_unchanged_runs_are_collapsed_with_context_kept():
    old = "\n".join(f"line {i}" for i in range(1, 41))
    new = old.replace("line 20", "line twenty")
    doc = diff_text("prompt", old, new)
    collapsed = [b for b in doc.blocks if b.collapsed]
    assert [len(b.lines) for b in collapsed] == [16, 17]
    shown = [line for b in doc.blocks if not b.collapsed for line in b.lines]
    # Three lines of context either side of the change, with both line numbers.
    assert [line.old_no for line in shown if line.kind == "equal"] == [17, 18, 19, 21, 22, 23]
    assert (doc.added, doc.removed) == (1, 1)


def test_documents_added_removed_and_unchanged():
    base = _version("Same prompt.", {"a.md": "old", "gone.md": "bye"})
    cand = _version("Same prompt.", {"a.md": "new", "new.md": "hello"})
    docs = {d.name: d.status for d in diff_versions(base, cand)}
    assert docs == {"a.md": "modified", "gone.md": "removed", "new.md": "added"}
    everything = diff_versions(base, cand, include_unchanged=True)
    assert everything[0].name == "System prompt" and everything[0].status == "unchanged"


def test_unrelated_lines_are_marked_whole_not_word_by_word():
    doc = diff_text("p", "alpha beta gamma", "completely different sentence here")
    del_line = next(line for b in doc.blocks for line in b.lines if line.kind == "del")
    assert len(del_line.segments) == 1 and del_line.segments[0].changed


def test_side_by_side_pairs_align_deletions_and_additions():
    doc = diff_text("p", "a\nb\nc", "a\nB\nc\nd")
    pairs = [p for b in doc.blocks for p in b.pairs if p.kind == "change"]
    assert [(p.left and p.left.old_no, p.right and p.right.new_no) for p in pairs] == [
        (2, 2),
        (None, 4),
    ]
