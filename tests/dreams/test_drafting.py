"""Drafts become change sets only when they apply, stay small, change something and have evidence."""

from typing import Any

import pytest

from agents.demo import MEMORY_DOCUMENTS, SYSTEM_PROMPT
from dreams import drafting, patches, patterns
from dreams.drafting import DraftRejected, validate_draft
from dreams.models import PatternRun
from dreams.simulated import dreaming

BASE = {"system_prompt": SYSTEM_PROMPT, **MEMORY_DOCUMENTS}
RULE = "- Always verify the order with lookup_order before issuing any refund."


def diff_adding(document: str, line: str, *, after: str) -> str:
    new = BASE[document].replace(after, after + "\n" + line, 1)
    return patches.unified_diff(BASE[document], new, name=document)


def answer(**overrides: Any) -> dict[str, Any]:
    base = {
        "title": "Verify first",
        "rationale": "Refunds were issued without a lookup.",
        "evidence_run_ids": [1, 2],
        "edits": [
            {
                "document": "system_prompt",
                "action": "change",
                "diff": diff_adding("system_prompt", RULE, after="## Tools"),
            }
        ],
    }
    return {**base, **overrides}


# -- patches -------------------------------------------------------------------------------


def test_a_difflib_patch_applies_back_to_its_result() -> None:
    new = SYSTEM_PROMPT.replace("## Style", "## Style\n" + RULE).replace(
        "Be warm, brief and concrete", "Be warm and concrete"
    )
    patch = patches.unified_diff(SYSTEM_PROMPT, new, name="system_prompt")

    assert patches.apply_patch(SYSTEM_PROMPT, patch) == new


def test_a_patch_with_shifted_line_numbers_applies_where_its_context_is_unique() -> None:
    patch = diff_adding("system_prompt", RULE, after="## Style")
    shifted = "# Preface\n\n" + SYSTEM_PROMPT

    assert patches.apply_patch(shifted, patch) == "# Preface\n\n" + SYSTEM_PROMPT.replace(
        "## Style", "## Style\n" + RULE
    )


def test_a_patch_whose_context_is_not_in_the_document_is_refused() -> None:
    patch = diff_adding("system_prompt", RULE, after="## Style")

    with pytest.raises(patches.PatchError, match="does not apply"):
        patches.apply_patch(SYSTEM_PROMPT.replace("## Style", "## Voice"), patch)


def test_garbage_is_not_a_patch() -> None:
    with pytest.raises(patches.PatchError):
        patches.apply_patch(SYSTEM_PROMPT, "please add a rule about refunds")


# -- validation ----------------------------------------------------------------------------


def test_a_valid_draft_becomes_new_documents() -> None:
    draft = validate_draft(base=BASE, answer=answer(), drafting_run_ids={1, 2, 3})

    assert RULE in draft["documents"]["system_prompt"]
    assert draft["documents"]["policies/refunds.md"] == BASE["policies/refunds.md"]
    assert draft["evidence_run_ids"] == [1, 2]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"edits": []}, "no edit proposed"),
        ({"evidence_run_ids": [1]}, "backed by 1 of the drafting runs"),
        ({"evidence_run_ids": [1, 99]}, "backed by 1 of the drafting runs"),  # 99 was held out
        (
            {
                "edits": [
                    {"document": "system_prompt", "action": "change", "new_text": SYSTEM_PROMPT}
                ]
            },
            "changes nothing",
        ),
        (
            {
                "edits": [
                    {
                        "document": "system_prompt",
                        "action": "change",
                        "diff": diff_adding("playbooks/tone.md", RULE, after="# Tone"),
                    }
                ]
            },
            "does not apply",
        ),
        (
            {"edits": [{"document": "nope.md", "action": "change", "new_text": "x"}]},
            "no such document",
        ),
        (
            {"edits": [{"document": "../etc/passwd", "action": "add", "new_text": "x"}]},
            "invalid document",
        ),
        ({"edits": [{"document": "system_prompt", "action": "remove"}]}, "cannot remove"),
        (
            {"edits": [{"document": "policies/refunds.md", "action": "add", "new_text": "x"}]},
            "it exists",
        ),
        (
            {
                "edits": [
                    {
                        "document": "system_prompt",
                        "action": "change",
                        "new_text": SYSTEM_PROMPT + "- a\n",
                    },
                    {
                        "document": "system_prompt",
                        "action": "change",
                        "new_text": SYSTEM_PROMPT + "- b\n",
                    },
                ]
            },
            "same document",
        ),
    ],
)
def test_unacceptable_drafts_are_rejected_with_a_reason(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(DraftRejected, match=reason):
        validate_draft(base=BASE, answer=answer(**overrides), drafting_run_ids={1, 2, 3})


def test_drafts_over_the_size_limits_are_rejected(settings: Any) -> None:
    settings.REVERIE_DREAM_MAX_EDIT_CHARS = 50
    with pytest.raises(DraftRejected, match="adds"):
        validate_draft(base=BASE, answer=answer(), drafting_run_ids={1, 2})

    settings.REVERIE_DREAM_MAX_EDIT_CHARS = 100_000
    settings.REVERIE_DREAM_MAX_DOCUMENT_CHARS = len(SYSTEM_PROMPT) + 10
    with pytest.raises(DraftRejected, match="would be"):
        validate_draft(base=BASE, answer=answer(), drafting_run_ids={1, 2})


def test_adding_and_removing_memory_documents() -> None:
    draft = validate_draft(
        base=BASE,
        answer=answer(
            edits=[
                {"document": "playbooks/refunds-checklist.md", "action": "add", "new_text": RULE},
                {"document": "playbooks/tone.md", "action": "remove"},
            ]
        ),
        drafting_run_ids={1, 2},
    )

    assert draft["documents"]["playbooks/refunds-checklist.md"] == RULE
    assert "playbooks/tone.md" not in draft["documents"]


# -- drafts touching the same text -----------------------------------------------------------


def docs_with(document: str, line: str, *, after: str) -> dict[str, Any]:
    return {"documents": {**BASE, document: BASE[document].replace(after, after + "\n" + line, 1)}}


def test_drafts_touching_the_same_lines_are_grouped_and_others_are_not() -> None:
    drafts = {
        "1": docs_with("system_prompt", RULE, after="## Tools"),
        "2": docs_with("system_prompt", "- Check the window.", after="## Tools"),
        "3": docs_with("playbooks/tone.md", "- Stay calm.", after="# Tone"),
        "4": docs_with("system_prompt", "- Be brief.", after="## Style"),
    }

    groups = drafting.overlapping_groups(base=BASE, drafts=drafts)

    assert sorted(map(sorted, groups)) == [["1", "2"], ["3"], ["4"]]


def test_drafts_touching_the_same_text_are_redrafted_as_one_proposal(
    demo_agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreams import cycles
    from dreams.models import DreamCycle, Proposal

    # Make the simulated model put every rule in the same place, so the drafts overlap.
    monkeypatch.setattr(
        dreaming, "_place", lambda documents, instruction, anchor: ("system_prompt", 4)
    )
    cycle = cycles.start_cycle(agent=demo_agent, trigger="manual", enqueue=False)
    cycles.run_cycle(cycle_id=cycle.pk)
    cycle.refresh_from_db()

    assert cycle.status == DreamCycle.Status.SUCCEEDED
    (proposal,) = Proposal.objects.filter(cycle=cycle)
    assert proposal.patterns.count() == 3
    merged = [d for d in cycle.report["progress"]["drafts"].values() if d.get("merged_from")]
    assert len(merged) == 1 and merged[0]["status"] == "valid"
    text = proposal.candidate_version.system_prompt
    assert "lookup_order before issuing any refund" in text
    assert "check_refund_policy" in text
    assert "do not escalate" in text


# -- splits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "drafting_count"), [(1, 1), (2, 2), (3, 2), (4, 2), (10, 5), (40, 6)]
)
def test_split_keeps_most_runs_for_judging(n: int, drafting_count: int) -> None:
    splits = patterns.split_of(run_ids=list(range(1, n + 1)), cycle_id=7)

    assert list(splits.values()).count(PatternRun.Split.DRAFTING) == drafting_count
    assert splits == patterns.split_of(run_ids=list(range(n, 0, -1)), cycle_id=7)  # stable


def test_a_pattern_seen_in_fewer_than_two_runs_is_not_drafted(agent: Any) -> None:
    from agents.models import Run
    from dreams import cycles
    from tests.factories import RunFactory

    RunFactory(agent=agent, status=Run.Status.FAILURE, outcome_reason="Wrong currency")
    cycle = cycles.start_cycle(agent=agent, trigger="manual", enqueue=False)
    cycles.run_cycle(cycle_id=cycle.pk)
    cycle.refresh_from_db()

    assert cycle.patterns.count() == 1
    assert not cycle.proposals.exists()
    (skipped,) = cycle.report["not_drafted"]
    assert skipped["reason"] == "seen in fewer than two drafting runs"


def test_signature_uses_the_error_type_or_the_normalised_reason(agent: Any) -> None:
    from agents.models import Run
    from tests.factories import FeedbackFactory, RunFactory

    late = RunFactory(
        agent=agent,
        status=Run.Status.FAILURE,
        outcome_reason="Refund issued outside the 30-day policy window (delivered 41 days ago)",
    )
    later = RunFactory(
        agent=agent,
        status=Run.Status.FAILURE,
        outcome_reason="Refund issued outside the 30-day policy window (delivered 66 days ago)",
    )
    crashed = RunFactory(
        agent=agent, status=Run.Status.ERROR, outcome_reason="ToolError: timed out"
    )
    unlabelled = RunFactory(agent=agent, status=Run.Status.FAILURE, outcome_reason="")
    FeedbackFactory(run=unlabelled, comment="Refund sent to the wrong card 4242")

    assert patterns.signature(late) == patterns.signature(later)
    assert patterns.signature(crashed) == "error|-|toolerror"
    assert patterns.signature(unlabelled) == "failure|-|feedback refund sent to the wrong card #"
