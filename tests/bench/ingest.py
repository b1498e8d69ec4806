"""Capture throughput: POST /api/v1/runs over real HTTP versus a raw PostgreSQL COPY of the same rows.

Run: `.venv/bin/python tests/bench/ingest.py` (PostgreSQL must answer; it creates and migrates its
own database, starts gunicorn on 127.0.0.1, posts the runs from several client threads, then
truncates the run table and COPYs the same rows in). Sizes and knobs come from the environment:

  BENCH_RUNS (20000)  BENCH_MESSAGES (10)  BENCH_BATCH (1000)  BENCH_CLIENTS (3)  BENCH_WORKERS (2)  BENCH_ROUNDS (1)
  BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/reverie_bench_ingest; dropped and re-created)
"""

import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import figure, smoke_sizes  # noqa: E402

smoke_sizes(BENCH_RUNS=1000, BENCH_BATCH=250)

RUNS = int(os.environ.get("BENCH_RUNS", "20000"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "10"))
BATCH = int(os.environ.get("BENCH_BATCH", "1000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "3"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/reverie_bench_ingest"
)

SYSTEM = (
    "You are the Refunds desk assistant for Northwind Outfitters. Verify the order with "
    "lookup_order, check the refund window with check_refund_policy, then refund or escalate. "
    "Be brief and concrete; never promise timings you cannot see in a tool result.\n" * 3
)
TOOLS = [
    {
        "name": name,
        "description": f"{name.replace('_', ' ').capitalize()} for an order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["order_id"],
        },
    }
    for name in ("lookup_order", "check_refund_policy", "issue_refund", "escalate_to_human")
]
COLUMNS = [
    "agent_id",
    "config_version_id",
    "external_id",
    "status",
    "score",
    "outcome_reason",
    "model",
    "system",
    "tools",
    "messages",
    "step_count",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "latency_ms",
    "started_at",
    "created_at",
    "tags",
    "metadata",
    "expectations",
    "source_format",
]


def make_run(index: int, started: datetime) -> dict[str, Any]:
    """One run of MESSAGES messages: user asks, the agent calls tools, results come back."""
    order = f"NW-{100000 + index}"
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": f"Hi, I'd like a refund for order {order}. The tent pole snapped on the "
            f"second night and the rain fly tore. I've attached photos. Ticket {index}.",
        }
    ]
    tools = ["lookup_order", "check_refund_policy", "issue_refund", "escalate_to_human"]
    step = 0
    while len(messages) < MESSAGES - 1:
        tool = tools[step % len(tools)]
        call_id = f"toolu_{index}_{step}"
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": f"Let me {tool.replace('_', ' ')} for {order}."},
                    {"type": "tool_use", "id": call_id, "name": tool, "input": {"order_id": order}},
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call_id,
                        "content": json.dumps(
                            {
                                "order_id": order,
                                "status": "delivered",
                                "amount": 189.0 + index % 50,
                                "days_since_delivery": index % 40,
                                "items": [{"sku": "TENT-2P", "final_sale": False}],
                            }
                        ),
                    }
                ],
            }
        )
        step += 1
    messages.append(
        {
            "role": "assistant",
            "content": f"Done: your refund for {order} is on its way to your original payment "
            "method. You'll get an email confirmation shortly.",
        }
    )
    return {
        "agent": "bench",
        "external_id": f"bench-{index:07d}",
        "status": "failure" if index % 5 == 0 else "success",
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": messages,
        "usage": {
            "input_tokens": 2400 + index % 300,
            "output_tokens": 180,
            "cache_read_input_tokens": 1800,
        },
        "latency_ms": 3200 + index % 900,
        "started_at": (started + timedelta(seconds=index)).isoformat(),
        "tags": ["bench"],
        "metadata": {"channel": "chat", "ticket": index},
    }


def admin_dsn() -> str:
    parts = urlsplit(DATABASE_URL)
    return urlunsplit(parts._replace(path="/postgres"))


def recreate_database() -> None:
    name = urlsplit(DATABASE_URL).path.lstrip("/")
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def manage(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


SETUP = """
from agents import services
from agents.models import Workspace
ws = Workspace.objects.create(name="Bench", slug="bench")
for slug in ("bench", "warmup"):
    agent = services.create_agent(workspace=ws, slug=slug, name=slug)
    version = services.create_config_version(agent=agent, system_prompt="bench")
    services.set_stable_version(agent=agent, version=version)
_, raw = services.create_api_key(workspace=ws, name="bench", scope="admin")
print(raw)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, key: str, body: bytes) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(
            "POST",
            "/api/v1/runs",
            body=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status not in (200, 201):
        raise RuntimeError(f"HTTP {response.status}: {data[:500]!r}")
    return json.loads(data)


def wait_for_server(port: int, key: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/v1/agents", headers={"Authorization": f"Bearer {key}"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 60 s")


def bench_api(port: int, key: str, bodies: list[bytes]) -> tuple[float, int]:
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        work.put(body)
    created = 0
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        nonlocal created
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                return
            try:
                result = post(port, key, body)
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return
            with lock:
                created += result["created"]

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed; first: {errors[0]}")
    return elapsed, created


def copy_rows(
    dsn: str, runs: list[dict[str, Any]], agent_id: int, version_id: int
) -> tuple[float, float]:
    """COPY the runs as stored rows; returns (seconds with JSON encoding, seconds of COPY alone)."""
    now = datetime.now(UTC)

    def encode() -> list[tuple[Any, ...]]:
        rows = []
        for run in runs:
            usage = run["usage"]
            messages = [
                {
                    "role": m["role"],
                    "content": [{"type": "text", "text": m["content"]}]
                    if isinstance(m["content"], str)
                    else m["content"],
                }
                for m in run["messages"]
            ]
            rows.append(
                (
                    agent_id,
                    version_id,
                    run["external_id"],
                    run["status"],
                    None,
                    "",
                    "claude-sonnet-5-5",
                    run["system"],
                    json.dumps(run["tools"]),
                    json.dumps(messages),
                    sum(1 for m in messages if m["role"] == "assistant"),
                    usage["input_tokens"],
                    usage["output_tokens"],
                    usage["cache_read_input_tokens"],
                    0,
                    "0.010000",
                    run["latency_ms"],
                    run["started_at"],
                    now,
                    json.dumps(run["tags"]),
                    json.dumps(run["metadata"]),
                    "{}",
                    "anthropic",
                )
            )
        return rows

    def copy(rows: list[tuple[Any, ...]]) -> float:
        with psycopg.connect(dsn) as conn:
            conn.execute("TRUNCATE agents_run RESTART IDENTITY CASCADE")
            conn.commit()
            start = time.perf_counter()
            sql = f"COPY agents_run ({', '.join(COLUMNS)}) FROM STDIN"
            with conn.cursor() as cur, cur.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            return time.perf_counter() - start

    start = time.perf_counter()
    rows = encode()
    encoded = time.perf_counter() - start
    copy_only = copy(rows)
    return encoded + copy_only, copy_only


def truncate_runs(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE agents_run RESTART IDENTITY CASCADE")


def count_runs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM agents_run").fetchone()[0]


def main() -> None:
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "DJANGO_DEBUG": "0",
        "REVERIE_LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    print(
        f"runs={RUNS} messages/run={MESSAGES} batch={BATCH} clients={CLIENTS} "
        f"gunicorn workers={WORKERS} rounds={ROUNDS} (best of each reported)"
    )
    recreate_database()
    manage("migrate", "--no-input", "-v", "0", env=env)
    # The COPY baseline names its columns; any column added later takes its model default.
    manage(
        "shell",
        "-c",
        "import sys; sys.path.insert(0, 'tests/bench'); "
        "from _bench import fill_column_defaults; fill_column_defaults()",
        env=env,
    )
    key = manage("shell", "-c", SETUP, env=env).splitlines()[-1]
    dsn = DATABASE_URL

    started = datetime(2026, 11, 1, tzinfo=UTC)
    runs = [make_run(i, started) for i in range(RUNS)]
    bodies = [json.dumps({"runs": runs[i : i + BATCH]}).encode() for i in range(0, RUNS, BATCH)]
    size = sum(len(b) for b in bodies)
    print(
        f"payload: {size / 1e6:.1f} MB in {len(bodies)} requests ({size / RUNS / 1024:.1f} KiB a run)"
    )

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--workers",
            str(WORKERS),
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "600",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    api_times: list[float] = []
    copy_times: list[tuple[float, float]] = []
    try:
        wait_for_server(port, key, server)
        # Warm each worker up (imports, connections) on another agent; not counted.
        warm = [
            dict(r, agent="warmup", external_id=f"w-{r['external_id']}")
            for r in runs[: WORKERS * 20]
        ]
        for i in range(0, len(warm), 20):
            post(port, key, json.dumps(warm[i : i + 20]).encode())
        with psycopg.connect(dsn) as conn:
            agent_id, version_id = conn.execute(
                "SELECT a.id, a.stable_version_id FROM agents_agent a WHERE a.slug = 'bench'"
            ).fetchone()
        # Rounds alternate API and COPY on an emptied table; the best of each is reported
        # (on a shared machine the slowest rounds measure the neighbours, not the code).
        for _round in range(ROUNDS):
            truncate_runs(dsn)
            api_seconds, created = bench_api(port, key, bodies)
            stored = count_runs(dsn)
            if created != RUNS or stored != RUNS:
                raise SystemExit(f"API stored {stored} runs (reported {created}), expected {RUNS}")
            api_times.append(api_seconds)
            copy_times.append(copy_rows(dsn, runs, agent_id, version_id))
            if count_runs(dsn) != RUNS:
                raise SystemExit("COPY did not store every run")
    finally:
        server.terminate()
        server.wait(timeout=30)

    api_seconds = min(api_times)
    copy_seconds = min(t for t, _ in copy_times)
    copy_only_seconds = min(t for _, t in copy_times)
    api_rate = RUNS / api_seconds
    copy_rate = RUNS / copy_seconds
    copy_only_rate = RUNS / copy_only_seconds
    print(f"API  (HTTP, validate, convert, insert): {api_rate:9,.0f} runs/s  ({api_seconds:.2f} s)")
    print(
        f"COPY (JSON encode + COPY + commit):     {copy_rate:9,.0f} runs/s  ({copy_seconds:.2f} s)"
    )
    print(
        f"COPY (rows pre-encoded, COPY only):     {copy_only_rate:9,.0f} runs/s  ({copy_only_seconds:.2f} s)"
    )
    print(
        f"ratio API / COPY: {api_rate / copy_rate:.0%}  (vs COPY only: {api_rate / copy_only_rate:.0%})"
    )
    figure("api_ingest", api_rate, "runs/s")
    figure("copy_baseline", copy_rate, "runs/s")
    figure("api_share_of_copy", api_rate / copy_rate * 100, "%")


if __name__ == "__main__":
    main()
