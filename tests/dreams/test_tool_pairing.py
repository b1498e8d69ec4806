"""One pairing of tool results with calls (by position) and one step ↔ message mapping.

The fixture is shaped like production desks: many user turns, text and tool calls in one
turn, tool-call ids reused within the run (as some vendors' agents do), a long and an empty
result, and a run cut at a step limit; in OpenAI and Anthropic formats.
"""

import copy
import json
import re

import pytest

from agents.models import Run
from agents.transcripts import (
    iter_tool_calls,
    message_index_of_step,
    pair_tool_results,
    step_message_indices,
    to_canonical,
    to_openai,
)
from dreams import prompts
from dreams.replay import replay
from tests.factories import ConfigVersionFactory, ExperimentFactory, ReplayFactory, RunFactory
from tests.fake_anthropic import FakeAnthropic, text, tool_use

pytestmark = pytest.mark.django_db

PROFILE = json.dumps({"user_id": "mia_li_3668", "name": "Mia Li", "membership": "gold"})
RESERVATION = json.dumps({"reservation_id": "4WQ150", "flights": ["HAT170"] * 40})  # long
SUM = "1628.0"


def openai_run(*, cut_at_step_limit: bool = False) -> dict:
    """An airline-desk run in OpenAI chat form; every turn's first call is `call_0`."""
    messages = [
        {"role": "system", "content": "You are an airline desk agent."},
        {"role": "user", "content": "Hi, I want to change my reservation."},
        {"role": "assistant", "content": "Sure, what is your user id?"},
        {"role": "user", "content": "It's mia_li_3668."},
        {
            "role": "assistant",
            "content": "Let me look you up.",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {
                        "name": "get_user_details",
                        "arguments": '{"user_id": "mia_li_3668"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": PROFILE},
        {"role": "assistant", "content": "Which reservation?"},
        {"role": "user", "content": "4WQ150, and what would two bags cost?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {
                        "name": "get_reservation_details",
                        "arguments": '{"reservation_id": "4WQ150"}',
                    },
                },
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "think", "arguments": '{"thought": "check bags"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": RESERVATION},
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
        {
            "role": "assistant",
            "content": "Computing the total.",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "calculate", "arguments": '{"expression": "814 * 2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": SUM},
        {"role": "assistant", "content": "Two bags would cost $1628. Shall I go ahead?"},
        {"role": "user", "content": "Yes please."},
    ]
    if cut_at_step_limit:
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_0",
                        "type": "function",
                        "function": {"name": "update_reservation_baggages", "arguments": "{}"},
                    }
                ],
            }
        )
    else:
        messages.append({"role": "assistant", "content": "Done: two bags added."})
    return {"format": "openai", "messages": messages}


EXPECTED = [
    ("get_user_details", PROFILE),
    ("get_reservation_details", RESERVATION),
    ("think", ""),
    ("calculate", SUM),
]


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_each_result_goes_to_the_call_of_the_turn_before_it_when_ids_repeat(fmt):
    canonical = to_canonical(openai_run())
    if fmt == "anthropic":  # the same run in canonical Anthropic form
        canonical = to_canonical({"messages": canonical["messages"]})

    calls = iter_tool_calls(canonical["messages"])

    assert [(c["name"], c["result"]) for c in calls] == EXPECTED
    assert [c["id"] for c in calls] == ["call_0", "call_0", "call_1", "call_0"]  # kept as sent
    assert [c["step"] for c in calls] == [1, 3, 3, 4]


def test_a_run_cut_at_a_step_limit_leaves_its_last_call_unanswered():
    canonical = to_canonical(openai_run(cut_at_step_limit=True))

    exchanges = pair_tool_results(canonical["messages"])

    assert [(e.name, e.content) for e in exchanges][:4] == EXPECTED
    assert exchanges[-1].name == "update_reservation_baggages" and exchanges[-1].result is None


def test_a_result_out_of_its_turn_falls_back_to_the_id():
    messages = [
        {"role": "user", "content": [text("go")]},
        {"role": "assistant", "content": [tool_use("a", {}, id="x"), tool_use("b", {}, id="y")]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "A"}]},
        {"role": "assistant", "content": [text("waiting")]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "y", "content": "B"}]},
    ]

    assert [(e.name, e.content) for e in pair_tool_results(messages)] == [("a", "A"), ("b", "B")]


def test_repeated_ids_are_accepted_on_ingest_and_kept_as_sent(api, agent):
    response = api.post(
        "/api/v1/runs",
        {"agent": agent.slug, "external_id": "airline-1", "status": "success", **openai_run()},
        format="json",
    )

    assert response.status_code == 201, response.content
    run = Run.objects.get(external_id="airline-1")
    ids = [b["id"] for m in run.messages for b in m["content"] if b["type"] == "tool_use"]
    assert ids == ["call_0", "call_0", "call_1", "call_0"]
    exported = to_openai({"messages": run.messages})["messages"]
    assert [m["tool_call_id"] for m in exported if m["role"] == "tool"] == ids
    assert run.step_count == len(step_message_indices(run.messages)) == 7


def test_replay_answers_a_reused_id_with_its_own_recorded_result(agent, fake_gateway_settings):
    run = RunFactory(agent=agent, messages=to_canonical(openai_run())["messages"])
    version = ConfigVersionFactory(agent=agent, number=2)
    fake_gateway_settings.queue(
        *[
            FakeAnthropic.message(blocks)
            for blocks in (
                [text("Sure, what is your user id?")],
                [tool_use("get_user_details", {"user_id": "mia_li_3668"}, id="call_0")],
                [text("Which reservation?")],
            )
        ]
    )

    result = replay(run, version)

    profile = result.messages[4]["content"][0]
    assert profile["content"] == PROFILE  # not the calculator's "1628.0"


def test_dreamer_summaries_pair_results_by_position_and_keep_the_failing_steps_results(agent):
    run = RunFactory(agent=agent, status="failure", messages=to_canonical(openai_run())["messages"])

    summary = prompts.run_summary(run, focus_steps={4})

    by_tool = {c["tool"]: c for s in summary["steps"] for c in s.get("calls", [])}
    assert by_tool["get_user_details"]["result"] == PROFILE
    assert by_tool["calculate"]["result"] == SUM
    # The reservation (read by step 4) is kept whole, not clipped to a few hundred characters.
    assert by_tool["get_reservation_details"]["result"] == RESERVATION
    assert len(RESERVATION) > 400


def _marked_message(html: str, prefix: str) -> int:
    match = re.search(
        rf'id="{prefix}-(\d+)">\s*<div class="msg-role">[^<]*<span class="muted">#\d+</span> '
        rf'<span class="pill pill-warn" id="{prefix}-divergence"',
        html,
    )
    assert match, f"no divergence marker for {prefix}"
    return int(match.group(1))


def test_the_run_page_marks_a_diagnosed_step_on_its_message(client, owner, agent):
    messages = to_canonical(openai_run())["messages"]
    run = RunFactory(agent=agent, messages=messages)
    client.force_login(owner)

    html = client.get(f"/runs/{run.pk}/?step=3").content.decode()

    # Step 3 is the assistant turn with two tool calls, message 7 (message 3 is another turn).
    assert _marked_message(html, "m") == message_index_of_step(messages, 3) == 7


def test_the_replay_page_marks_each_divergence_on_the_right_message(client, owner, agent):
    messages = to_canonical(openai_run())["messages"]
    experiment = ExperimentFactory(proposal__agent=agent)
    run = RunFactory(agent=agent, messages=messages)

    def reworded_at(step: int) -> list:
        # The replay leaves the recording at this step: its assistant message there differs.
        changed = copy.deepcopy(messages)
        at = message_index_of_step(changed, step)
        changed[at]["content"] = [*changed[at]["content"], {"type": "text", "text": "Reworded."}]
        return changed

    ReplayFactory(experiment=experiment, run=run, messages=reworded_at(4), divergence_step=4)
    ReplayFactory(
        experiment=experiment,
        run=run,
        arm="baseline",
        messages=reworded_at(2),
        divergence_step=2,
    )
    client.force_login(owner)

    html = client.get(f"/proposals/{experiment.proposal_id}/replays/{run.pk}/").content.decode()

    assert _marked_message(html, "cand") == message_index_of_step(messages, 4) == 9
    assert _marked_message(html, "base") == message_index_of_step(messages, 2) == 5
