"""Benchmark: one dream cycle on a generated agent (default 2,000 runs, 20% failing, 5 modes).

Prints the cycle's wall time, model calls and tokens per failure analysed, and dreaming spend as
a share of the production spend of those runs; then the same cycle with a naive diagnosis (one
model call per failed run, no sampling) as the baseline, and the ratio between the two.

    DATABASE_URL=postgres://… python tests/bench/dream.py
    REVERIE_BENCH_RUNS=5000 REVERIE_BENCH_FAILING=0.2 python tests/bench/dream.py

It runs in a throwaway test database. Replays are not part of dreaming spend and are skipped
(REVERIE_BENCH_REPLAY=1 includes them, when dreams.experiments is installed).
"""

import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
from _bench import figure, smoke_sizes  # noqa: E402

smoke_sizes(REVERIE_BENCH_RUNS=300)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from django.utils import timezone  # noqa: E402

RUNS = int(os.environ.get("REVERIE_BENCH_RUNS", "2000"))
FAILING = float(os.environ.get("REVERIE_BENCH_FAILING", "0.2"))
WITH_REPLAY = os.environ.get("REVERIE_BENCH_REPLAY", "0") == "1"

# Two phrasings of each grader reason, so signature grouping makes ~2 groups per mode and the
# model-assisted merge has work to do.
VARIANTS = {
    "unverified": "Refund issued without verifying the order first (no lookup_order call)",
    "past_window": "Refunded an order past the 30-day refund window (delivered {days} days ago)",
    "angry": "Escalated a standard refund the agent could have handled itself",
    "error": "ToolError: upstream timeout from lookup_order",
}
MODES = ["unverified", "past_window", "angry", "error", "wrong_amount"]


def generate(count: int, failing: float, seed: int = 11) -> list[dict[str, Any]]:
    from agents import demo

    rng = random.Random(seed)
    now = timezone.now()
    runs = []
    for index in range(count):
        started = now - timedelta(days=14) + timedelta(seconds=index * 14 * 86400 // count)
        if rng.random() >= failing:
            runs.append(demo.build_run(rng, "ok", index, started))
            continue
        mode = MODES[index % len(MODES)]
        if mode == "error":
            run = demo.build_run(rng, "ok", index, started)
            run["messages"] = run["messages"][:2] + [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "tu_1",
                            "is_error": True,
                            "content": "upstream timeout after 30s",
                        }
                    ],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "Please retry later."}]},
            ]
            run.update(status="error", outcome_reason="ToolError: lookup_order timed out")
            run.pop("feedback", None)
        elif mode == "wrong_amount":
            run = demo.build_run(rng, "ok", index, started)
            run.update(
                status="failure",
                outcome_reason="Refunded the full order although only one item was returned",
            )
            run.pop("feedback", None)
        else:
            run = demo.build_run(rng, mode, index, started)
        if mode in VARIANTS and rng.random() < 0.5:
            days = run["messages"][2]["content"][0]["content"] if mode == "past_window" else ""
            days_ago = next((p.split(":")[1] for p in days.split(", ") if "days_since" in p), "40")
            run["outcome_reason"] = VARIANTS[mode].format(days=days_ago.strip(" }"))
        runs.append(run)
    return runs


def seed(runs: list[dict[str, Any]]) -> Any:
    from agents import demo, services
    from agents.ingest import ingest_runs
    from agents.models import Run, Workspace

    workspace = Workspace.objects.create(name="Bench", slug="bench")
    agent = services.create_agent(
        workspace=workspace,
        slug="bench-desk",
        name="Bench desk",
        model="claude-sonnet-5-5",
        cycle_token_budget=50_000_000,
        monthly_token_budget=500_000_000,
    )
    version = services.create_config_version(
        agent=agent,
        system_prompt=demo.SYSTEM_PROMPT,
        memory_documents=demo.MEMORY_DOCUMENTS,
        tools=demo.TOOLS,
        model=agent.model,
    )
    services.set_stable_version(agent=agent, version=version)
    feedback = {}
    for payload in runs:
        payload.update(
            agent=agent.slug, system=demo.SYSTEM_PROMPT, tools=demo.TOOLS, model=agent.model
        )
        if "feedback" in payload:
            feedback[payload["external_id"]] = payload.pop("feedback")
    for start in range(0, len(runs), 500):
        ingest_runs(workspace=workspace, items=runs[start : start + 500])
    by_external = dict(Run.objects.filter(agent=agent).values_list("external_id", "id"))
    for external_id, item in feedback.items():
        services.add_feedback(
            run=Run(pk=by_external[external_id], agent=agent), source="human", **item
        )
    agent.refresh_from_db()
    return agent


def one_cycle(agent: Any) -> dict[str, Any]:
    from dreams import cycles, spend
    from dreams.models import DreamCycle

    started = time.perf_counter()
    cycle = cycles.start_cycle(agent=agent, trigger="manual", enqueue=False)
    cycles.run_cycle(cycle_id=cycle.pk)
    wall = time.perf_counter() - started
    cycle.refresh_from_db()
    usage = spend.cycle_usage(cycle)
    share = spend.cycle_spend_share(cycle)
    result = {
        "status": cycle.status,
        "wall": wall,
        "failures": cycle.runs.count(),
        "patterns": cycle.patterns.count(),
        "proposals": cycle.proposals.count(),
        "calls": usage["calls"],
        "tokens": usage["tokens"],
        "cost": usage["cost_usd"],
        "share_cost": share["share_of_cost_pct"],
        "share_tokens": share["share_of_tokens_pct"],
        "production_cost": share["production_cost_usd"],
        "production_runs": share["production_runs"],
        "pattern_list": [(p.title, p.count) for p in cycle.patterns.order_by("-count")],
    }
    # Let the next cycle study the same failures again.
    DreamCycle.objects.filter(pk=cycle.pk).update(status=DreamCycle.Status.CANCELLED)
    return result


def print_result(label: str, r: dict[str, Any]) -> None:
    n = max(r["failures"], 1)
    print(f"{label}")
    print(f"  status                     {r['status']}")
    print(f"  cycle wall time            {r['wall']:.2f} s")
    print(
        f"  failures analysed          {r['failures']}  → {r['patterns']} patterns, {r['proposals']} proposals"
    )
    for title, count in r["pattern_list"]:
        print(f"    - {count:4d}  {title[:90]}")
    print(f"  model calls                {r['calls']}  ({r['calls'] / n:.3f} per failure)")
    print(f"  tokens                     {r['tokens']:,}  ({r['tokens'] / n:,.0f} per failure)")
    print(f"  dreaming cost              ${r['cost']:.4f}")
    print(
        f"  share of production spend  {r['share_cost']}% of cost, {r['share_tokens']}% of tokens "
        f"(production: {r['production_runs']} runs, ${r['production_cost']})"
    )


def main() -> None:
    from dreams import cycles, diagnosis

    gateway = f"dreams.llm ({settings.REVERIE_MODEL_BACKEND})"
    if not WITH_REPLAY:
        cycles.STAGE_FUNCTIONS["replay"] = lambda *, cycle: 0

    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        t0 = time.perf_counter()
        agent = seed(generate(RUNS, FAILING))
        seeded = time.perf_counter() - t0
        failures = agent.runs.filter(status__in=["failure", "error"]).count()
        settings.REVERIE_DREAM_MAX_RUNS = max(failures, 1)  # one cycle studies every failure
        print(
            f"dream benchmark: {RUNS} runs, {failures} failing ({FAILING:.0%}, {len(MODES)} modes), "
            f"seeded in {seeded:.1f} s; gateway: {gateway}; database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
        )
        reverie = one_cycle(agent)
        print_result("Reverie cycle (grouped, sampled and batched diagnosis)", reverie)

        # Baseline: diagnose every failed run with its own model call.
        settings.REVERIE_DREAM_DIAGNOSE_PER_PATTERN = 1_000_000
        diagnosis.CHUNK = 1
        naive = one_cycle(agent)
        print_result("Baseline cycle (one diagnosis call per failed run)", naive)
        print(
            f"ratio baseline/Reverie: {naive['tokens'] / max(reverie['tokens'], 1):.1f}x tokens, "
            f"{naive['calls'] / max(reverie['calls'], 1):.1f}x model calls, "
            f"{naive['wall'] / max(reverie['wall'], 1e-9):.1f}x wall time"
        )
        figure("cycle_wall_time", reverie["wall"], "s")
        figure("model_calls_per_failure", reverie["calls"] / max(reverie["failures"], 1))
        figure("tokens_per_failure", reverie["tokens"] / max(reverie["failures"], 1), "tokens")
        figure("dreaming_share_of_production_spend", float(reverie["share_cost"] or 0), "%")
        figure("baseline_tokens_per_failure", naive["tokens"] / max(naive["failures"], 1), "tokens")
        aim = "meets" if (reverie["share_cost"] or 0) < 5 else "misses"
        print(f"aim (< 5% of production spend): {aim} ({reverie['share_cost']}%)")
    finally:
        teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    main()
