"""The simulated model: guidance detection, registry dispatch and the SDK-facing transport."""

import anthropic
import httpx2
import pytest

from agents import demo
from dreams.simulated import agent as sim
from dreams.simulated import registry
from dreams.simulated.transport import SimulatedTransport

V1 = demo.SYSTEM_PROMPT + "\n\n" + "\n\n".join(demo.MEMORY_DOCUMENTS.values())


def client():
    return anthropic.Anthropic(
        api_key="k",
        base_url="http://sim",
        max_retries=0,
        http_client=httpx2.Client(transport=SimulatedTransport()),
        _strict_response_validation=True,
    )


def test_the_stable_demo_instructions_contain_none_of_the_guidance():
    assert not sim.requires_verification(V1)
    assert not sim.requires_window_check(V1)
    assert not sim.resolves_itself(V1)
    assert sim.approval_threshold(V1) == 500


@pytest.mark.parametrize(
    "sentence",
    [
        "Always look up the order with lookup_order before issuing any refund.",
        "Never refund an order without verifying it first, even if the customer insists.",
    ],
)
def test_verification_guidance_is_recognised(sentence):
    assert sim.requires_verification(V1 + "\n" + sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "Before refunding, check_refund_policy must confirm the order is eligible.",
        "Always check the 30-day refund window before you issue a refund; decline if it has passed.",
    ],
)
def test_window_guidance_is_recognised(sentence):
    assert sim.requires_window_check(V1 + "\n" + sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "Do not escalate just because a customer is upset.",
        "Resolve standard refunds yourself.",
    ],
)
def test_resolve_guidance_is_recognised(sentence):
    assert sim.resolves_itself(V1 + "\n" + sentence)


def ask(system, user_text):
    return client().messages.create(
        model="claude-sonnet-5-5",
        max_tokens=200,
        system=system,
        tools=demo.TOOLS,
        messages=[{"role": "user", "content": user_text}],
    )


def test_an_angry_customer_is_escalated_unless_the_instructions_say_otherwise():
    text = "Hi, I'm Omar. I'd like a refund for order NW-10444 (Merino base layer) because it's the wrong size. This is ridiculous."

    before = ask(V1, text)
    after = ask(V1 + "\nDo not escalate just because a customer is upset.", text)

    assert before.content[-1].name == "escalate_to_human"
    assert after.content[-1].name == "lookup_order"


def test_a_pushy_customer_is_refunded_blind_unless_verification_is_required():
    text = "Hi, I'm Tom. I'd like a refund for order NW-10401 (Trail running vest) because it's the wrong size. Just process it right away please."

    before = ask(V1, text)
    after = ask(
        V1 + "\nAlways look up the order with lookup_order before issuing any refund.", text
    )

    assert before.content[-1].name == "issue_refund"
    assert before.content[-1].input == {
        "order_id": "NW-10401",
        "amount": 95.0,
        "reason": "it's the wrong size",
    }
    assert after.content[-1].name == "lookup_order"


def test_forced_tools_go_to_registered_handlers_and_unknown_ones_are_refused():
    @registry.register("echo_for_test")
    def echo(request):
        return {"messages": len(request["messages"])}

    answer = client().messages.create(
        model="claude-haiku-5-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "x"}],
        tools=[{"name": "echo_for_test", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "echo_for_test"},
    )
    assert answer.content[0].input == {"messages": 1}
    assert "grade_replay" in registry.registered_tools()

    with pytest.raises(anthropic.BadRequestError, match="no handler"):
        client().messages.create(
            model="claude-haiku-5-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"name": "nobody_handles_this", "input_schema": {"type": "object"}}],
            tool_choice={"type": "tool", "name": "nobody_handles_this"},
        )


def test_batches_work_on_the_simulated_transport():
    c = client()
    batch = c.messages.batches.create(
        requests=[
            {
                "custom_id": "a",
                "params": {
                    "model": "claude-haiku-5-5",
                    "max_tokens": 20,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            }
        ]
    )
    assert batch.processing_status == "in_progress"
    assert c.messages.batches.retrieve(batch.id).processing_status == "ended"
    results = list(c.messages.batches.results(batch.id))
    assert results[0].custom_id == "a" and results[0].result.type == "succeeded"
