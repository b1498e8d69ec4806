"""Benchmark the config endpoint: gunicorn (2 workers) on PostgreSQL, wrk on loopback.

    /work/main/.venv/bin/python tests/bench/config_endpoint.py

Prints requests/s, p50 / p99 latency and the share of 304s for `GET /api/v1/agents/<slug>/config`
with a pool of sticky keys, where clients revalidate with the ETag they got before
(BENCH_REVALIDATE share of requests). Then, as a baseline, runs the same endpoint for
BENCH_BASELINE_SECONDS on a fresh server with the in-process key and routing caches off, and
prints the ratio.

The rate-limit counters (agents/throttling.py) live where the server's settings put them:
REDIS_URL / REVERIE_CACHE_URL in the environment puts them on Redis, as in production.

Env: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/reverie_bench_config),
BENCH_SECONDS (30), BENCH_BASELINE_SECONDS (10), BENCH_CONNECTIONS (6), BENCH_KEYS (2000),
BENCH_REVALIDATE (0.8), BENCH_STATUS_SECONDS (5), BENCH_WORKER_CLASS (gthread: keep-alive), BENCH_THREADS (1: one request at a time per worker, the lowest tail on 2 cores), BENCH_PORT (18765).
Needs `wrk` (apt-get install wrk).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import figure, smoke_sizes  # noqa: E402

smoke_sizes(BENCH_SECONDS=4, BENCH_BASELINE_SECONDS=3, BENCH_KEYS=200, BENCH_STATUS_SECONDS=2)

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/reverie_bench_config"
)
SECONDS = int(os.environ.get("BENCH_SECONDS", "30"))
BASELINE_SECONDS = int(os.environ.get("BENCH_BASELINE_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "6"))
KEYS = int(os.environ.get("BENCH_KEYS", "2000"))
REVALIDATE = float(os.environ.get("BENCH_REVALIDATE", "0.8"))
WORKER_CLASS = os.environ.get("BENCH_WORKER_CLASS", "gthread")
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
STATUS_SECONDS = int(os.environ.get("BENCH_STATUS_SECONDS", "5"))
PORT = int(os.environ.get("BENCH_PORT", "18765"))

os.environ["DATABASE_URL"] = DATABASE_URL
os.environ["DJANGO_DEBUG"] = "0"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

WRK_SCRIPT = r"""
-- Requests are formatted once per thread in init(), so the load generator spends its CPU on
-- sending, not on building strings (the server shares the machine's two cores with it).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  s200, s304, sother = 0, 0, 0
  plain, revalidate = {}, {}
  for line in io.lines("%(keys_file)s") do
    local key, etag = line:match("^(%%S+)\t(.+)$")
    local auth = {["Authorization"] = "Bearer %(api_key)s"}
    plain[#plain + 1] = wrk.format("GET", "%(path)s" .. key, auth)
    auth["If-None-Match"] = etag
    revalidate[#revalidate + 1] = wrk.format("GET", "%(path)s" .. key, auth)
  end
end
function request()
  local i = math.random(#plain)
  if %(with_etag)s and math.random() < %(revalidate)s then return revalidate[i] end
  return plain[i]
end
%(response_fn)s
function done(summary, latency, requests)
  local a, b, c = 0, 0, 0
  for _, t in ipairs(threads) do a = a + t:get("s200"); b = b + t:get("s304"); c = c + t:get("sother") end
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), a, b, c,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""
# Defining response() makes wrk hand every response to Lua (parsing headers into tables), which
# costs the load generator CPU that the server would otherwise get; so statuses are counted in
# a separate, shorter pass.
RESPONSE_FN = r"""
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1 elseif status == 304 then s304 = s304 + 1 else sother = sother + 1 end
end
"""


def prepare() -> tuple[str, str, list[str]]:
    """Create the database, migrate, seed one agent with a 25% canary; return (slug, key, keys)."""
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    admin_url = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from agents import services
    from agents.models import Agent, ConfigVersion, Workspace

    workspace = Workspace.objects.create(name="Bench", slug="bench")
    agent = Agent.objects.create(workspace=workspace, slug="support", name="Support")
    stable = ConfigVersion.objects.create(
        agent=agent,
        number=1,
        system_prompt="You are a helpful support agent. " * 40,
        memory_documents={"faq.md": "Refunds take 5 days. " * 50, "tone.md": "Be brief."},
        tools=[{"name": "lookup_order", "input_schema": {"type": "object"}}],
        model="claude-sonnet-5-5",
    )
    canary = ConfigVersion.objects.create(
        agent=agent,
        number=2,
        system_prompt="You are a helpful support agent. Cite the order number. " * 40,
        memory_documents={"faq.md": "Refunds take 5 days. " * 50, "tone.md": "Be brief."},
        tools=[{"name": "lookup_order", "input_schema": {"type": "object"}}],
        model="claude-sonnet-5-5",
        parent=stable,
    )
    agent.stable_version = stable
    agent.canary_version = canary
    agent.canary_percent = 25
    agent.save()
    _, raw = services.create_api_key(workspace=workspace, name="bench", scope="admin")
    from django.db import connections

    connections.close_all()
    return agent.slug, raw, [f"user-{i}" for i in range(KEYS)]


def wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def fetch(path: str, api_key: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{path}", headers={"Authorization": f"Bearer {api_key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return response.status, dict(response.headers), response.read()


def run_wrk(
    *,
    path: str,
    api_key: str,
    keys_file: str,
    seconds: int,
    with_etag: bool,
    count_statuses: bool = False,
) -> dict:
    script = WRK_SCRIPT % {
        "response_fn": RESPONSE_FN if count_statuses else "",
        "keys_file": keys_file,
        "api_key": api_key,
        "path": path,
        "with_etag": "true" if with_etag else "false",
        "revalidate": REVALIDATE,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(  # noqa: S603
        [
            shutil.which("wrk") or "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            handle.name,
            f"http://127.0.0.1:{PORT}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT" + r" (\d+)" * 9, out)
    if not match:
        raise RuntimeError(out)
    requests, duration_us, p50, p99, s200, s304, other, errors, bad_status = map(
        int, match.groups()
    )
    return {
        "requests": requests,
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "share_304": s304 / (s200 + s304 + other) if count_statuses else None,
        "non_2xx_3xx": bad_status,
        "socket_errors": errors,
    }


def start_server(extra_env: dict[str, str]) -> subprocess.Popen:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", PORT)) == 0:
            sys.exit(f"port {PORT} is already in use; set BENCH_PORT")
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "DJANGO_DEBUG": "0",
        "REVERIE_LOG_LEVEL": "WARNING",
        **extra_env,
    }
    server = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--workers",
            "2",
            "--worker-class",
            WORKER_CLASS,
            "--threads",
            str(THREADS),
            "--bind",
            f"127.0.0.1:{PORT}",
            "--log-level",
            "warning",
            "--keep-alive",
            "30",
        ],
        cwd=ROOT,
        env=env,
    )
    wait_for(PORT)
    return server


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    slug, api_key, keys = prepare()
    config_path = f"/api/v1/agents/{slug}/config?key="
    load_before = os.getloadavg()[0]
    server = start_server({})
    try:
        # Each simulated client knows the ETag of its last answer (learned here, once).
        lines, arms = [], {"stable": 0, "canary": 0}
        for key in keys:
            status, headers, body = fetch(config_path + key, api_key)
            assert status == 200
            arms[json.loads(body)["arm"]] += 1
            rate_limit = headers.get("RateLimit-Limit", "off")
            lines.append(f"{key}\t{headers['ETag']}")
        with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as handle:
            handle.write("\n".join(lines) + "\n")
        run_wrk(
            path=config_path,
            api_key=api_key,
            keys_file=handle.name,
            seconds=min(3, SECONDS),
            with_etag=True,
        )
        result = run_wrk(
            path=config_path,
            api_key=api_key,
            keys_file=handle.name,
            seconds=SECONDS,
            with_etag=True,
        )
        statuses = run_wrk(
            path=config_path,
            api_key=api_key,
            keys_file=handle.name,
            seconds=STATUS_SECONDS,
            with_etag=True,
            count_statuses=True,
        )
    finally:
        stop_server(server)
    load_after = os.getloadavg()[0]
    baseline = None
    if BASELINE_SECONDS > 0:
        # Same endpoint and server, with the in-process key and routing caches turned off:
        # every request looks up its API key and the agent's routing in PostgreSQL.
        server = start_server(
            {"REVERIE_CONFIG_AUTH_CACHE_SECONDS": "0", "REVERIE_CONFIG_ROUTING_CACHE_SECONDS": "0"}
        )
        try:
            run_wrk(
                path=config_path, api_key=api_key, keys_file=handle.name, seconds=2, with_etag=True
            )
            baseline = run_wrk(
                path=config_path,
                api_key=api_key,
                keys_file=handle.name,
                seconds=BASELINE_SECONDS,
                with_etag=True,
            )
        finally:
            stop_server(server)
    print(f"config endpoint: gunicorn 2 workers ({WORKER_CLASS}, {THREADS} thread(s)), PostgreSQL,")
    print(f"wrk 1 thread, {CONNECTIONS} keep-alive connections, {SECONDS} s, {KEYS} keys")
    cache_url = os.environ.get("REVERIE_CACHE_URL", os.environ.get("REDIS_URL", ""))
    print(
        f"  rate limit {rate_limit} a window per API key, counted in "
        + (f"Redis ({cache_url})" if cache_url else "per-process memory (set REDIS_URL for Redis)")
    )
    print(
        f"  machine load average (1 min) {load_before:.1f} before, {load_after:.1f} after, {os.cpu_count()} cores"
    )
    print(f"  keys in canary at 25%: {arms['canary']} of {KEYS} ({arms['canary'] / KEYS:.1%})")
    print(f"  requests/s        {result['rps']:,.0f}")
    print(f"  latency p50       {result['p50_ms']:.2f} ms")
    print(f"  latency p99       {result['p99_ms']:.2f} ms")
    print(
        f"  share of 304s     {statuses['share_304']:.1%} (clients revalidate {REVALIDATE:.0%}; "
        f"counted in a separate {STATUS_SECONDS} s pass at {statuses['rps']:,.0f} req/s)"
    )
    print(
        f"  errors            {result['non_2xx_3xx']} non-2xx/3xx, {result['socket_errors']} socket"
    )
    if baseline:
        print(
            f"baseline: same endpoint, key and routing caches off (2 queries a request), {BASELINE_SECONDS} s"
        )
        print(f"  requests/s        {baseline['rps']:,.0f}")
        print(f"  latency p50/p99   {baseline['p50_ms']:.2f} / {baseline['p99_ms']:.2f} ms")
        if baseline["rps"]:
            print(
                f"  ratio             {result['rps'] / baseline['rps']:.2f}x the requests/s of the baseline"
            )
    figure("config_requests_per_second", result["rps"], "req/s")
    figure("config_latency_p50", result["p50_ms"], "ms")
    figure("config_latency_p99", result["p99_ms"], "ms")
    figure("config_share_304", statuses["share_304"] * 100, "%")
    if baseline:
        figure("config_baseline_requests_per_second", baseline["rps"], "req/s")
    target = result["rps"] >= 1500 and result["p99_ms"] < 50
    print(f"target >= 1,500 req/s with p99 < 50 ms: {'met' if target else 'NOT met'}")


if __name__ == "__main__":
    main()
