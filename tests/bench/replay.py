"""Benchmark: an experiment of BENCH_RUNS runs × 2 arms against the loopback fake Messages API.

The fake answers every /v1/messages call after a fixed delay (BENCH_DELAY_MS, 200 ms) like the
simulated model would. Replays (and their judge calls) run through the real SDK, the gateway,
Celery chunks (eager) and AsyncAnthropic at BENCH_CONCURRENCY (32) replays at once per task.

Prints wall time, replays/s, parallel efficiency (ideal time at the configured concurrency ÷
actual, ideal = model calls × delay ÷ concurrency) and tokens per replay with and without the
cached prefix (a second, smaller experiment with prompt caching off: BENCH_NOCACHE_RUNS).

    DATABASE_URL=postgres://… python tests/bench/replay.py   (runs in a throwaway test database)
    BENCH_RUNS=100 BENCH_CONCURRENCY=16 python tests/bench/replay.py
"""

import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
from _bench import figure, smoke_sizes  # noqa: E402

smoke_sizes(BENCH_RUNS=40, BENCH_NOCACHE_RUNS=10, BENCH_CONCURRENCY=16)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402
from django.db.models import Avg, Max, Min, Sum  # noqa: E402

from agents import demo, services  # noqa: E402
from agents.ingest import ingest_runs  # noqa: E402
from agents.models import Run, Workspace  # noqa: E402
from dreams.experiments import start_experiment  # noqa: E402
from dreams.models import Experiment, ModelCall, Replay  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "500"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
DELAY_MS = int(os.environ.get("BENCH_DELAY_MS", "200"))
CHUNK = int(os.environ.get("BENCH_CHUNK_RUNS", str(RUNS)))  # eager Celery: chunks run in turn
NOCACHE_RUNS = int(os.environ.get("BENCH_NOCACHE_RUNS", "50"))
GUIDANCE = "\nBefore issuing any refund, always check the refund window with check_refund_policy.\n"


def setup(slug: str):
    workspace = Workspace.objects.create(name=f"Bench {slug}", slug=slug)
    agent = services.create_agent(
        workspace=workspace,
        slug="refunds-desk",
        name="Refunds desk (bench)",
        model="claude-sonnet-5-5",
        sandbox_tools={"check_refund_policy": "agents.demo.sandbox_check_refund_policy"},
        write_tools=["issue_refund", "escalate_to_human"],
        replay_concurrency=CONCURRENCY,
        monthly_token_budget=10**12,
        cycle_token_budget=10**12,
    )
    stable = services.create_config_version(
        agent=agent,
        system_prompt=demo.SYSTEM_PROMPT,
        memory_documents=demo.MEMORY_DOCUMENTS,
        tools=demo.TOOLS,
        model=agent.model,
    )
    services.set_stable_version(agent=agent, version=stable)
    candidate = services.create_config_version(
        agent=agent,
        system_prompt=demo.SYSTEM_PROMPT + GUIDANCE,
        memory_documents=demo.MEMORY_DOCUMENTS,
        tools=demo.TOOLS,
        model=agent.model,
        parent=stable,
    )
    payloads = demo.generate_runs(RUNS, seed=11)
    for payload in payloads:
        payload.update(
            agent=agent.slug, system=demo.SYSTEM_PROMPT, tools=demo.TOOLS, model=agent.model
        )
        payload.pop("feedback", None)
    ingest_runs(workspace=workspace, items=payloads)
    agent.refresh_from_db()
    return workspace, agent, stable, candidate


def run_experiment(agent, stable, candidate, runs: list[Run]) -> tuple[Experiment, float]:
    target = [r for r in runs if r.status != "success"]
    regression = [r for r in runs if r.status == "success"]
    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    experiment = start_experiment(
        agent=agent,
        baseline_version=stable,
        candidate_version=candidate,
        target_runs=target,
        regression_runs=regression,
        replicates=1,
    )
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    experiment.refresh_from_db()
    experiment.cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    return experiment, wall


def per_replay(experiment: Experiment) -> dict[str, float]:
    replays = Replay.objects.filter(experiment=experiment, status="done")
    n = replays.count() or 1
    sums = replays.aggregate(
        i=Sum("input_tokens"),
        r=Sum("cache_read_tokens"),
        w=Sum("cache_write_tokens"),
        o=Sum("output_tokens"),
        c=Sum("cost_usd"),
    )
    return {
        "uncached_input": (sums["i"] or 0) / n,
        "cache_read": (sums["r"] or 0) / n,
        "cache_write": (sums["w"] or 0) / n,
        "output": (sums["o"] or 0) / n,
        "cost": float(sums["c"] or 0) / n,
    }


def serve_fake(delay: float, urls: "mp.Queue[str]", stop: Any, counts: "mp.Queue[int]") -> None:
    """The fake API in its own process, like a remote API (it does not share our GIL)."""
    with FakeAnthropic(delay=delay) as fake:
        urls.put(fake.url)
        stop.wait()
        counts.put(len(fake.requests))


@contextmanager
def fake_server_process(delay: float) -> Iterator[dict[str, Any]]:
    ctx = mp.get_context("fork")
    urls, counts, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    connections.close_all()
    process = ctx.Process(target=serve_fake, args=(delay, urls, stop, counts), daemon=True)
    process.start()
    info: dict[str, Any] = {"url": urls.get(timeout=30)}
    try:
        yield info
    finally:
        stop.set()
        info["requests"] = counts.get(timeout=30)
        process.join(timeout=10)


def main() -> None:
    slug = f"bench-{int(time.time())}"
    workspace, agent, stable, candidate = setup(slug)
    runs = list(Run.objects.filter(agent=agent).order_by("id"))
    with fake_server_process(DELAY_MS / 1000) as fake:
        settings.REVERIE_MODEL_BACKEND = "anthropic"
        settings.ANTHROPIC_API_KEY = "sk-bench"
        settings.ANTHROPIC_BASE_URL = fake["url"]
        settings.REVERIE_REPLAY_CHUNK_SIZE = CHUNK
        settings.REVERIE_PROMPT_CACHING = True
        try:
            experiment, wall = run_experiment(agent, stable, candidate, runs)
            calls = ModelCall.objects.filter(experiment=experiment).count()
            replays = Replay.objects.filter(experiment=experiment).count()
            done = Replay.objects.filter(experiment=experiment, status="done").count()
            judge = ModelCall.objects.filter(experiment=experiment, purpose="judge").count()
            call_latency = ModelCall.objects.filter(experiment=experiment).aggregate(
                a=Avg("latency_ms")
            )["a"]
            replay_span = Replay.objects.filter(experiment=experiment).aggregate(
                first=Min("created_at"), last=Max("finished_at")
            )
            ideal = calls * DELAY_MS / 1000 / CONCURRENCY
            cached = per_replay(experiment)

            settings.REVERIE_PROMPT_CACHING = False
            subset = runs[:NOCACHE_RUNS]
            uncached_experiment, _ = run_experiment(agent, stable, candidate, subset)
            uncached = per_replay(uncached_experiment)
        finally:
            Experiment.objects.filter(agent=agent).delete()
            type(agent).objects.filter(pk=agent.pk).update(stable_version=None)
            Workspace.objects.filter(pk=workspace.pk).delete()

    stats = experiment.stats
    print(
        f"replay benchmark: {RUNS} runs × 2 arms, fake API delay {DELAY_MS} ms, concurrency {CONCURRENCY}, chunk {CHUNK} runs"
    )
    print(
        f"  experiment status        {experiment.status} (verdict {stats.get('verdict')}, fidelity {stats.get('fidelity') or 0:.3f}, fixes {stats.get('overall', {}).get('fixes')}, regressions {stats.get('overall', {}).get('regressions')})"
    )
    print(f"  replays                  {done}/{replays} done; model calls {calls} ({judge} judge)")
    print(f"  wall time                {wall:.1f} s")
    print(f"  replays/s                {replays / wall:.1f}")
    print(f"  ideal time               {ideal:.1f} s (calls × delay ÷ concurrency)")
    print(f"  parallel efficiency      {ideal / wall:.2f}")
    print("  tokens per replay        with cached prefix    without caching")
    print(
        f"    input at full price    {cached['uncached_input']:>10.0f}            {uncached['uncached_input']:>10.0f}"
    )
    print(
        f"    cache read             {cached['cache_read']:>10.0f}            {uncached['cache_read']:>10.0f}"
    )
    print(
        f"    cache write            {cached['cache_write']:>10.0f}            {uncached['cache_write']:>10.0f}"
    )
    print(
        f"    output                 {cached['output']:>10.0f}            {uncached['output']:>10.0f}"
    )
    print(
        f"    cost (USD)             {cached['cost']:>10.5f}            {uncached['cost']:>10.5f}  (ratio {cached['cost'] / uncached['cost']:.2f})"
    )
    print(
        f"  CPU of this process      {experiment.cpu_seconds:.1f} s ({experiment.cpu_seconds / calls * 1000:.1f} ms per model call)"
    )
    print(f"  mean model call latency  {call_latency:.0f} ms (fake delay {DELAY_MS} ms)")
    occupancy = calls * call_latency / 1000 / CONCURRENCY / wall
    print(
        f"  slot occupancy           {occupancy:.2f} (calls × measured latency ÷ concurrency ÷ wall)"
    )
    span = (replay_span["last"] - replay_span["first"]).total_seconds()
    print(f"  slots created → last replay finished  {span:.1f} s")
    print(f"  fake server requests     {fake['requests']} (fake API in its own process)")
    figure("replays_per_second", replays / wall, "replays/s")
    figure("parallel_efficiency", ideal / wall)
    figure("cost_per_replay_cached", cached["cost"], "USD")
    figure("cost_per_replay_uncached_baseline", uncached["cost"], "USD")
    figure("cached_cost_ratio", cached["cost"] / uncached["cost"])
    if done != replays:
        raise SystemExit(f"only {done} of {replays} replays finished")


if __name__ == "__main__":
    from django.test.utils import setup_databases, teardown_databases

    # A throwaway, migrated database (test_<name>) so the benchmark needs no prepared one.
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        main()
    finally:
        teardown_databases(old_config, verbosity=0)
