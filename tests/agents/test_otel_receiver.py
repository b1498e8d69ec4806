"""The OTLP/HTTP answers: formats, idempotency, late spans and settling, bad input, load shedding."""

import base64
import gzip
from datetime import timedelta

import orjson
import pytest
from django.utils import timezone
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.models import ApiKey, Run
from agents.otel import services, views
from agents.otel.models import CapturedTrace, TraceSpans
from tests.factories import ConfigVersionFactory
from tests.fake_anthropic import FakeAnthropic, text
from tests.otel_support import anthropic_client, provider, support_conversation


@pytest.fixture
def fake_anthropic():
    with FakeAnthropic() as fake:
        yield fake


URL = "/api/otel/v1/traces"
PROTOBUF = "application/x-protobuf"


@pytest.fixture
def recorded(fake_anthropic):
    """Real SDK spans of a support conversation, kept in memory."""
    exporter = InMemorySpanExporter()
    tracer_provider = provider(exporter, **{"service.name": "support"})
    support_conversation(
        anthropic_client(fake_anthropic, tracer_provider), fake_anthropic, tracer_provider
    )
    return exporter.get_finished_spans()


def protobuf(spans) -> bytes:
    return encode_spans(spans).SerializeToString()


def otlp_json(spans) -> bytes:
    """OTLP JSON as the spec writes it: camelCase, hex trace and span ids."""
    document = json_format.MessageToDict(encode_spans(spans))
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(document)


def post(client, api_key, body, *, content_type=PROTOBUF, **headers):
    return client.post(
        URL, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {api_key}", **headers
    )


def partial_success(response) -> tuple[int, str]:
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    return answer.partial_success.rejected_spans, answer.partial_success.error_message


@pytest.mark.django_db
def test_a_protobuf_export_is_answered_with_an_export_response(client, agent, api_key, recorded):
    response = post(client, api_key, protobuf(recorded))

    assert response.status_code == 200
    assert response["Content-Type"] == PROTOBUF
    rejected, message = partial_success(response)
    assert rejected == 0
    assert "1 span(s) were not GenAI spans" in message  # the application's own parent span
    run = Run.objects.get(agent=agent)
    assert run.step_count == 4


@pytest.mark.django_db
def test_otlp_json_with_hex_ids_and_gzip_is_accepted(client, agent, api_key, recorded):
    body = gzip.compress(otlp_json(recorded))

    response = post(
        client, api_key, body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    run = Run.objects.get(agent=agent)
    assert run.external_id == f"otel:trace:{recorded[0].context.trace_id:032x}"
    assert run.step_count == 4


@pytest.mark.django_db
def test_resending_a_batch_creates_nothing(client, agent, api_key, recorded):
    post(client, api_key, protobuf(recorded))
    before = Run.objects.get(agent=agent)

    response = post(client, api_key, protobuf(recorded))

    assert response.status_code == 200
    assert partial_success(response)[0] == 0
    assert (
        Run.objects.count() == 1
        and sum(TraceSpans.objects.values_list("span_count", flat=True)) == len(recorded) - 1
    )
    assert TraceSpans.objects.count() == 1  # one buffer row per trace, not per span
    after = Run.objects.get(agent=agent)
    assert after.messages == before.messages and after.input_tokens == before.input_tokens


@pytest.mark.django_db
def test_late_spans_extend_the_run_until_it_settles(client, agent, api_key, recorded, settings):
    settings.REVERIE_OTLP_SETTLE_SECONDS = 60
    chats = [s for s in recorded if s.name == "anthropic.messages.create"]
    post(client, api_key, protobuf(chats[:2]))
    assert Run.objects.get(agent=agent).step_count == 2

    post(client, api_key, protobuf(chats[2:3]))  # a late span, within the quiet period

    run = Run.objects.get(agent=agent)
    assert run.step_count == 3 and Run.objects.count() == 1

    CapturedTrace.objects.update(last_received_at=timezone.now() - timedelta(seconds=61))
    response = post(client, api_key, protobuf(chats[3:]))  # after it settled

    rejected, message = partial_success(response)
    assert rejected == 1 and "settled" in message
    assert Run.objects.get(agent=agent).step_count == 3


@pytest.mark.django_db
def test_settling_marks_quiet_runs_final(client, agent, api_key, recorded, settings):
    settings.REVERIE_OTLP_SETTLE_SECONDS = 60
    post(client, api_key, protobuf(recorded))

    assert services.settle_traces(now=timezone.now()) == 0
    assert services.settle_traces(now=timezone.now() + timedelta(seconds=61)) == 1

    assert Run.objects.get(agent=agent).metadata["otel"]["settled"] is True
    assert CapturedTrace.objects.get().settled_at is not None


@pytest.mark.django_db
def test_an_error_status_makes_an_error_run(client, agent, api_key, fake_anthropic):
    exporter = InMemorySpanExporter()
    tracer_provider = provider(exporter, **{"service.name": "support"})
    sdk = anthropic_client(fake_anthropic, tracer_provider)
    fake_anthropic.fail(1, status=529)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK's overloaded error
        sdk.messages.create(
            model="claude-sonnet-5-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )

    post(client, api_key, protobuf(exporter.get_finished_spans()))

    run = Run.objects.get(agent=agent)
    assert run.status == Run.Status.ERROR
    assert "overloaded_error" in run.outcome_reason


@pytest.mark.django_db
def test_the_agent_and_version_come_from_resource_attributes(
    client, agent, api_key, fake_anthropic
):
    ConfigVersionFactory(agent=agent, number=2)
    exporter = InMemorySpanExporter()
    tracer_provider = provider(
        exporter, **{"service.name": "web", "reverie.agent": "support", "reverie.config_version": 2}
    )
    fake_anthropic.queue(fake_anthropic.message([text("ok")]))
    anthropic_client(fake_anthropic, tracer_provider).messages.create(
        model="claude-sonnet-5-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )

    post(client, api_key, protobuf(exporter.get_finished_spans()))

    assert Run.objects.get(agent=agent).config_version.number == 2


@pytest.mark.django_db
def test_an_unknown_agent_is_a_partial_success_naming_it(client, agent, api_key, recorded):
    spans = list(recorded)
    for span in spans:
        span._resource = span.resource.merge(type(span.resource)({"service.name": "nobody"}))

    response = post(client, api_key, protobuf(spans))

    rejected, message = partial_success(response)
    assert response.status_code == 200
    assert rejected == len(spans) - 1 and "unknown agent 'nobody'" in message
    assert not Run.objects.exists() and not TraceSpans.objects.exists()


@pytest.mark.django_db
def test_an_unknown_config_version_rejects_the_trace_whole(client, agent, api_key, fake_anthropic):
    exporter = InMemorySpanExporter()
    tracer_provider = provider(exporter, **{"service.name": "support", "reverie.config_version": 9})
    fake_anthropic.queue(fake_anthropic.message([text("ok")]))
    anthropic_client(fake_anthropic, tracer_provider).messages.create(
        model="claude-sonnet-5-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )

    response = post(client, api_key, protobuf(exporter.get_finished_spans()))

    rejected, message = partial_success(response)
    assert rejected == 1 and "config_version" in message and "no version 9" in message
    assert not TraceSpans.objects.exists() and not CapturedTrace.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"\xff\xff\xff not protobuf", PROTOBUF, "Malformed protobuf"),
        (b'{"resourceSpans": [', "application/json", "Malformed JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "application/json",
            "hex",
        ),
        (b'{"resourceSpans": "nope"}', "application/json", "must be a list"),
    ],
)
def test_a_malformed_body_is_a_400_with_a_status_message(
    client, agent, api_key, body, content_type, fragment
):
    response = post(client, api_key, body, content_type=content_type)

    assert response.status_code == 400
    assert fragment in response.content.decode(errors="replace")
    assert not TraceSpans.objects.exists()


@pytest.mark.django_db
def test_bad_gzip_is_a_400(client, agent, api_key):
    response = post(client, api_key, b"not gzip", HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 400


@pytest.mark.django_db
def test_oversized_bodies_are_413_even_when_compressed(client, agent, api_key, recorded, settings):
    settings.REVERIE_REQUEST_MAX_BYTES = 2048
    assert post(client, api_key, b"\x00" * 4096).status_code == 413

    bomb = gzip.compress(b"\x00" * 100_000)  # small on the wire, large once inflated
    response = post(client, api_key, bomb, HTTP_CONTENT_ENCODING="gzip")

    assert len(bomb) < 2048 and response.status_code == 413
    assert not TraceSpans.objects.exists()


@pytest.mark.django_db
def test_wrong_content_type_is_415_and_bad_key_is_401(client, agent, api_key, recorded):
    assert post(client, api_key, b"x", content_type="text/plain").status_code == 415
    response = post(client, "rv_wrong", protobuf(recorded))
    assert response.status_code == 401
    assert client.post(URL, protobuf(recorded), content_type=PROTOBUF).status_code == 401
    assert client.get(URL).status_code == 405


@pytest.mark.django_db
def test_load_is_shed_with_retry_after(client, agent, api_key, recorded, settings):
    settings.REVERIE_OTLP_MAX_CONCURRENT = 1
    settings.REVERIE_OTLP_RETRY_AFTER_SECONDS = 7
    key_id = ApiKey.objects.get().pk
    with views.LOAD.admit(key_id):  # this key already has an export in flight
        same_key = post(client, api_key, protobuf(recorded))
    with views.LOAD.admit(-1):  # someone else fills the receiver
        other = post(client, api_key, protobuf(recorded))

    assert (same_key.status_code, same_key["Retry-After"]) == (429, "7")
    assert (other.status_code, other["Retry-After"]) == (503, "7")
    assert post(client, api_key, protobuf(recorded)).status_code == 200
