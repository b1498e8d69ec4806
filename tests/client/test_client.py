"""reverie_client against a live Reverie (live_server) and the loopback fake Messages API."""

import asyncio
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx2
import pytest
from reverie_client import Reverie, wrap_anthropic

from agents import routing_api
from agents.models import Feedback, Run
from tests.factories import ConfigVersionFactory
from tests.fake_anthropic import FakeAnthropic, text, tool_use

pytestmark = pytest.mark.django_db(transaction=True)
QUESTION = [{"role": "user", "content": "Where is order A-17?"}]


@pytest.fixture
def fake_anthropic():
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def reverie(live_server, api_key):
    client = Reverie(live_server.url, api_key, flush_interval=0.01)
    yield client
    client.close()


def sdk(fake, cls=anthropic.Anthropic):
    http = httpx2.AsyncClient() if cls is anthropic.AsyncAnthropic else httpx2.Client()
    return cls(api_key="sk-test-fake", base_url=fake.url, max_retries=0, http_client=http)


class FlakyTransport(httpx2.HTTPTransport):
    """Reverie is down for the first `failures` requests, then back."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def handle_request(self, request):
        if self.failures > 0:
            self.failures -= 1
            raise httpx2.ConnectError("connection refused", request=request)
        return super().handle_request(request)


def test_calls_in_a_run_block_become_one_run_and_return_what_the_sdk_returns(
    reverie, agent, fake_anthropic
):
    client = wrap_anthropic(sdk(fake_anthropic), agent="support", reverie=reverie)
    fake_anthropic.queue(
        FakeAnthropic.message([text("Looking."), tool_use("lookup_order", {"order_id": "A-17"})]),
        FakeAnthropic.message(
            [text("It shipped.")], usage={"input_tokens": 40, "output_tokens": 7}
        ),
    )

    with reverie.run("support", external_id="ticket-1", user_brief="find order A-17") as run:
        first = client.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=QUESTION)
        history = [
            *QUESTION,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_fake_1", "content": "shipped"}
                ],
            },
        ]
        second = client.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=history)
        history.append({"role": "assistant", "content": second.content})  # the app mutates it
        run.fail("did not say when")
    assert reverie.flush()

    assert isinstance(first, anthropic.types.Message) and second.content[0].text == "It shipped."
    stored = Run.objects.get(agent=agent, external_id="ticket-1")
    assert stored.status == Run.Status.FAILURE and stored.outcome_reason == "did not say when"
    assert [m["role"] for m in stored.messages] == ["user", "assistant", "user", "assistant"]
    assert (stored.input_tokens, stored.output_tokens) == (50, 12)
    assert stored.metadata["user_brief"] == "find order A-17"
    assert "reverie-client" in stored.tags


def test_a_call_outside_a_run_is_a_run_of_its_own_and_feedback_follows_it(
    reverie, agent, fake_anthropic
):
    client = wrap_anthropic(sdk(fake_anthropic), agent="support", reverie=reverie)
    fake_anthropic.queue(FakeAnthropic.message([text("Hi.")]))

    with reverie.run("support", external_id="chat-9"):
        client.messages.create(model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION)
    reverie.feedback(agent="support", external_id="chat-9", rating="negative", comment="rude")
    client.messages.create(model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION)
    assert reverie.flush()

    assert Run.objects.filter(agent=agent).count() == 2
    assert Run.objects.filter(external_id__startswith="call-").count() == 1
    assert Feedback.objects.get().run.external_id == "chat-9"


def test_streams_are_captured_without_changing_them(reverie, agent, fake_anthropic):
    client = wrap_anthropic(sdk(fake_anthropic), agent="support", reverie=reverie)
    fake_anthropic.queue(
        FakeAnthropic.message([text("Streamed via create.")]),
        FakeAnthropic.message([text("Streamed via stream().")]),
    )

    with reverie.run("support", external_id="streams"):
        events = client.messages.create(
            model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION, stream=True
        )
        assert isinstance(events, anthropic.Stream)
        kinds = [event.type for event in events]
        with client.messages.stream(
            model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION
        ) as stream:
            final = stream.get_final_text()
    assert reverie.flush()

    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final == "Streamed via stream()."
    stored = Run.objects.get(external_id="streams")
    assert stored.messages[-1]["content"][0]["text"] == "Streamed via stream()."
    assert stored.output_tokens == 10  # 5 + 5, from both streams' message_delta


def test_the_async_client_is_captured_including_streams(reverie, agent, fake_anthropic):
    client = wrap_anthropic(
        sdk(fake_anthropic, anthropic.AsyncAnthropic), agent="support", reverie=reverie
    )
    fake_anthropic.queue(
        FakeAnthropic.message([text("Async hello.")]),
        FakeAnthropic.message([text("Async stream.")]),
    )

    async def loop():
        async with reverie.run("support", external_id="async-1") as run:
            reply = await client.messages.create(
                model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION
            )
            async with client.messages.stream(
                model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION
            ) as stream:
                streamed = await stream.get_final_text()
            run.succeed(score=1.0)
        return reply, streamed

    # A thread of its own: the browser tests leave an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        reply, streamed = pool.submit(asyncio.run, loop()).result()
    assert reverie.flush()

    assert reply.content[0].text == "Async hello." and streamed == "Async stream."
    stored = Run.objects.get(external_id="async-1")
    assert stored.status == Run.Status.SUCCESS and stored.score == 1.0


def test_nothing_is_lost_while_reverie_is_down_for_a_while(
    live_server, api_key, agent, fake_anthropic
):
    reverie = Reverie(
        live_server.url,
        api_key,
        flush_interval=0.01,
        retry_backoff=0.01,
        transport=FlakyTransport(3),
    )
    client = wrap_anthropic(sdk(fake_anthropic), agent="support", reverie=reverie)

    for i in range(5):
        with reverie.run("support", external_id=f"down-{i}"):
            client.messages.create(model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION)
    assert reverie.flush()
    reverie.close()

    assert Run.objects.filter(agent=agent).count() == 5
    assert reverie.dropped == 0


def test_when_reverie_stays_down_calls_succeed_and_runs_are_dropped_with_a_warning(fake_anthropic):
    reverie = Reverie(
        "http://127.0.0.1:9", "rv_x", max_retries=1, retry_backoff=0.01, flush_interval=0.01
    )
    client = wrap_anthropic(sdk(fake_anthropic), agent="support", reverie=reverie)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with reverie.run("support", external_id="lost"):
            reply = client.messages.create(
                model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION
            )
        assert reverie.flush()
    reverie.close()

    assert reply.content  # the caller got its answer
    assert reverie.dropped == 1
    assert any("dropped 1 item" in str(w.message) for w in caught)


def test_a_full_queue_drops_instead_of_blocking_the_caller(fake_anthropic):
    reverie = Reverie(
        "http://127.0.0.1:9",
        "rv_x",
        max_queue=2,
        batch_size=1,
        retry_backoff=5,
        flush_interval=0.01,
    )
    client = wrap_anthropic(sdk(fake_anthropic), agent="support", reverie=reverie)

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            client.messages.create(model="claude-sonnet-5-5", max_tokens=8, messages=QUESTION)
    elapsed = time.perf_counter() - started
    reverie.close(timeout=0)  # no need to wait out the retries

    assert elapsed < 2.0
    assert reverie.dropped >= 7  # 2 queued, 1 in the sender's hands


def test_config_is_cached_by_etag_and_tags_the_runs(reverie, agent, fake_anthropic, settings):
    settings.REVERIE_CONFIG_ROUTING_CACHE_SECONDS = 0
    routing_api.clear_caches()
    canary = ConfigVersionFactory(agent=agent, number=2)
    agent.canary_version, agent.canary_percent = canary, 100
    agent.save(update_fields=["canary_version", "canary_percent"])
    statuses = []
    reverie._http.event_hooks["response"].append(lambda r: statuses.append(r.status_code))
    client = wrap_anthropic(sdk(fake_anthropic), agent="support", reverie=reverie)
    fake_anthropic.queue(FakeAnthropic.message([text("canary answer")]))

    first = reverie.config("support", key="customer-42")
    again = reverie.config("support", key="customer-42")
    with reverie.run("support", external_id="routed"):
        client.messages.create(model=first["model"], max_tokens=8, messages=QUESTION)
    assert reverie.flush()

    assert (first["arm"], first["version"]) == ("canary", 2) and again == first
    assert statuses[:2] == [200, 304]
    assert Run.objects.get(external_id="routed").config_version == canary
