"""The model gateway through the real SDK: simulated backend and the loopback fake server."""

import asyncio
from decimal import Decimal

import anthropic
import pytest

from agents.pricing import cost_of
from dreams.llm import BudgetExceeded, ModelRequestError, ModelUnavailable, get_gateway
from dreams.models import DreamCycle, ModelCall
from tests.fake_anthropic import FakeAnthropic, Scripted, text, tool_use

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "Hello"}]


def test_simulated_backend_answers_through_the_sdk_and_records_the_call(agent):
    message = get_gateway().create_message(
        agent=agent, purpose="dream", messages=HELLO, max_tokens=50
    )

    assert isinstance(message, anthropic.types.Message)
    call = ModelCall.objects.get(agent=agent)
    assert call.backend == "simulated" and call.ok and call.purpose == "dream"
    assert call.input_tokens == message.usage.input_tokens > 0
    # Simulated tokens are counted (budgets hold) but priced at $0: nothing was spent.
    assert call.cost_usd == 0
    assert cost_of(message.model, {"input_tokens": call.input_tokens}) > 0


def test_retries_on_529_then_succeeds(agent, fake_gateway_settings):
    fake = fake_gateway_settings
    fake.fail(2, status=529)
    fake.queue(FakeAnthropic.message([text("Back again.")]))

    message = get_gateway().create_message(agent=agent, purpose="replay", messages=HELLO)

    assert message.content[0].text == "Back again."
    assert [r.headers["x-stainless-retry-count"] for r in fake.message_requests] == ["0", "1", "2"]
    call = ModelCall.objects.get(agent=agent)
    assert call.ok and call.backend == "anthropic" and call.input_tokens == 10


def test_exhausted_retries_raise_model_unavailable_and_record_the_failure(
    agent, fake_gateway_settings
):
    fake_gateway_settings.fail(3, status=529)

    with pytest.raises(ModelUnavailable, match="529"):
        get_gateway().create_message(agent=agent, purpose="replay", messages=HELLO)

    assert len(fake_gateway_settings.message_requests) == 3  # 1 try + 2 retries
    call = ModelCall.objects.get(agent=agent)
    assert call.ok is False and "Overloaded" in call.error and call.total_tokens == 0


def test_a_refused_request_is_not_retried(agent, fake_gateway_settings):
    fake_gateway_settings.fail(1, status=400, message="max_tokens too large")

    with pytest.raises(ModelRequestError, match="400"):
        get_gateway().create_message(agent=agent, purpose="replay", messages=HELLO)
    assert len(fake_gateway_settings.message_requests) == 1


def test_monthly_budget_guard_refuses_before_any_request(agent, fake_gateway_settings):
    agent.monthly_token_budget = 5_000
    agent.save(update_fields=["monthly_token_budget"])
    ModelCall.objects.create(
        agent=agent, purpose="replay", model="claude-sonnet-5-5", input_tokens=4_500
    )

    with pytest.raises(BudgetExceeded, match="monthly budget"):
        get_gateway().create_message(agent=agent, purpose="replay", messages=HELLO, max_tokens=1000)

    assert fake_gateway_settings.message_requests == []
    assert ModelCall.objects.filter(agent=agent).count() == 1


def test_cycle_budget_guard_counts_only_that_cycle(agent, fake_gateway_settings):
    agent.cycle_token_budget = 2_000
    agent.save(update_fields=["cycle_token_budget"])
    spent = DreamCycle.objects.create(agent=agent, trigger="manual", status="succeeded")
    fresh = DreamCycle.objects.create(agent=agent, trigger="manual")
    ModelCall.objects.create(
        agent=agent, purpose="dream", cycle=spent, model="m", output_tokens=1_900
    )

    with pytest.raises(BudgetExceeded, match="cycle budget"):
        get_gateway().create_message(
            agent=agent, purpose="dream", cycle=spent, messages=HELLO, max_tokens=200
        )
    get_gateway().create_message(
        agent=agent, purpose="dream", cycle=fresh, messages=HELLO, max_tokens=200
    )

    fresh.refresh_from_db()
    assert fresh.tokens_used > 0 and fresh.cost_usd > 0


def test_cached_prefix_marks_system_and_tools_and_is_read_back(agent, fake_gateway_settings):
    tools = [
        {"name": "a", "input_schema": {"type": "object"}},
        {"name": "b", "input_schema": {"type": "object"}},
    ]
    for _ in range(2):
        get_gateway().create_message(
            agent=agent,
            purpose="replay",
            system="Be brief.",
            tools=tools,
            messages=HELLO,
            cache_prefix=True,
        )

    body = fake_gateway_settings.message_requests[0].body
    assert body["system"] == [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
    ]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    first, second = ModelCall.objects.filter(agent=agent).order_by("id")
    assert first.cache_write_tokens > 0 and first.cache_read_tokens == 0
    assert second.cache_read_tokens == first.cache_write_tokens and second.cache_write_tokens == 0


def test_structured_forces_the_tool_and_returns_its_input(agent, fake_gateway_settings):
    fake_gateway_settings.queue(
        FakeAnthropic.message([tool_use("grade_replay", {"verdict": "pass", "reason": "ok"})])
    )

    answer = get_gateway().structured(
        agent=agent,
        purpose="judge",
        tool_name="grade_replay",
        input_schema={"type": "object"},
        system="Grade it.",
        messages=HELLO,
    )

    assert answer == {"verdict": "pass", "reason": "ok"}
    body = fake_gateway_settings.message_requests[0].body
    assert body["tool_choice"] == {"type": "tool", "name": "grade_replay"}
    assert body["model"] == "claude-haiku-5-5"


def test_async_create_message_records_the_call(agent, fake_gateway_settings):
    from asgiref.sync import async_to_sync

    fake_gateway_settings.fail(1)
    gateway = get_gateway()

    async def go():
        try:
            results = await asyncio.gather(
                *(
                    gateway.acreate_message(agent=agent, purpose="replay", messages=HELLO)
                    for _ in range(3)
                )
            )
        finally:
            await gateway.aclose()
        return results

    messages = async_to_sync(go)()

    assert len(messages) == 3
    assert ModelCall.objects.filter(agent=agent, ok=True).count() == 3
    assert len(fake_gateway_settings.message_requests) == 4


def test_batch_path_polls_until_ended_and_bills_half_price(agent, fake_gateway_settings):
    fake = fake_gateway_settings
    fake.batch_polls = 3

    answers = get_gateway().run_batch(
        agent=agent,
        purpose="replay",
        requests={
            "r1": {"messages": HELLO},
            "r2": {"messages": [{"role": "user", "content": "Hi again"}]},
        },
    )

    assert set(answers) == {"r1", "r2"}
    assert all(isinstance(m, anthropic.types.Message) for m in answers.values())
    paths = [(r.method, r.path) for r in fake.requests]
    assert paths.count(("POST", "/v1/messages/batches")) == 1
    assert sum(1 for m, p in paths if m == "GET" and p.count("/") == 4) >= 3  # polled
    calls = ModelCall.objects.filter(agent=agent)
    assert calls.count() == 2
    for call in calls:
        full = cost_of(
            call.model, {"input_tokens": call.input_tokens, "output_tokens": call.output_tokens}
        )
        assert call.cost_usd == (full * Decimal("0.5")).quantize(Decimal("0.000001"))


def test_batch_path_on_the_simulated_backend(agent):
    answers = get_gateway().run_batch(
        agent=agent, purpose="dream", requests={"x": {"messages": HELLO}}, poll_seconds=0
    )
    assert isinstance(answers["x"], anthropic.types.Message)


def test_slow_answers_time_out_into_model_unavailable(agent, fake_gateway_settings, settings):
    settings.REVERIE_MODEL_TIMEOUT = 0.2
    settings.REVERIE_MODEL_MAX_RETRIES = 0
    fake_gateway_settings.queue(Scripted(body=FakeAnthropic.message([text("late")]), delay=0.6))

    with pytest.raises(ModelUnavailable, match="Timeout"):
        get_gateway().create_message(agent=agent, purpose="replay", messages=HELLO)
    assert ModelCall.objects.get(agent=agent).ok is False


def test_default_models_are_current_and_priced(settings):
    from anthropic.resources.messages.messages import DEPRECATED_MODELS

    for model in (
        settings.REVERIE_DREAM_MODEL,
        settings.REVERIE_REPLAY_MODEL,
        settings.REVERIE_JUDGE_MODEL,
    ):
        assert model not in DEPRECATED_MODELS
        assert model in settings.REVERIE_MODEL_PRICES
