"""Benchmark: replay evidence on generated multi-turn desk runs (OpenAI format, ids reused).

Each run has 3–8 user turns, tool calls with the id `call_0` reused in every turn, a long
reservation record, an empty `think` result (a pure tool), the bag count in the user's first
question and the decisive write a few user turns in. Every run carries the benchmark's gold
action (`expected_tools`) or gold answer (`expected_answer_pattern`), derived from its
recorded outcome. Prints `name: value unit` lines:

* harness fidelity of the no-change replay (the recorded model, no tokens) and its speed;
* the share of candidate replays that reach a graded verdict (not stopped, not unverifiable)
  with the simulated user, beside the same share without it (today's behaviour: stopped at the
  first user turn after the divergence); the candidate is a different desk agent served by
  the real SDK against a loopback Messages API (tests/fake_anthropic.py) that skips the
  recording's repeated look-ups, so it leaves the recording before the second user turn;
  the simulated user is the simulated backend's deterministic one;
* simulated-user tokens as a share of all replay tokens (agent + simulated user), with
  tokens estimated at four characters a token on both sides.
* on a generated IT access desk set (dreams/demo_desk, the same number of runs; the decisive
  write four or five user turns in), with the desk's MCP sandbox on loopback (started as
  `python -m dreams.demo_desk.sandbox` in a process of its own): the harness check through the
  environment (fidelity, drift; speed with the agent's replay concurrency, 8 MCP sessions at
  once, beside one after another in the same run, and whether both say the same), and, over
  every run of the set, the share of candidate replays (the desk's proposal: read the access
  policy first, an extra call before a user turn) reaching a graded verdict with the
  environment and the simulated user, beside the same share without them, and the simulated
  user's token share;
* full size only: the demo's access desk seeded as `make demo` does, and the simulated user's
  share of its proposal experiment's replay tokens (both arms).

    .venv/bin/python tests/bench/multiturn.py            # 500 runs
    .venv/bin/python tests/bench/multiturn.py --smoke    # 40 runs, about half a minute
"""

import argparse
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from agents import services  # noqa: E402
from agents.models import ConfigVersion, Run, Workspace  # noqa: E402
from agents.transcripts import pair_tool_results, to_canonical  # noqa: E402
from dreams.grading import grade  # noqa: E402
from dreams.harness import check_harness  # noqa: E402
from dreams.llm import Gateway, get_gateway  # noqa: E402
from dreams.replay import replay  # noqa: E402
from dreams.simulated.transport import PrefixCache, compute_usage  # noqa: E402
from dreams.simulated.transport import answer as simulated_answer  # noqa: E402
from dreams.usersim import USER_TOOL  # noqa: E402
from tests.fake_anthropic import FakeAnthropic  # noqa: E402

# A desk policy of ordinary length (τ-bench's airline policy is several times longer).
POLICY = """You are an airline customer-service agent. Help users book, modify or cancel
reservations, and add checked bags.

- Before any action, authenticate the user: ask for their user id and look them up with
  get_user_details. Never act for a user you have not looked up.
- Look up a reservation with get_reservation_details before changing it; read its cabin,
  passengers and flights. Do not guess reservation ids.
- Bags: each passenger may add checked bags; the first extra bag costs $50, each further bag
  $50. Tell the user the total price and ask for an explicit "yes" before
  update_reservation_baggages. Payment uses the card on file.
- Before any write (update, cancel, book), list the details of the action and obtain explicit
  confirmation. Make one tool call at a time; do not make up information or procedures.
- You may use think to plan and calculate; it changes nothing.
- Refuse requests against this policy politely and explain why. Transfer to a human agent only
  if the request cannot be handled within the scope of your actions.
- Be concise and friendly; answer in the user's language."""

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_user_details", "get_reservation_details", "think", "calculate")
] + [{"type": "function", "function": {"name": "update_reservation_baggages"}}]


def _call(name: str, arguments: dict, call_id: str = "call_0") -> dict:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def generated_run(rng: random.Random, index: int) -> dict:
    user = f"user_{index:05d}"
    reservation = f"R{index:05d}"
    bags = rng.randint(1, 3)
    turns = rng.randint(4, 8)
    messages = [
        {"role": "system", "content": POLICY},
        {"role": "user", "content": "Hi, I need help with my booking."},
        {"role": "assistant", "content": "Sure, what is your user id?"},
        {"role": "user", "content": f"It's {user}."},
        {
            "role": "assistant",
            "content": "Let me look you up.",
            "tool_calls": [_call("get_user_details", {"user_id": user})],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": json.dumps({"user_id": user})},
    ]
    for turn in range(turns - 3):
        messages += [
            {"role": "assistant", "content": "Anything else about the trip?"},
            {
                "role": "user",
                "content": (
                    f"I want to add {bags} bags to {reservation}."
                    if turn == 0
                    else f"Question {turn} about {reservation}."
                ),
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    _call("get_reservation_details", {"reservation_id": reservation}),
                    _call("think", {"thought": f"turn {turn}"}, "call_1"),
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_0",
                "content": json.dumps({"id": reservation, "flights": ["HAT170"] * 30}),
            },
            {"role": "tool", "tool_call_id": "call_1", "content": ""},
        ]
    messages += [
        {"role": "assistant", "content": f"Adding {bags} bags costs ${50 * bags}. Go ahead?"},
        {"role": "user", "content": "Yes please."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                _call(
                    "update_reservation_baggages",
                    {"reservation_id": reservation, "total_baggages": bags},
                )
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": json.dumps({"ok": True})},
        {"role": "assistant", "content": f"Done: {bags} bags added to {reservation}."},
    ]
    success = rng.random() < 0.6
    gold = bags if success else bags + 1  # a failed run's gold action (or answer) differed
    if index % 2 == 0:
        expectations = {
            "expected_tools": [
                {"name": "update_reservation_baggages", "arguments": {"total_baggages": gold}}
            ]
        }
    else:
        expectations = {"expected_answer_pattern": rf"\b{gold} bags added"}
    return {
        "messages": messages,
        "tools": TOOLS,
        "status": "success" if success else "failure",
        "expectations": expectations,
        "user_brief": f"Add bags to reservation {reservation} for {user}.",
    }


def setup(runs: int):
    workspace = Workspace.objects.create(name="Bench multiturn", slug="bench-multiturn")
    agent = services.create_agent(
        workspace=workspace,
        slug="airline-desk",
        name="Airline desk (bench)",
        model="claude-sonnet-5-5",
        write_tools=["update_reservation_baggages"],
        pure_tools=["think"],
        monthly_token_budget=10**12,
        cycle_token_budget=10**12,
    )
    agent.sandbox_tools = {"think": "dreams.sandboxes.think"}  # operators set it (admin)
    agent.save(update_fields=["sandbox_tools"])
    version = ConfigVersion.objects.create(
        agent=agent,
        number=1,
        system_prompt=POLICY,
        tools=to_canonical(
            {"format": "openai", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
        )["tools"],
        model=agent.model,
    )
    agent.stable_version = version
    agent.save(update_fields=["stable_version"])
    rng = random.Random(12)  # noqa: S311 - reproducible data, not security
    rows = []
    now = timezone.now()
    for index in range(runs):
        item = generated_run(rng, index)
        canonical = to_canonical({"format": "openai", **item})
        rows.append(
            Run(
                agent=agent,
                external_id=f"mt-{index}",
                status=item["status"],
                messages=canonical["messages"],
                tools=canonical["tools"],
                system=canonical["system"],
                step_count=sum(1 for m in canonical["messages"] if m["role"] == "assistant"),
                expectations=item["expectations"],
                user_brief=item["user_brief"],
                started_at=now,
            )
        )
    Run.objects.bulk_create(rows, batch_size=500)
    return agent


USER_ID = re.compile(r"\buser_\d+\b")
RESERVATION = re.compile(r"\bR\d{5}\b")
BAGS = re.compile(r"add (\d+) bags")


def _texts(messages: list[dict], role: str) -> list[str]:
    out = []
    for message in messages:
        if message["role"] != role:
            continue
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        out += [b.get("text", "") for b in blocks if b.get("type") == "text"]
    return [t for t in out if t]


def _use(name: str, arguments: dict, step: int, n: int = 0) -> dict:
    return {"type": "tool_use", "id": f"toolu_c{step}_{n}", "name": name, "input": arguments}


def desk_candidate(body: dict) -> list[dict]:
    """The candidate desk agent's next turn: looks each thing up once, confirms, then writes."""
    messages = body["messages"]
    said = " ".join(_texts(messages, "user"))
    last_user = _texts(messages[-1:], "user")
    done = {e.name for e in pair_tool_results(messages)}
    step = sum(1 for m in messages if m["role"] == "assistant")
    user, reservation, bags = USER_ID.search(said), RESERVATION.search(said), BAGS.search(said)
    if "update_reservation_baggages" in done:
        return [{"type": "text", "text": f"Done: {bags.group(1)} bags added to {reservation[0]}."}]
    if user is None:
        return [{"type": "text", "text": "Happy to help. What is your user id?"}]
    if "get_user_details" not in done:
        return [_use("get_user_details", {"user_id": user[0]}, step)]
    if reservation is None or bags is None:
        return [{"type": "text", "text": "Which reservation, and how many bags?"}]
    if "get_reservation_details" not in done:
        return [
            _use("get_reservation_details", {"reservation_id": reservation[0]}, step),
            _use("think", {"thought": f"{bags[1]} bags for {reservation[0]}"}, step, 1),
        ]
    if last_user and "yes" in last_user[0].lower():
        arguments = {"reservation_id": reservation[0], "total_baggages": int(bags[1])}
        return [_use("update_reservation_baggages", arguments, step)]
    total = 50 * int(bags[1])
    return [{"type": "text", "text": f"{bags[1]} bags cost ${total} in total. Shall I add them?"}]


def loopback_responder(cache: PrefixCache):
    """Agent turns from `desk_candidate`; simulated-user calls from the simulated backend."""

    def respond(body: dict) -> dict:
        if (body.get("tool_choice") or {}).get("name") == USER_TOOL:
            return simulated_answer(body, cache=cache)
        content = desk_candidate(body)
        message = FakeAnthropic.message(content)
        message["usage"] = compute_usage(body, content, cache)
        return message

    return respond


def candidate_figures(agent, version, runs: list[Run]) -> None:
    cache = PrefixCache()
    with FakeAnthropic(responder=loopback_responder(cache)) as fake:
        gateway = Gateway(backend="anthropic", api_key="sk-bench", base_url=fake.url)
        shares = {}
        agent_tokens = user_tokens = simulated = 0
        for run in runs:
            run.agent = agent  # one instance: the switch below reaches every replay
        for switch in (True, False):
            agent.simulated_user = switch
            agent.save(update_fields=["simulated_user"])
            graded = 0
            started = time.monotonic()
            with transaction.atomic():  # one commit for the ModelCall rows of an arm
                replays = [replay(r, version, gateway=gateway) for r in runs]
            for run, result in zip(runs, replays, strict=True):
                verdict = grade(run, result, gateway=gateway, comment="")
                graded += verdict.verdict in ("pass", "fail") and not result.error
                if switch:
                    agent_tokens += result.total_tokens
                    user_tokens += result.simulated_user_tokens
                    simulated += bool(result.simulated_turns)
            shares[switch] = (graded / len(runs), len(runs) / (time.monotonic() - started))
    print(f"graded_verdict_share_with_simulated_user: {shares[True][0] * 100:.1f} %")
    print(f"graded_verdict_share_without_simulated_user: {shares[False][0] * 100:.1f} %")
    print(f"replays_with_simulated_user: {simulated / len(runs) * 100:.1f} %")
    share = user_tokens / (agent_tokens + user_tokens) if agent_tokens + user_tokens else 0.0
    print(f"simulated_user_token_share: {share * 100:.1f} %")
    print(f"candidate_replay_speed: {shares[True][1]:.1f} runs/s")


def main(runs: int, *, smoke: bool = False) -> None:
    agent = setup(runs)
    version = agent.stable_version
    recorded = list(Run.objects.filter(agent=agent).select_related("agent").order_by("id"))

    check = check_harness(runs=recorded, version=version)
    print(f"runs: {len(recorded)} runs")
    print(f"harness_fidelity: {check['fidelity'] * 100:.1f} %")
    print(f"harness_speed: {check['runs_per_second']:.1f} runs/s")
    print(f"harness_tokens: {check['tokens']} tokens")
    for name, g in check["graders"].items():
        print(f"grader_agreement_{name}: {g['agreement'] * 100:.1f} %")
    candidate_figures(agent, version, recorded)
    desk_figures(runs)
    if not smoke:
        demo_figures()


SANDBOX_PORT = 18660  # the desk's MCP sandbox, on loopback for the benchmark's length


class SandboxProcess:
    """`python -m dreams.demo_desk.sandbox` in a process of its own (as an operator runs it):
    the server gets its own interpreter, as a staging environment would."""

    def __init__(self, port: int, latency_ms: float = 0) -> None:
        self.port = port
        self.latency_ms = latency_ms
        self.url = f"http://127.0.0.1:{port}/mcp"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "SandboxProcess":
        root = Path(__file__).resolve().parents[2]
        self._process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [
                sys.executable,
                *("-m", "dreams.demo_desk.sandbox", "--port", str(self.port)),
                *("--latency-ms", str(self.latency_ms)),
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("the access sandbox exited")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            time.sleep(0.1)
        raise RuntimeError("the access sandbox did not start")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)


def _graded_share(sample, version, gateway, *, environment: bool) -> tuple[float, float]:
    """Share of replays that end and get pass/fail; and the simulated user's token share."""
    graded = replay_tokens = user_tokens = 0
    for run in sample:
        if not environment:  # today's behaviour: tools from the recording, no simulated user
            run.agent.environment_url = ""
            run.agent.simulated_user = False
        result = replay(run, version, gateway=gateway)
        verdict = grade(run, result, gateway=gateway, comment="")
        graded += result.stop_reason == "end_turn" and verdict.verdict in ("pass", "fail")
        replay_tokens += result.total_tokens + result.simulated_user_tokens
        user_tokens += result.simulated_user_tokens
    return graded / len(sample), (user_tokens / replay_tokens if replay_tokens else 0.0)


def _same_check(a: dict, b: dict) -> bool:
    """Whether two harness checks say the same (everything but their timing)."""
    timing = ("seconds", "runs_per_second", "concurrency")
    return {k: v for k, v in a.items() if k not in timing} == {
        k: v for k, v in b.items() if k not in timing
    }


REMOTE_LATENCY_MS = 20  # a staging host a network hop away answers each request this late
REMOTE_RUNS = 100


def remote_figures(agent, version) -> None:
    """The harness check against the same sandbox answering every request 20 ms late (a
    staging host, not one in this machine's memory), on the set's first 100 runs: one replay
    after another, then the agent's replay concurrency."""
    speeds = {}
    with SandboxProcess(port=SANDBOX_PORT + 2, latency_ms=REMOTE_LATENCY_MS) as remote:
        for concurrency in (1, agent.replay_concurrency):
            runs = list(
                Run.objects.filter(agent=agent).select_related("agent").order_by("id")[:REMOTE_RUNS]
            )
            for run in runs:
                run.agent.environment_url = remote.url
                run.agent.replay_concurrency = concurrency
            check = check_harness(runs=runs, version=version)
            speeds[concurrency] = check
    sequential, concurrent = speeds[1], speeds[agent.replay_concurrency]
    print(f"remote_environment_latency: {REMOTE_LATENCY_MS} ms a request")
    print(f"harness_speed_remote_environment: {concurrent['runs_per_second']:.1f} runs/s")
    print(
        f"harness_speed_remote_environment_sequential: {sequential['runs_per_second']:.1f} runs/s"
    )
    print(f"harness_same_verdicts_remote: {_same_check(concurrent, sequential)}")


def desk_figures(runs: int) -> None:
    from django.test import override_settings

    from agents.ingest import ingest_runs
    from dreams.demo_desk import runs as desk

    workspace = Workspace.objects.create(name="Bench access desk", slug="bench-access-desk")
    with (
        SandboxProcess(port=SANDBOX_PORT) as sandbox,
        override_settings(REVERIE_ENVIRONMENT_ALLOWED_HOSTS=["127.0.0.1"]),
    ):
        agent = services.create_agent(
            workspace=workspace,
            slug="access-desk",
            name="IT access desk (bench)",
            write_tools=["grant_access"],
            environment_url=sandbox.url,
        )
        stable = services.create_config_version(
            agent=agent,
            system_prompt=desk.SYSTEM_PROMPT,
            memory_documents=desk.MEMORY_DOCUMENTS,
            tools=desk.TOOLS,
            model=agent.model,
        )
        services.set_stable_version(agent=agent, version=stable)
        candidate = services.create_config_version(
            agent=agent,
            system_prompt=desk.SYSTEM_PROMPT,
            memory_documents={
                "playbooks/access.md": desk.MEMORY_DOCUMENTS["playbooks/access.md"]
                + desk.CANDIDATE_RULE
            },
            tools=desk.TOOLS,
            model=agent.model,
            parent=stable,
        )
        payloads = desk.generate_runs(runs)
        for payload in payloads:
            payload.update(agent=agent.slug, tools=desk.TOOLS)
        ingest_runs(workspace=workspace, items=payloads)
        recorded = list(Run.objects.filter(agent=agent).select_related("agent").order_by("id"))

        # Same-run baseline: one replay (one MCP session) after another, as before.
        for run in recorded:
            run.agent.replay_concurrency = 1
        sequential = check_harness(runs=recorded, version=stable)
        recorded = list(Run.objects.filter(agent=agent).select_related("agent").order_by("id"))
        check = check_harness(runs=recorded, version=stable)  # the agent's concurrency: 8
        drift = check["environment_drift"]
        print(f"desk_runs: {len(recorded)} runs")
        print(f"desk_harness_fidelity_with_environment: {check['fidelity'] * 100:.1f} %")
        print(f"desk_environment_drift: {drift['calls']} calls in {drift['runs']} runs")
        print(f"harness_speed_environment: {check['runs_per_second']:.1f} runs/s")
        print(f"harness_concurrency_environment: {check['concurrency']} sessions")
        print(f"harness_speed_environment_sequential: {sequential['runs_per_second']:.1f} runs/s")
        print(f"harness_same_verdicts_concurrent_vs_sequential: {_same_check(check, sequential)}")
        remote_figures(agent, stable)

        gateway = get_gateway()
        started = time.monotonic()
        with_both, user_share = _graded_share(recorded, candidate, gateway, environment=True)
        elapsed = time.monotonic() - started
        fresh = list(Run.objects.filter(agent=agent).select_related("agent").order_by("id"))
        started = time.monotonic()
        without, _ = _graded_share(fresh, candidate, gateway, environment=False)
        elapsed_without = time.monotonic() - started
    print(f"desk_candidate_replays: {len(recorded)} runs")
    print(f"graded_verdict_share_with_environment_and_simulated_user: {with_both * 100:.1f} %")
    print(f"graded_verdict_share_without_environment_or_simulated_user: {without * 100:.1f} %")
    print(f"desk_simulated_user_token_share: {user_share * 100:.1f} %")
    print(f"desk_candidate_replay_speed_with_environment: {len(recorded) / elapsed:.1f} runs/s")
    print(
        "desk_candidate_replay_speed_without_environment: "
        f"{len(fresh) / elapsed_without:.1f} runs/s"
    )


def demo_figures() -> None:
    """The demo's access desk as `make demo` seeds it (48 runs, its proposal's experiment in
    the sandbox, both arms): the simulated user's share of that experiment's replay tokens, as
    its proposal page shows it."""
    from django.test import override_settings

    from dreams.demo_desk.seed import seed_access_desk
    from dreams.models import Experiment

    workspace = Workspace.objects.create(name="Bench demo desk", slug="bench-demo-desk")
    with (
        SandboxProcess(port=SANDBOX_PORT + 1) as sandbox,
        override_settings(REVERIE_ENVIRONMENT_ALLOWED_HOSTS=["127.0.0.1"]),
    ):
        seed_access_desk(workspace=workspace, sandbox_url=sandbox.url)
    experiment = Experiment.objects.filter(agent__workspace=workspace).latest("id")
    check = experiment.stats["simulated_user"]
    print(f"demo_desk_verdict: {experiment.stats['verdict']}")
    print(f"demo_desk_simulated_user_token_share: {check['tokens_share'] * 100:.1f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="40 runs, about half a minute")
    args = parser.parse_args()
    from django.db import connections
    from django.test.utils import setup_databases, teardown_databases

    default = connections["default"].settings_dict
    if default["ENGINE"].endswith("sqlite3"):
        # A test database of its own: pytest in the same work tree must not drop it under us.
        default["TEST"] = {**default.get("TEST", {}), "NAME": f"{default['NAME']}.bench-multiturn"}
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        main(40 if args.smoke else int(os.environ.get("BENCH_RUNS", "500")), smoke=args.smoke)
    finally:
        teardown_databases(old_config, verbosity=0)
