"""reviews/diffs.py: multi-document diffs with word highlights and collapsed context."""

from types import SimpleNamespace

import pytest

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


# -- GitHub-grade: similarity pairing, reflowed paragraphs, moves, new headings -----------

POLICY = """# Refund policy

Refunds are allowed within 30 days of delivery. Always look the order up first and check the delivery date. Never refund on the customer's word alone.

## Escalation

Escalate angry customers to a human agent right away.
Keep replies short, kind and specific to the order.
Quote the order number in every reply to the customer.
"""

REWRITE = """# Refund policy

- Refunds are allowed within 30 days of delivery.
- Always look the order up first with lookup_order and check the delivery date.
- Never refund on the customer's word alone.

## Tone

Keep replies short, kind and specific to the order.
Quote the order number in every reply to the customer.

## Escalation

Escalate customers to a human agent only when they ask for one.
"""


def _changed_words(doc, kind):
    return [
        s.text
        for b in doc.blocks
        for line in b.lines
        if line.kind == kind and not line.moved
        for s in line.segments
        if s.changed
    ]


def test_a_paragraph_reflowed_into_bullets_shows_only_the_words_that_changed():
    doc = diff_text("policy.md", POLICY, REWRITE)
    added = _changed_words(doc, "add")
    # The bullets' markers and the one new phrase; the rest of the paragraph is unchanged text.
    assert "with lookup_order" in added  # one change, the space between joined
    changed = " ".join(added)
    assert "Refunds" not in changed and "delivery" not in changed and "word" not in changed
    removed = " ".join(_changed_words(doc, "del"))
    assert not any(w in removed for w in ("Refunds", "delivery", "order"))


def test_moved_lines_are_shown_as_moved_not_as_removed_and_added():
    doc = diff_text("policy.md", POLICY, REWRITE)
    moved = [line for b in doc.blocks for line in b.lines if line.moved]
    texts = {line.text for line in moved if line.kind == "add"}
    assert texts == {
        "Keep replies short, kind and specific to the order.",
        "Quote the order number in every reply to the customer.",
    }
    assert doc.moved == 2
    source = next(line for line in moved if line.kind == "del")
    target = next(line for line in moved if line.kind == "add" and line.text == source.text)
    assert source.moved == target.new_no and target.moved == source.old_no


def test_new_headings_are_called_out():
    doc = diff_text("policy.md", POLICY, REWRITE)
    assert doc.new_headings == ["Tone"]  # "Escalation" existed before: not new


def test_changed_lines_pair_by_similarity_not_by_position():
    old = "Check the refund window first.\nNever promise a refund date."
    new = (
        "Greet the customer by name.\n"
        "Check the refund window before anything else.\n"
        "Never promise a refund date you cannot see."
    )
    doc = diff_text("p", old, new)
    rows = [
        (p.left and p.left.old_no, p.right and p.right.new_no) for b in doc.blocks for p in b.pairs
    ]
    assert rows == [(None, 1), (1, 2), (2, 3)]  # by position line 1 would face "Greet…"


@pytest.mark.django_db
def test_the_diff_table_has_fixed_gutters_even_when_it_opens_collapsed(client, reviewer, agent):
    from dreams.models import Proposal
    from tests.factories import reviewable_proposal

    proposal = reviewable_proposal(agent=agent, runs=1)
    from agents.models import ConfigVersion

    long = "\n".join(f"Rule {i}: keep it." for i in range(40))
    ConfigVersion.objects.filter(pk=proposal.candidate_version_id).update(
        memory_documents={"policies/refunds.md": long + "\nRule 40: new."}
    )
    ConfigVersion.objects.filter(pk=proposal.base_version_id).update(
        memory_documents={"policies/refunds.md": long}
    )
    client.force_login(reviewer)
    page = client.get(f"/proposals/{Proposal.objects.get(pk=proposal.pk).pk}/").content.decode()
    assert (
        '<colgroup><col class="ln-col"><col class="ln-col"><col class="code-col"></colgroup>'
        in page
    )
    split = client.get(f"/proposals/{proposal.pk}/?view=split").content.decode()
    assert (
        '<col class="ln-col"><col class="code-col"><col class="ln-col"><col class="code-col">'
        in split
    )
