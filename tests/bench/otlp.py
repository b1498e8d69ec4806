"""Capture paths: OTLP ingest vs the runs API, and the client wrapper's cost.

Run: `.venv/bin/python tests/bench/otlp.py [--smoke]`. Serves Reverie in-process (threaded WSGI on
127.0.0.1, its own SQLite file, or BENCH_DATABASE_URL — dropped and re-created when it names
PostgreSQL) and the loopback fake Messages API. Prints:

  otlp_ingest: runs/s of N traces (4 real SDK chat spans each, protobuf + gzip, B traces a request)
  runs_api_ingest: runs/s of the same runs through POST /api/v1/runs, same batch size (baseline)
  otlp_vs_runs_api: the ratio (aim >= 0.5)
  wrap_overhead_p50: wrapped minus unwrapped messages.create p50 against the fake (aim <= 1 ms)
  calls_lost_while_down: calls made while Reverie refused connections for a while, not stored

Knobs: BENCH_TRACES (2000), BENCH_BATCH (50), BENCH_CALLS (1000), BENCH_DOWN_SECONDS (2).
"""

import copy
import gzip
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from socketserver import ThreadingMixIn
from statistics import median
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench._bench import figure, smoke_sizes  # noqa: E402

smoke_sizes(BENCH_TRACES=20, BENCH_BATCH=10, BENCH_CALLS=50, BENCH_DOWN_SECONDS=0.5)
TRACES = int(os.environ.get("BENCH_TRACES", "2000"))
BATCH = int(os.environ.get("BENCH_BATCH", "50"))
CALLS = int(os.environ.get("BENCH_CALLS", "1000"))
DOWN_SECONDS = float(os.environ.get("BENCH_DOWN_SECONDS", "2"))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["REVERIE_VAR_DIR"] = tempfile.mkdtemp(prefix="reverie-bench-otlp-")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
os.environ["REVERIE_OTLP_MAX_CONCURRENT"] = "64"


class _Quiet(WSGIRequestHandler):
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def prepare_database():
    import django
    from django.conf import settings

    if os.environ.get("BENCH_DATABASE_URL", "").startswith("postgres"):
        import psycopg

        name = settings.DATABASES["default"]["NAME"]
        with psycopg.connect(
            os.environ["BENCH_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> None:
    prepare_database()
    import anthropic
    import httpx2
    import orjson
    from django.core.wsgi import get_wsgi_application
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from reverie_client import Reverie, wrap_anthropic

    from agents import services
    from agents.models import Agent, ConfigVersion, Run, Workspace
    from agents.otel import decode, mapping
    from tests.fake_anthropic import FakeAnthropic, text
    from tests.otel_support import anthropic_client, provider, support_conversation

    workspace = Workspace.objects.create(name="Bench", slug="bench")
    for slug in ("support", "support-api"):
        agent = Agent.objects.create(workspace=workspace, slug=slug, name=slug)
        version = ConfigVersion.objects.create(agent=agent, number=1, model="claude-sonnet-5-5")
        Agent.objects.filter(pk=agent.pk).update(stable_version=version)
    _, key = services.create_api_key(workspace=workspace, name="bench")

    server = make_server(
        "127.0.0.1",
        int(os.environ.get("BENCH_PORT", "0")),
        get_wsgi_application(),
        server_class=_ThreadingServer,
        handler_class=_Quiet,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    http = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    with FakeAnthropic() as fake:
        # One real conversation's spans, cloned per trace with fresh trace ids.
        exporter = InMemorySpanExporter()
        tracer_provider = provider(exporter, **{"service.name": "support"})
        support_conversation(anthropic_client(fake, tracer_provider), fake, tracer_provider)
        template = encode_spans(exporter.get_finished_spans())
        spans = decode.spans_of(template)
        item = mapping.build_run(
            agent="support-api", external_id="x", spans=[s for s in spans if mapping.is_genai(s)]
        )

        bodies, runs = [], []
        for start in range(0, TRACES, BATCH):
            request = copy.deepcopy(template)
            extra = [
                copy.deepcopy(template.resource_spans[0])
                for _ in range(min(BATCH, TRACES - start) - 1)
            ]
            request.resource_spans.extend(extra)
            for offset, resource_spans in enumerate(request.resource_spans):
                trace_id = (start + offset + 1).to_bytes(16, "big")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        span.trace_id = trace_id
            bodies.append(gzip.compress(request.SerializeToString()))
            runs.append(
                orjson.dumps(
                    {
                        "runs": [
                            {**item, "external_id": f"api-{start + i}"}
                            for i in range(len(request.resource_spans))
                        ]
                    }
                )
            )

        # Warm both paths up (URL resolution, imports, first connection) before timing.
        http.post(
            "/api/otel/v1/traces", content=b"", headers={"Content-Type": "application/x-protobuf"}
        )
        http.get("/api/v1/runs")
        started = time.perf_counter()
        for body in bodies:
            response = http.post(
                "/api/otel/v1/traces",
                content=body,
                headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
            )
            assert response.status_code == 200, response.text
        otlp_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for body in runs:
            response = http.post(
                "/api/v1/runs", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code in (200, 201), response.text
        api_seconds = time.perf_counter() - started
        stored = Run.objects.filter(agent__slug="support").count()
        assert stored == TRACES, f"{stored} OTLP runs stored of {TRACES}"
        figure("otlp_ingest", TRACES / otlp_seconds, "runs/s")
        figure("runs_api_ingest", TRACES / api_seconds, "runs/s")
        figure("otlp_vs_runs_api", api_seconds / otlp_seconds, "ratio")

        # The wrapper's cost per call, interleaved with unwrapped calls against the same fake.
        fake.responder = lambda body: FakeAnthropic.message([text("ok")])
        plain = anthropic.Anthropic(
            api_key="sk-test", base_url=fake.url, max_retries=0, open_telemetry=False
        )
        reverie = Reverie(base, key, flush_interval=0.05)
        wrapped = wrap_anthropic(
            anthropic.Anthropic(
                api_key="sk-test", base_url=fake.url, max_retries=0, open_telemetry=False
            ),
            agent="support-api",
            reverie=reverie,
        )
        question = [{"role": "user", "content": "Where is my order?"}]
        timings: dict[str, list[float]] = {"plain": [], "wrapped": []}
        for _ in range(CALLS):
            for name, client in (("plain", plain), ("wrapped", wrapped)):
                started = time.perf_counter()
                client.messages.create(model="claude-sonnet-5-5", max_tokens=16, messages=question)
                timings[name].append(time.perf_counter() - started)
        assert reverie.flush(60)
        overhead = (median(timings["wrapped"]) - median(timings["plain"])) * 1000
        figure("unwrapped_call_p50", median(timings["plain"]) * 1000, "ms")
        figure("wrap_overhead_p50", overhead, "ms")
        reverie.close()

        # Reverie down for a while: the calls go on, the runs wait in the queue and are retried.
        class DownFor(httpx2.HTTPTransport):
            def __init__(self, seconds: float) -> None:
                super().__init__()
                self.until = time.monotonic() + seconds

            def handle_request(self, request):
                if time.monotonic() < self.until:
                    raise httpx2.ConnectError("connection refused", request=request)
                return super().handle_request(request)

        down = Reverie(
            base, key, flush_interval=0.05, retry_backoff=0.25, transport=DownFor(DOWN_SECONDS)
        )
        client = wrap_anthropic(
            anthropic.Anthropic(
                api_key="sk-test", base_url=fake.url, max_retries=0, open_telemetry=False
            ),
            agent="support-api",
            reverie=down,
        )
        made = 0
        deadline = time.monotonic() + DOWN_SECONDS
        while time.monotonic() < deadline and made < CALLS:
            with down.run("support-api", external_id=f"down-{made}"):
                client.messages.create(model="claude-sonnet-5-5", max_tokens=16, messages=question)
            made += 1
        assert down.flush(120)
        kept = Run.objects.filter(external_id__startswith="down-").count()
        figure("calls_made_while_down", made, "calls")
        figure("calls_lost_while_down", made - kept, "calls")
        down.close()
    server.shutdown()


if __name__ == "__main__":
    main()
