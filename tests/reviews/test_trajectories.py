"""The replay view aligns recorded, baseline and candidate turn by turn, marks each replay's first
divergence on the message that differs, and collapses identical stretches."""

import pytest
from django.urls import reverse

from dreams.models import Experiment, Replay
from reviews.trajectories import align, turns
from tests.factories import ReplayFactory, RunFactory, reviewable_proposal


def user(text):
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def call(text, name, args, tool_id="call_0"):
    # Tool-call ids are reused across turns (OpenAI agents send call_0 every turn).
    return {
        "role": "assistant",
        "content": [
            {"type": "text", "text": text},
            {"type": "tool_use", "id": tool_id, "name": name, "input": args},
        ],
    }


def result(content, tool_id="call_0"):
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": content}],
    }


def say(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


RECORDED = [
    user("Hi, my order A-1 arrived broken."),
    call("Let me look.", "lookup_order", {"order_id": "A-1"}),
    result('{"status": "delivered", "days": 3}'),
    say("Sorry! Do you want a refund or a replacement?"),
    user("A refund please."),
    call("Checking the policy.", "check_refund_policy", {"order_id": "A-1"}),
    result(""),  # an empty tool result
    call("Refunding now.", "issue_refund", {"order_id": "A-1"}),
    result("x" * 2000),  # a long tool result
    say("Done: refunded."),
    user("Thanks!"),
    say("You're welcome."),
]


def candidate():
    # Same first turns (fresh tool ids), then a different call at step 3: the candidate asks first.
    messages = [dict(m) for m in RECORDED[:7]]
    messages[1] = call("Let me look.", "lookup_order", {"order_id": "A-1"}, tool_id="toolu_9")
    messages[2] = result('{"status": "delivered", "days": 3}', tool_id="toolu_9")
    messages.append(say("Before I refund: can you send a photo of the damage?"))
    return messages


def test_turns_follow_the_step_message_mapping():
    assert turns(RECORDED) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]


def test_the_first_divergence_is_the_message_that_differs_not_the_step_start():
    alignment = align(RECORDED, {"baseline": list(RECORDED), "candidate": candidate()})
    assert alignment.divergence == {"baseline": None, "candidate": 7}
    assert alignment.divergence_step == {"baseline": None, "candidate": 3}
    # Steps 0–2 are the same in all three columns (ids aside) and collapse; step 3 differs.
    first = alignment.stretches[0]
    assert first.collapsed and [r.step for r in first.rows] == [0, 1]
    open_rows = [r for s in alignment.stretches if not s.collapsed for r in s.rows]
    assert [r.step for r in open_rows][:2] == [2, 3] and open_rows[0].identical
    step3 = next(r for r in open_rows if r.step == 3)
    assert not step3.identical
    assert step3.cells["candidate"].divergence == 7 and step3.cells["recorded"].divergence is None
    # The candidate stopped earlier: later turns have no candidate cell.
    assert next(r for r in open_rows if r.step == 5).cells["candidate"] is None


@pytest.mark.django_db
def test_the_replay_view_renders_aligned_rows(client, reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    experiment = Experiment.objects.filter(proposal=proposal).latest("id")
    run = RunFactory(agent=agent, messages=RECORDED, external_id="aligned-run")
    ReplayFactory(experiment=experiment, run=run, arm=Replay.Arm.BASELINE, messages=list(RECORDED))
    ReplayFactory(experiment=experiment, run=run, messages=candidate(), divergence_step=3)
    client.force_login(reviewer)

    html = client.get(reverse("replay-detail", args=[proposal.pk, run.pk])).content.decode()
    assert html.count('class="traj-row') == 1 + 6  # the heads and one row per step
    assert '<details class="traj-stretch">' in html and "Steps 0–1 are identical" in html
    assert 'id="cand-7">' in html.split("first divergence")[0][-800:]
    assert html.count("first divergence") == 1
