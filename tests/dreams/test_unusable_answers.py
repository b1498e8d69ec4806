"""What a real model's answers broke (found on the local model, issue 17), as fixed answer
shapes: an answer cut off at max_tokens, text instead of the forced tool call, ids of the wrong
type. The gateway records such an answer with its tokens and the reason; the dreamer keeps
going and says why in the cycle's report and page."""

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model

from dreams import cycles, diagnosis, drafting, patterns, reports
from dreams.llm import ModelRequestError, UnusableAnswer, get_gateway
from dreams.models import DreamCycle, ModelCall, PatternRun
from tests.fake_anthropic import FakeAnthropic, text

pytestmark = pytest.mark.django_db

ASK = {
    "tool_name": "merge_patterns",
    "input_schema": {"type": "object", "properties": {"groups": {"type": "array"}}},
    "system": "Merge.",
    "messages": [{"role": "user", "content": "Groups: g1, g2"}],
}
# SmolLM2-135M under the draft_edit schema with max_tokens=256: a JSON object that never closes.
CUT_OFF = FakeAnthropic.message(
    [text('{\n  "title": "Refund window",\n  "rationale": "The agent refunded orders deliv')],
    stop_reason="max_tokens",
    usage={"input_tokens": 2242, "output_tokens": 256},
)


def test_an_answer_cut_off_at_max_tokens_is_refused_with_its_reason_and_its_tokens_recorded(
    agent, fake_gateway_settings
):
    fake_gateway_settings.queue(CUT_OFF)

    with pytest.raises(UnusableAnswer, match="cut off at max_tokens") as caught:
        get_gateway().structured(agent=agent, purpose="dream", **ASK)

    assert isinstance(caught.value, ModelRequestError)  # callers that caught it before still do
    call = ModelCall.objects.get(agent=agent)
    assert call.ok is False and call.error == str(caught.value)
    assert "256 output tokens" in call.error and "merge_patterns" in call.error
    assert call.input_tokens == 2242 and call.output_tokens == 256 and call.cost_usd > 0


def test_text_instead_of_the_forced_tool_is_refused_quoting_the_text(agent, fake_gateway_settings):
    fake_gateway_settings.queue(FakeAnthropic.message([text("Sure!   I can merge\nthese.")]))

    async def ask() -> Any:
        try:
            return await get_gateway().astructured(agent=agent, purpose="dream", **ASK)
        finally:
            await get_gateway().aclose()

    with pytest.raises(UnusableAnswer, match="did not call merge_patterns") as caught:
        async_to_sync(ask)()

    assert "'Sure! I can merge these.'" in str(caught.value)
    call = ModelCall.objects.get(agent=agent)
    assert call.ok is False and "did not call merge_patterns" in call.error
    assert call.output_tokens == 5


@pytest.fixture
def owner_of_demo(demo_agent):
    return get_user_model().objects.get(username="demo")


def answer_with(bad: dict[str, dict[str, Any]]):
    """The simulated model, except for the tools named in `bad` (tool name → fixed answer)."""
    from dreams.simulated.transport import answer

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        name = (body.get("tool_choice") or {}).get("name")
        return bad[name] if name in bad else answer(body)

    return responder


def run_one(agent: Any) -> DreamCycle:
    cycle = cycles.start_cycle(agent=agent, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)
    cycles.run_cycle(cycle_id=cycle.pk)
    cycle.refresh_from_db()
    return cycle


def test_a_cut_off_draft_rejects_that_draft_with_the_reason_on_the_cycle_page(
    demo_agent, fake_gateway_settings, client, owner_of_demo
):
    fake_gateway_settings.responder = answer_with({"draft_edit": CUT_OFF})

    cycle = run_one(demo_agent)

    assert cycle.status == DreamCycle.Status.SUCCEEDED, cycle.error
    rejected = [d for d in cycle.report["not_drafted"] if d["status"] == "rejected"]
    assert rejected and all(
        d["reason"].startswith("unusable answer: the answer was cut off at max_tokens")
        for d in rejected
    )
    assert not cycle.proposals.exists()
    client.force_login(owner_of_demo)
    html = client.get(f"/dreams/{cycle.pk}/").content.decode()
    assert "unusable answer: the answer was cut off at max_tokens" in html


def test_a_merge_answer_in_text_keeps_the_mechanical_groups_and_says_why(
    demo_agent, fake_gateway_settings
):
    fake_gateway_settings.responder = answer_with(
        {"merge_patterns": FakeAnthropic.message([text("g1 and g2 are the same.")])}
    )

    cycle = run_one(demo_agent)

    assert cycle.status == DreamCycle.Status.SUCCEEDED, cycle.error
    (refused,) = cycle.report["refused_answers"]
    assert refused["step"] == "merge" and "did not call merge_patterns" in refused["reason"]
    # One pattern per mechanical signature: nothing merged, nothing lost.
    assert cycle.patterns.count() == len(patterns._candidate_groups(patterns.cycle_runs(cycle)))
    markdown = reports.render_markdown(reports.build_cycle_report(cycle), agent_name="x")
    assert "Model answers that could not be used" in markdown


def test_a_refused_diagnosis_is_stored_as_such_and_drafting_still_runs(
    demo_agent, fake_gateway_settings
):
    fake_gateway_settings.responder = answer_with({"diagnose_runs": CUT_OFF})

    cycle = run_one(demo_agent)

    assert cycle.status == DreamCycle.Status.SUCCEEDED, cycle.error
    memberships = PatternRun.objects.filter(pattern__cycle=cycle).exclude(divergence_explanation="")
    assert memberships and all(
        m.divergence_explanation.startswith("Diagnosis refused: the answer was cut off")
        and m.divergence_step is None
        for m in memberships
    )
    assert any(r["step"].startswith("diagnose") for r in cycle.report["refused_answers"])


@pytest.mark.parametrize(
    "answer, explanation",
    [
        ({"runs": [{"run_id": [1, 2], "step": 0, "explanation": "both"}]}, "No diagnosis"),
        ({"runs": "all of them"}, "No diagnosis"),
    ],
)
def test_diagnosis_answers_with_ids_of_the_wrong_shape_do_not_crash(
    demo_agent, fake_gateway_settings, answer, explanation
):
    fake_gateway_settings.responder = answer_with(
        {
            "diagnose_runs": FakeAnthropic.message(
                [{"type": "tool_use", "id": "toolu_1", "name": "diagnose_runs", "input": answer}]
            )
        }
    )
    cycle = cycles.start_cycle(agent=demo_agent, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)
    patterns.select_runs(cycle=cycle)
    patterns.group_runs(cycle=cycle)
    pattern = cycle.patterns.order_by("id").first()

    assert diagnosis.diagnose_pattern(cycle=cycle, pattern=pattern) > 0
    assert all(
        m.divergence_explanation.startswith(explanation)
        for m in pattern.pattern_runs.all()
        if m.divergence_explanation
    )


def test_merge_members_of_the_wrong_type_are_ignored(demo_agent, fake_gateway_settings):
    fake_gateway_settings.responder = answer_with(
        {
            "merge_patterns": FakeAnthropic.message(
                [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "merge_patterns",
                        "input": {"groups": [{"members": [["g1"], 2, "g1"]}, {"members": "g2"}]},
                    }
                ]
            )
        }
    )

    cycle = run_one(demo_agent)

    assert cycle.status == DreamCycle.Status.SUCCEEDED, cycle.error


def test_a_draft_citing_true_or_a_bare_id_is_not_backed_by_drafting_runs():
    base = {"system_prompt": "Be kind.\n"}
    edit = [{"document": "system_prompt", "action": "change", "new_text": "Be kind and exact.\n"}]

    for evidence in ([True, True], 4, "4,5"):
        with pytest.raises(drafting.DraftRejected, match="backed by 0 of the drafting runs"):
            drafting.validate_draft(
                base=base,
                answer={
                    "title": "t",
                    "rationale": "r",
                    "evidence_run_ids": evidence,
                    "edits": edit,
                },
                drafting_run_ids={1, 4, 5},
            )
