"""Replay engine: sandboxed tools in tiers, step limit, multi-turn feeding, divergence."""

import json

import pytest

from agents import demo
from dreams.replay import canonical_arguments, render_instructions, replay
from tests.factories import ConfigVersionFactory, RunFactory
from tests.fake_anthropic import FakeAnthropic, text, tool_use

pytestmark = pytest.mark.django_db

ORDER = {"order_id": "NW-10001", "amount": 79.0, "days_since_delivery": 40, "customer": "Maya"}
REFUND = {"order_id": "NW-10001", "amount": 79.0, "reason": "it's the wrong size"}


def recorded_messages():
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi, I'm Maya. Refund order NW-10001 please."}],
        },
        {
            "role": "assistant",
            "content": [tool_use("lookup_order", {"order_id": "NW-10001"}, id="tu_1")],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "tu_1", "content": json.dumps(ORDER)}
            ],
        },
        {"role": "assistant", "content": [tool_use("issue_refund", REFUND, id="tu_2")]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "tu_2", "content": '{"status": "issued"}'}
            ],
        },
        {"role": "assistant", "content": [text("All set, Maya.")]},
    ]


@pytest.fixture
def refunds_agent(agent):
    agent.write_tools = ["issue_refund", "escalate_to_human"]
    agent.sandbox_tools = {"check_refund_policy": "agents.demo.sandbox_check_refund_policy"}
    agent.save()
    return agent


@pytest.fixture
def version(refunds_agent):
    return ConfigVersionFactory(
        agent=refunds_agent,
        number=2,
        system_prompt="You are the refunds desk.",
        memory_documents={"b.md": "Second.", "a.md": "First."},
        tools=demo.TOOLS,
    )


@pytest.fixture
def run(refunds_agent):
    return RunFactory(
        agent=refunds_agent, messages=recorded_messages(), step_count=3, status="failure"
    )


def scripted(fake, *replies):
    fake.queue(*[FakeAnthropic.message(blocks) for blocks in replies])


def test_canonical_arguments_ignore_key_order_whitespace_and_number_form():
    assert canonical_arguments({"b": 1, "a": "x  y "}) == canonical_arguments(
        {"a": "x y", "b": 1.0}
    )
    assert canonical_arguments({"n": 1e2}) == canonical_arguments({"n": 100})
    assert canonical_arguments({"n": 12.50}) == canonical_arguments({"n": 12.5})
    assert canonical_arguments({"a": "x"}) != canonical_arguments({"a": "y"})
    assert canonical_arguments({"n": 1}) != canonical_arguments({"n": "1"})


def test_memory_documents_are_rendered_after_the_prompt_sorted_by_path(version):
    assert render_instructions(version) == (
        'You are the refunds desk.\n\n<memory path="a.md">\nFirst.\n</memory>\n\n'
        '<memory path="b.md">\nSecond.\n</memory>'
    )


def test_reordered_arguments_get_the_recorded_results(run, version, fake_gateway_settings):
    reordered = {"reason": "it's the wrong size", "amount": 79, "order_id": "NW-10001"}
    scripted(
        fake_gateway_settings,
        [tool_use("lookup_order", {"order_id": "NW-10001"})],
        [tool_use("issue_refund", reordered, id="toolu_2")],
        [text("Refunded.")],
    )

    result = replay(run, version)

    assert [c["source"] for c in result.tool_calls] == ["recording", "recording"]
    assert not result.off_recording and not result.unverifiable
    assert result.divergence_kind == "" and result.stop_reason == "end_turn"
    assert result.messages[2]["content"][0]["content"] == json.dumps(ORDER)
    sent = fake_gateway_settings.message_requests[0].body
    assert sent["system"][0]["text"].startswith("You are the refunds desk.")
    assert sent["messages"] == [recorded_messages()[0]]


def test_a_read_only_call_with_new_arguments_goes_off_recording(
    run, version, fake_gateway_settings
):
    scripted(
        fake_gateway_settings,
        [tool_use("lookup_order", {"order_id": "NW-99999"})],
        [text("Sorry.")],
    )

    result = replay(run, version)

    answer = result.messages[2]["content"][0]
    assert answer["is_error"] is True and "not available in replay" in answer["content"]
    assert result.off_recording and not result.unverifiable
    assert (result.divergence_step, result.divergence_kind) == (0, "arguments")


def test_a_registered_sandbox_tool_answers_a_new_read_only_call(
    run, version, fake_gateway_settings
):
    scripted(
        fake_gateway_settings,
        [tool_use("lookup_order", {"order_id": "NW-10001"})],
        [tool_use("check_refund_policy", {"order_id": "NW-10001"}, id="toolu_2")],
        [text("Outside the window, sorry.")],
    )

    result = replay(run, version)

    policy = json.loads(result.messages[4]["content"][0]["content"])
    assert policy["eligible"] is False and "30 days" in policy["reason"]
    assert [c["source"] for c in result.tool_calls] == ["recording", "sandbox"]
    assert not result.off_recording and result.divergence_kind == "tool"


def test_a_write_tool_with_new_arguments_stops_the_replay_unverifiable(
    run, version, fake_gateway_settings
):
    scripted(
        fake_gateway_settings,
        [tool_use("lookup_order", {"order_id": "NW-10001"})],
        [tool_use("issue_refund", {**REFUND, "amount": 10}, id="toolu_2")],
        [text("never sent")],
    )

    result = replay(run, version)

    assert result.unverifiable and result.stop_reason == "unverifiable_write"
    assert result.messages[-1]["role"] == "assistant"  # no result was invented for the write
    assert len(fake_gateway_settings.message_requests) == 2


def test_the_replay_stops_at_the_recorded_steps_plus_the_margin(
    run, version, fake_gateway_settings, settings
):
    settings.REVERIE_REPLAY_STEP_MARGIN = 2
    counter = iter(range(100))
    fake_gateway_settings.responder = lambda body: FakeAnthropic.message(
        [tool_use("lookup_order", {"order_id": f"X-{next(counter)}"})]
    )

    result = replay(run, version)

    assert result.stop_reason == "step_limit"
    assert result.steps == 3 + 2
    assert len(fake_gateway_settings.message_requests) == 5


@pytest.fixture
def two_turn_run(refunds_agent):
    messages = [
        {"role": "user", "content": [text("Where is order NW-1?")]},
        {
            "role": "assistant",
            "content": [tool_use("lookup_order", {"order_id": "NW-1"}, id="tu_1")],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "shipped"}],
        },
        {"role": "assistant", "content": [text("It shipped yesterday.")]},
        {"role": "user", "content": [text("Thanks! Can you refund NW-2 too?")]},
        {"role": "assistant", "content": [text("Let me check.")]},
    ]
    return RunFactory(agent=refunds_agent, messages=messages, step_count=3)


def test_later_user_turns_are_fed_while_the_replay_is_on_the_recording(
    two_turn_run, version, fake_gateway_settings
):
    scripted(
        fake_gateway_settings,
        [tool_use("lookup_order", {"order_id": "NW-1"})],
        [text("Shipped.")],
        [text("Checking NW-2.")],
    )

    result = replay(two_turn_run, version)

    third = fake_gateway_settings.message_requests[2].body["messages"]
    assert third[-1] == {"role": "user", "content": [text("Thanks! Can you refund NW-2 too?")]}
    assert result.stop_reason == "end_turn" and result.steps == 3


def test_a_replay_that_diverged_stops_before_the_next_user_turn_without_a_simulated_user(
    two_turn_run, version, fake_gateway_settings
):
    two_turn_run.agent.simulated_user = False
    two_turn_run.agent.save(update_fields=["simulated_user"])
    scripted(fake_gateway_settings, [text("I can't look orders up.")], [text("never sent")])

    result = replay(two_turn_run, version)

    assert result.stop_reason == "diverged_before_turn"
    assert len(fake_gateway_settings.message_requests) == 1
    assert (result.divergence_step, result.divergence_kind) == (0, "missing")
    assert all("NW-2" not in json.dumps(m) for m in result.messages)


def test_model_failure_ends_the_replay_with_the_error(run, version, fake_gateway_settings):
    fake_gateway_settings.fail(3)

    result = replay(run, version)

    assert result.stop_reason == "error" and "ModelUnavailable" in result.error


def test_replay_runs_on_the_simulated_backend_by_default(run, version):
    result = replay(run, version)

    # Without window guidance the simulated agent refunds like the recording did.
    assert [c["name"] for c in result.tool_calls] == ["lookup_order", "issue_refund"]
    assert result.usage["input_tokens"] > 0 and result.cost_usd == 0  # simulated: $0


def test_a_broken_sandbox_tool_is_an_error_result_not_a_crash(
    run, version, refunds_agent, fake_gateway_settings
):
    refunds_agent.sandbox_tools = {"check_refund_policy": "nowhere.missing_function"}
    refunds_agent.save()
    run.agent.refresh_from_db()
    scripted(
        fake_gateway_settings,
        [tool_use("check_refund_policy", {"order_id": "NW-10001"})],
        [text("Sorry.")],
    )

    result = replay(run, version)

    assert result.tool_calls[0]["source"] == "sandbox_error"
    assert result.off_recording and result.messages[2]["content"][0]["is_error"] is True


@pytest.mark.parametrize("stop", ["max_tokens", "refusal"])
def test_a_cut_or_refused_turn_ends_the_replay_with_the_models_stop_reason(
    stop, run, version, fake_gateway_settings
):
    fake_gateway_settings.queue(
        FakeAnthropic.message([text("Let me look up your ord")], stop_reason=stop)
    )

    result = replay(run, version)

    assert (result.stop_reason, result.model_stop_reason) == (stop, stop)
    assert result.steps == 1 and len(fake_gateway_settings.message_requests) == 1
