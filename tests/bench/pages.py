"""Benchmark: server time of the review queue, a proposal page and the proposals API on PostgreSQL.

    BENCH_RUNS=1000000 BENCH_PROPOSALS=10000 BENCH_REPLAYS=500 \
        /work/main/.venv/bin/python tests/bench/pages.py

Data is generated server-side (INSERT … SELECT generate_series), in its own database
(BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/reverie_bench_pages), which is
rebuilt when the sizes change. Prints p50/p95 of the queue page and of the proposal that has
BENCH_REPLAYS replays, and their ratio to a trivial page (the login form) measured in the same run.
Every fifth proposal is written by a person; each agent has run sets (one pinned), and the
benchmarked proposal's experiment replayed the pinned set beside its sample, with per-set stats.
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from _bench import figure, fill_column_defaults, smoke_sizes  # noqa: E402

smoke_sizes(BENCH_RUNS=2000, BENCH_PROPOSALS=60, BENCH_REPLAYS=40, BENCH_REQUESTS=10)

RUNS = int(os.environ.get("BENCH_RUNS", "100000"))
PROPOSALS = int(os.environ.get("BENCH_PROPOSALS", "2000"))
REPLAYS = int(os.environ.get("BENCH_REPLAYS", "500"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "40"))
AGENTS = 5
RUN_SETS = 4  # per agent; the first is pinned
RUN_SET_SIZE = 200
DATA_VERSION = "runsets-2"  # bump when build() changes: an older database is rebuilt
DB_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/reverie_bench_pages"
)

os.environ["DATABASE_URL"] = DB_URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["DJANGO_DEBUG"] = "false"


def ensure_database(*, fresh: bool = False) -> None:
    import psycopg

    name = DB_URL.rsplit("/", 1)[1]
    admin = DB_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


ensure_database()

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402

from agents.models import Agent, ConfigVersion, Membership, Workspace  # noqa: E402
from dreams.models import Proposal  # noqa: E402

STATS_SQL = """
jsonb_build_object(
  'fidelity', 0.93, 'verdict', 'improves',
  'target', jsonb_build_object('n', 20, 'baseline', jsonb_build_object('passed', 2, 'n', 20, 'rate', 0.1, 'ci', jsonb_build_array(0.03, 0.3)),
     'candidate', jsonb_build_object('passed', 2 + (g % 15), 'n', 20, 'rate', (2 + (g % 15)) / 20.0, 'ci', jsonb_build_array(0.2, 0.8)),
     'fixes', g % 15, 'regressions', g % 3, 'unchanged_pass', 0, 'still_failing', 18 - (g % 15), 'mcnemar_p', 0.01,
     'off_recording_share', 0.04, 'unverifiable_share', 0.0, 'flaky', 0, 'tokens_delta_mean', 120.0,
     'cost_delta_mean', 0.001, 'latency_delta_ms_mean', 210.0),
  'regression', jsonb_build_object('n', 40, 'baseline', jsonb_build_object('passed', 40, 'n', 40, 'rate', 1.0, 'ci', jsonb_build_array(0.91, 1.0)),
     'candidate', jsonb_build_object('passed', 40 - (g % 3), 'n', 40, 'rate', (40 - (g % 3)) / 40.0, 'ci', jsonb_build_array(0.85, 1.0)),
     'fixes', 0, 'regressions', g % 3, 'unchanged_pass', 40 - (g % 3), 'still_failing', 0, 'mcnemar_p', 0.5,
     'off_recording_share', 0.02, 'unverifiable_share', 0.0, 'flaky', 0, 'tokens_delta_mean', 80.0,
     'cost_delta_mean', 0.0007, 'latency_delta_ms_mean', 150.0),
  'overall', jsonb_build_object('n', 60, 'baseline', jsonb_build_object('passed', 42, 'n', 60, 'rate', 0.7, 'ci', jsonb_build_array(0.57, 0.8)),
     'candidate', jsonb_build_object('passed', 42 + (g % 15) - (g % 3), 'n', 60, 'rate', (42 + (g % 15) - (g % 3)) / 60.0, 'ci', jsonb_build_array(0.6, 0.9)),
     'fixes', g % 15, 'regressions', g % 3, 'unchanged_pass', 40, 'still_failing', 18 - (g % 15), 'mcnemar_p', 0.02,
     'off_recording_share', 0.03, 'unverifiable_share', 0.0, 'flaky', 0, 'tokens_delta_mean', 95.0,
     'cost_delta_mean', 0.0008, 'latency_delta_ms_mean', 170.0),
  'patterns', '{}'::jsonb, 'early_stop', jsonb_build_object('stopped', false, 'reason', ''),
  'pass_hat_k', jsonb_build_object('baseline', 0.7, 'candidate', 0.8))
"""

MESSAGES_SQL = """jsonb_build_array(
  jsonb_build_object('role', 'user', 'content', jsonb_build_array(jsonb_build_object('type', 'text', 'text', 'Refund order A-' || g || ' please'))),
  jsonb_build_object('role', 'assistant', 'content', jsonb_build_array(
      jsonb_build_object('type', 'tool_use', 'id', 'tu_' || g, 'name', 'lookup_order', 'input', jsonb_build_object('order_id', 'A-' || g)))),
  jsonb_build_object('role', 'user', 'content', jsonb_build_array(jsonb_build_object('type', 'tool_result', 'tool_use_id', 'tu_' || g, 'content', '{"amount": 42}'))),
  jsonb_build_object('role', 'assistant', 'content', jsonb_build_array(jsonb_build_object('type', 'text', 'text', 'Your refund is on its way.'))))"""


def signature() -> str:
    return f"{RUNS}:{PROPOSALS}:{REPLAYS}:{DATA_VERSION}"


def build() -> None:
    print(f"building data: {RUNS:,} runs, {PROPOSALS:,} proposals, {REPLAYS} replays …", flush=True)
    started = time.perf_counter()
    call_command("flush", interactive=False, verbosity=0)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bench", password="bench-password")
    workspace = Workspace.objects.create(name="Bench", slug="bench")
    Membership.objects.create(user=user, workspace=workspace, role=Membership.Role.ADMIN)
    from tests.factories import BASE_PROMPT, CANDIDATE_PROMPT

    agents = []
    for i in range(AGENTS):
        agent = Agent.objects.create(workspace=workspace, slug=f"agent-{i}", name=f"Agent {i}")
        base = ConfigVersion.objects.create(
            agent=agent,
            number=1,
            system_prompt=BASE_PROMPT,
            memory_documents={"policies/refunds.md": "# Refunds\n\n- 30 days.\n" * 5},
            model="m",
        )
        cand = ConfigVersion.objects.create(
            agent=agent,
            number=2,
            system_prompt=CANDIDATE_PROMPT,
            memory_documents={"policies/refunds.md": "# Refunds\n\n- 30 days from delivery.\n" * 5},
            model="m",
            parent=base,
        )
        agent.stable_version = base
        agent.save(update_fields=["stable_version"])
        agents.append((agent, base, cand))
    ids = [a.pk for a, _, _ in agents]
    bases = [b.pk for _, b, _ in agents]
    cands = [c.pk for _, _, c in agents]
    fill_column_defaults()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"""
            INSERT INTO agents_run (agent_id, config_version_id, external_id, status, score, outcome_reason, model,
              system, tools, messages, step_count, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
              cost_usd, latency_ms, started_at, created_at, tags, metadata, expectations, source_format)
            SELECT (%s::bigint[])[1 + g %% {AGENTS}], (%s::bigint[])[1 + g %% {AGENTS}], 'run-' || g,
              CASE WHEN g %% 4 = 0 THEN 'failure' ELSE 'success' END, NULL, '', 'claude-sonnet-5-5',
              '', '[]'::jsonb, {MESSAGES_SQL}, 2, 900, 120, 0, 0, 0.0045, 1500 + g %% 900,
              now() - (g || ' seconds')::interval, now(), '[]'::jsonb, '{{}}'::jsonb, '{{}}'::jsonb, 'anthropic'
            FROM generate_series(1, %s) g
            """,
            [ids, bases, RUNS],
        )
        cur.execute(
            """
            INSERT INTO dreams_dreamcycle (agent_id, trigger, status, stage, progress_done, progress_total,
              tokens_used, cost_usd, created_at, error, report, external_id)
            SELECT id, 'schedule', 'succeeded', 'report', 5, 5, 100000, 1.2, now(), '', '{}'::jsonb, ''
            FROM unnest(%s::bigint[]) AS id
            """,
            [ids],
        )
        cur.execute(
            """
            INSERT INTO dreams_failurepattern (cycle_id, agent_id, signature, title, description, grouping_reason, severity, count)
            SELECT c.id, c.agent_id, 'sig-' || k, 'Pattern ' || k || ' of agent ' || c.agent_id, 'desc', 'why', 'medium', 10 + k
            FROM dreams_dreamcycle c CROSS JOIN generate_series(1, 3) k
            """
        )
        cur.execute(
            f"""
            INSERT INTO dreams_proposal (agent_id, cycle_id, base_version_id, candidate_version_id, revision, title,
              rationale, status, source, flags, expected_value, lock_version, metadata, created_at, updated_at, ready_at)
            SELECT (%s::bigint[])[1 + g %% {AGENTS}], NULL, (%s::bigint[])[1 + g %% {AGENTS}], (%s::bigint[])[1 + g %% {AGENTS}], 1,
              'Proposal ' || g || ': verify the order before refunding', 'Because.',
              (ARRAY['ready','ready','ready','rejected','approved','superseded','changes_requested','rolled_out'])[1 + g %% 8],
              CASE WHEN g %% 5 = 0 THEN 'human' ELSE 'dream' END,
              CASE WHEN g %% 17 = 0 THEN '[{{"code": "possible_injection", "message": "copied"}}]'::jsonb ELSE '[]'::jsonb END,
              (g %% 1000) / 100.0, 0,
              CASE WHEN g %% 5 = 0 THEN '{{"written_by": "bench", "judged_on": "run set Run set 1"}}'::jsonb ELSE '{{}}'::jsonb END,
              now() - (g || ' minutes')::interval, now(), now() - (g || ' minutes')::interval
            FROM generate_series(1, %s) g
            """,
            [ids, bases, cands, PROPOSALS],
        )
        cur.execute("UPDATE dreams_proposal SET author_id = %s WHERE source = 'human'", [user.pk])
        # Run sets: RUN_SETS per agent (the first pinned), RUN_SET_SIZE of its runs each; the
        # pinned one overlaps the benchmarked replays by about a quarter, the rest are replayed
        # as `pinned`.
        cur.execute(
            f"""
            INSERT INTO agents_runset (agent_id, name, description, pinned, origin, origin_detail,
              created_by_id, created_at, updated_at)
            SELECT a.id, 'Run set ' || k, 'Generated.', k = 1,
              (ARRAY['filter', 'proposal', 'api', 'api'])[k], '{{}}'::jsonb, %s, now(), now()
            FROM unnest(%s::bigint[]) AS a(id) CROSS JOIN generate_series(1, {RUN_SETS}) k
            """,
            [user.pk, ids],
        )
        cur.execute(
            f"""
            INSERT INTO agents_runsetmember (run_set_id, external_id, added_at)
            SELECT s.id, r.external_id, now()
            FROM agents_runset s
            CROSS JOIN LATERAL (
              SELECT external_id FROM agents_run WHERE agent_id = s.agent_id
              ORDER BY id OFFSET {max(0, REPLAYS // 2 - RUN_SET_SIZE // 4)} + (s.id % 7) * 13
              LIMIT {RUN_SET_SIZE}
            ) r
            """
        )
        cur.execute(
            """
            INSERT INTO dreams_proposal_patterns (proposal_id, failurepattern_id)
            SELECT p.id, f.id FROM dreams_proposal p JOIN dreams_failurepattern f ON f.agent_id = p.agent_id
            WHERE f.signature IN ('sig-1', 'sig-2')
            """
        )
        cur.execute(
            f"""
            INSERT INTO dreams_experiment (agent_id, proposal_id, baseline_version_id, candidate_version_id, status,
              replicates, stats, fidelity, stop_reason, error, created_at)
            SELECT p.agent_id, p.id, p.base_version_id, p.candidate_version_id, 'completed', 1,
              {STATS_SQL.replace("g %", "p.id %").replace("|| g", "|| p.id")}, 0.93, '', '', now()
            FROM dreams_proposal p
            """
        )
        # The benchmarked proposal: the highest expected value, with REPLAYS replays (half per arm).
        cur.execute(
            "UPDATE dreams_proposal SET expected_value = 99, status = 'ready' WHERE id = (SELECT min(id) FROM dreams_proposal) RETURNING id, agent_id"
        )
        target_id, agent_id = cur.fetchone()
        cur.execute("SELECT id FROM dreams_experiment WHERE proposal_id = %s", [target_id])
        (experiment_id,) = cur.fetchone()
        cur.execute(
            """
            INSERT INTO dreams_replay (experiment_id, run_id, arm, replicate, run_set, status, verdict, grader, reason,
              messages, divergence_step, divergence_kind, off_recording, unverifiable, input_tokens, output_tokens,
              cache_read_tokens, cache_write_tokens, cost_usd, latency_ms, error, created_at, finished_at)
            SELECT %s, r.id, arm, 0, CASE WHEN r.status = 'failure' THEN 'target' ELSE 'regression' END, 'done',
              CASE WHEN (arm = 'candidate' AND r.id %% 3 <> 0) OR (arm = 'baseline' AND r.status = 'success') THEN 'pass' ELSE 'fail' END,
              'expectations', 'Graded against recorded expectations.', r.messages, 1, 'tool', r.id %% 11 = 0, false,
              900, 130, 0, 0, 0.0046, 1600, '', now(), now()
            FROM (SELECT id, status, messages FROM agents_run WHERE agent_id = %s ORDER BY id LIMIT %s) r
            CROSS JOIN (VALUES ('baseline'), ('candidate')) AS arms(arm)
            """,
            [experiment_id, agent_id, max(1, REPLAYS // 2)],
        )
        # Its experiment replayed the agent's pinned set beside the sample (runs not yet replayed
        # as `pinned`), with the set's snapshot and per-set stats as finish_experiment stores them.
        cur.execute(
            """
            SELECT s.id, s.name, array_agg(r.id ORDER BY r.id)
            FROM agents_runset s JOIN agents_runsetmember m ON m.run_set_id = s.id
            JOIN agents_run r ON r.agent_id = s.agent_id AND r.external_id = m.external_id
            WHERE s.agent_id = %s AND s.pinned GROUP BY s.id, s.name
            """,
            [agent_id],
        )
        pinned = cur.fetchall()
        snapshot = [
            {"id": pk, "name": name, "run_ids": list(run_ids)} for pk, name, run_ids in pinned
        ]
        pinned_ids = sorted({i for _, _, run_ids in pinned for i in run_ids})
        cur.execute(
            """
            INSERT INTO dreams_experiment_pinned_runs (experiment_id, run_id)
            SELECT %s, r FROM unnest(%s::bigint[]) r
            WHERE r NOT IN (SELECT run_id FROM dreams_replay WHERE experiment_id = %s)
            """,
            [experiment_id, pinned_ids, experiment_id],
        )
        cur.execute(
            """
            INSERT INTO dreams_replay (experiment_id, run_id, arm, replicate, run_set, status, verdict, grader, reason,
              messages, divergence_step, divergence_kind, off_recording, unverifiable, input_tokens, output_tokens,
              cache_read_tokens, cache_write_tokens, cost_usd, latency_ms, error, created_at, finished_at)
            SELECT %s, r.id, arm, 0, 'pinned', 'done',
              CASE WHEN arm = 'baseline' OR r.id %% 5 <> 0 THEN 'pass' ELSE 'fail' END,
              'expectations', 'Graded against recorded expectations.', r.messages, NULL, '', false, false,
              900, 130, 0, 0, 0.0046, 1600, '', now(), now()
            FROM agents_run r JOIN dreams_experiment_pinned_runs p ON p.run_id = r.id AND p.experiment_id = %s
            CROSS JOIN (VALUES ('baseline'), ('candidate')) AS arms(arm)
            """,
            [experiment_id, experiment_id],
        )
        import json

        blocks = [
            {
                "id": e["id"],
                "name": e["name"],
                "n": len(e["run_ids"]),
                "fixes": 0,
                "regressions": len(e["run_ids"]) // 5,
                "unchanged_pass": len(e["run_ids"]) * 4 // 5,
                "still_failing": 0,
                "mcnemar_p": 0.001,
                "flaky": 0,
                "baseline": {
                    "passed": len(e["run_ids"]),
                    "n": len(e["run_ids"]),
                    "rate": 1.0,
                    "ci": [0.98, 1.0],
                },
                "candidate": {
                    "passed": len(e["run_ids"]) * 4 // 5,
                    "n": len(e["run_ids"]),
                    "rate": 0.8,
                    "ci": [0.74, 0.85],
                },
                "off_recording_share": 0.0,
                "unverifiable_share": 0.0,
                "tokens_delta_mean": 10.0,
                "cost_delta_mean": 0.0001,
                "latency_delta_ms_mean": 20.0,
            }
            for e in snapshot
        ]
        cur.execute(
            "UPDATE dreams_experiment SET run_sets = %s::jsonb, stats = jsonb_set(stats, '{run_sets}', %s::jsonb) WHERE id = %s",
            [json.dumps(snapshot), json.dumps(blocks), experiment_id],
        )
        cur.execute(
            """
            INSERT INTO dreams_patternrun (pattern_id, run_id, split, divergence_step, divergence_explanation)
            SELECT f.id, r.run_id, 'heldout', 1, 'Refunded before looking up the order.'
            FROM (SELECT DISTINCT run_id FROM dreams_replay WHERE experiment_id = %s AND run_set = 'target') r
            JOIN dreams_proposal_patterns pp ON pp.proposal_id = %s
            JOIN dreams_failurepattern f ON f.id = pp.failurepattern_id
            """,
            [experiment_id, target_id],
        )
        cur.execute(
            "CREATE TABLE IF NOT EXISTS bench_meta (sig text); DELETE FROM bench_meta; INSERT INTO bench_meta VALUES (%s)",
            [signature()],
        )
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    print(f"built in {time.perf_counter() - started:.1f} s", flush=True)


def current_signature() -> str | None:
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass('bench_meta') IS NOT NULL")
        if not cur.fetchone()[0]:
            return None
        cur.execute("SELECT sig FROM bench_meta")
        row = cur.fetchone()
        return row[0] if row else None


def measure(client: Client, url: str, n: int, **headers: str) -> tuple[list[float], list[float]]:
    """Wall time and this process's CPU time per request, in ms (CPU time ignores waiting for
    a core on a busy machine, but also excludes PostgreSQL's own work)."""
    for _ in range(3):
        assert client.get(url, headers=headers).status_code == 200, url
    wall, cpu = [], []
    for _ in range(n):
        started, started_cpu = time.perf_counter(), time.process_time()
        response = client.get(url, headers=headers)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        assert response.status_code == 200
    return wall, cpu


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def main() -> None:
    try:
        call_command("migrate", verbosity=0)
    except Exception as exc:  # kept from older migrations (they may be regenerated): rebuild
        print(f"database from other migrations ({exc}); rebuilding it", flush=True)
        connection.close()
        ensure_database(fresh=True)
        call_command("migrate", verbosity=0)
    if current_signature() != signature():
        build()
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    proposal = Proposal.objects.order_by("-expected_value").first()
    replays = proposal.experiments.first().replays.count()
    from agents.models import RunSet, RunSetMember

    counts = {
        "runs": connection.cursor().execute("SELECT count(*) FROM agents_run").fetchone()[0],
        "proposals": Proposal.objects.count(),
        "by a person": Proposal.objects.filter(source="human").count(),
        "run sets": RunSet.objects.count(),
        "run set members": RunSetMember.objects.count(),
        "replays on the proposal": replays,
        "pinned replays": proposal.experiments.first().replays.filter(run_set="pinned").count(),
    }
    print("data:", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    load_before = f"{os.getloadavg()[0]:.2f}"
    anon = Client()
    results = {
        "baseline (login page)": measure(anon, "/login/", REQUESTS),
        "queue /": measure(client, "/", REQUESTS),
        "queue, filtered + sorted": measure(client, "/?agent=agent-1&flag=any&sort=age", REQUESTS),
        f"proposal /proposals/{proposal.pk}/": measure(
            client, f"/proposals/{proposal.pk}/", REQUESTS
        ),
        "proposal replay filter (htmx partial)": measure(
            client,
            f"/proposals/{proposal.pk}/?outcome=fixed",
            REQUESTS,
            **{"HX-Request": "true", "HX-Target": "replay-list"},
        ),
        "agent page": measure(client, f"/agents/{proposal.agent.slug}/", REQUESTS),
        "runs list (newest, all agents)": measure(client, "/runs/", REQUESTS),
        "proposals API /api/v1/proposals": measure(client, "/api/v1/proposals", REQUESTS),
        "run sets page": measure(client, f"/agents/{proposal.agent.slug}/run-sets/", REQUESTS),
        "run sets API": measure(client, f"/api/v1/agents/{proposal.agent.slug}/run-sets", REQUESTS),
    }
    base = statistics.median(results["baseline (login page)"][0])
    print(
        f"load average before: {load_before}, after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)"
    )
    print(f"{'page':40} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'cpu p95':>8} {'p50/base':>9}")
    for name, (wall, cpu) in results.items():
        p50 = statistics.median(wall)
        print(
            f"{name:40} {p50:8.1f} {p95(wall):8.1f} {statistics.median(cpu):8.1f} {p95(cpu):8.1f}"
            f" {p50 / base:9.1f}"
        )
    queue95 = p95(results["queue /"][0])
    prop95 = p95(results[f"proposal /proposals/{proposal.pk}/"][0])
    figure("baseline_login_p50", base, "ms")
    figure("queue_p50", statistics.median(results["queue /"][0]), "ms")
    figure("queue_p95", queue95, "ms")
    figure("proposal_p95", prop95, "ms")
    figure("agent_page_p95", p95(results["agent page"][0]), "ms")
    figure("runs_list_p95", p95(results["runs list (newest, all agents)"][0]), "ms")
    api95 = p95(results["proposals API /api/v1/proposals"][0])
    figure("proposals_api_p95", api95, "ms")
    figure("run_sets_page_p95", p95(results["run sets page"][0]), "ms")
    figure("run_sets_api_p95", p95(results["run sets API"][0]), "ms")
    print(
        f"aim: queue p95 < 150 ms → {'OK' if queue95 < 150 else 'MISSED'} ({queue95:.1f}); "
        f"proposal p95 < 300 ms → {'OK' if prop95 < 300 else 'MISSED'} ({prop95:.1f}); "
        f"proposals API p95 < 150 ms → {'OK' if api95 < 150 else 'MISSED'} ({api95:.1f})"
    )


if __name__ == "__main__":
    main()
