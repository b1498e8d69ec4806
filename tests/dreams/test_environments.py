"""Sandbox environments over MCP: the real `mcp` client against the project's own server.

The access desk's sandbox (dreams/demo_desk/sandbox.py) is a stateful MCP server on loopback:
its state lives per MCP session, `reverie_reset` loads a run's snapshot, `reverie_check`
judges the final state. Replays with an environment execute every tool call there.
"""

import pytest

from agents.ingest import ingest_runs
from agents.models import Run
from agents.services import create_config_version, set_stable_version
from dreams.demo_desk import runs as desk
from dreams.environments import EnvironmentSession, EnvironmentUnavailable
from dreams.grading import grade, plan
from dreams.harness import check_harness
from dreams.llm import Gateway
from dreams.replay import Stop, replay
from tests.dreams.conftest import sandbox_port

pytestmark = pytest.mark.django_db

SNAPSHOT = {
    "employees": {
        "E-7": {"name": "Dana Okafor", "team": "Data", "manager": "Sam Reyes", "groups": ["staff"]}
    },
    "request": {"employee_id": "E-7", "group": "prod-db-admin"},
}
CLOSED_PORT = 18699  # nothing listens there: an unreachable environment


@pytest.fixture
def desk_agent(agent, access_sandbox, loopback_environments):
    agent.environment_url = access_sandbox.url
    agent.write_tools = ["grant_access"]
    agent.save(update_fields=["environment_url", "write_tools"])
    version = create_config_version(
        agent=agent,
        system_prompt=desk.SYSTEM_PROMPT,
        memory_documents=desk.MEMORY_DOCUMENTS,
        tools=desk.TOOLS,
        model=agent.model,
    )
    set_stable_version(agent=agent, version=version)
    agent.refresh_from_db()
    return agent


def _desk_runs(agent, count=18):
    payloads = desk.generate_runs(count)
    for payload in payloads:
        payload.update(agent=agent.slug, tools=desk.TOOLS)
    ingest_runs(workspace=agent.workspace, items=payloads)
    return list(Run.objects.filter(agent=agent).select_related("agent").order_by("external_id"))


def test_the_mcp_client_resets_calls_and_checks_a_stateful_sandbox(
    access_sandbox, loopback_environments
):
    with EnvironmentSession(access_sandbox.url) as env:
        assert {"reverie_reset", "reverie_check", "grant_access"} <= env.tools
        assert env.reset(snapshot=SNAPSHOT, run_id="r-1")
        granted = env.call_tool(
            "grant_access", {"employee_id": "E-7", "group": "prod-db-admin", "days": 3}
        )
        assert not granted.is_error and '"granted": true' in granted.content
        # State kept across calls of one session: the grant is in the employee's record.
        looked_up = env.call_tool("lookup_employee", {"employee_id": "E-7"})
        assert "prod-db-admin" in looked_up.content
        check = env.check()
        assert (check.verdict, "for 3 days" in check.reason) == ("pass", True)
    # A fresh session is a fresh sandbox: nothing of the first one's grant.
    with EnvironmentSession(access_sandbox.url) as env:
        env.reset(snapshot=SNAPSHOT, run_id="r-2")
        assert (
            "prod-db-admin" not in env.call_tool("lookup_employee", {"employee_id": "E-7"}).content
        )
        assert env.check().verdict == "fail"


def test_a_failing_tool_is_a_tool_error_not_an_unavailable_environment(
    access_sandbox, loopback_environments
):
    with EnvironmentSession(access_sandbox.url) as env:
        env.reset(snapshot=SNAPSHOT, run_id="r-3")
        missing = env.call_tool("grant_access", {"employee_id": "E-404", "group": "wiki-editors"})
        unknown = env.call_tool("no_such_tool", {})
    assert missing.is_error and "no employee E-404" in missing.content
    assert unknown.is_error


def test_an_unreachable_environment_raises_unavailable(loopback_environments):
    with pytest.raises(EnvironmentUnavailable, match="cannot open a session"):
        EnvironmentSession(f"http://127.0.0.1:{CLOSED_PORT}/mcp", timeout=2).open()


def test_a_loopback_environment_outside_the_allow_list_is_refused(access_sandbox, settings):
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = []
    with pytest.raises(EnvironmentUnavailable, match="REVERIE_ENVIRONMENT_ALLOWED_HOSTS"):
        EnvironmentSession(access_sandbox.url).open()


def test_every_tool_call_of_a_replay_runs_in_the_environment_and_the_check_grades_it(desk_agent):
    runs = _desk_runs(desk_agent)
    failing = next(r for r in runs if r.status == "failure")
    gateway = Gateway(backend="recorded")
    gateway.recordings.add(failing)

    result = replay(failing, desk_agent.stable_version, gateway=gateway)

    assert result.stop_reason == Stop.END_TURN
    assert [c["source"] for c in result.tool_calls] == ["environment"] * len(result.tool_calls)
    # The write ran in the sandbox (not "unverifiable"); its result sits beside the recording's.
    write = result.tool_calls[-1]
    assert write["name"] == "grant_access" and "recorded" in write and "result" in write
    assert not result.unverifiable and result.drift == 0
    assert result.environment_check["verdict"] == "fail"
    graded = grade(failing, result, gateway=gateway, comment="")
    assert (graded.verdict, graded.grader) == ("fail", "environment")
    assert "policy allows at most" in graded.reason


def test_the_final_state_check_takes_precedence_over_expectations(desk_agent):
    run = next(r for r in _desk_runs(desk_agent) if r.status == "failure")
    run.expectations = {"expected_tools": ["grant_access"]}  # met, yet the state is wrong
    gateway = Gateway(backend="recorded")
    gateway.recordings.add(run)

    result = replay(run, desk_agent.stable_version, gateway=gateway)

    assert plan(run, result, comment="").grader == "environment"


def test_environment_drift_is_counted_by_the_harness_check(desk_agent):
    runs = _desk_runs(desk_agent)
    drifted = [r for r in runs if "drift" in r.tags]
    assert drifted  # the generator records a newer directory than the snapshot in a few runs

    check = check_harness(runs=runs, version=desk_agent.stable_version)

    assert check["fidelity"] == 1.0 and check["can_judge"]
    assert check["environment"] is True
    assert check["environment_drift"]["runs"] == len(drifted)
    example = check["environment_drift"]["examples"][0]
    assert example["tool"] == "lookup_employee" and "Noor Aziz" in example["recorded"]
    assert "Noor Aziz" not in example["environment"]
    assert check["graders"]["environment"]["agreement"] == 1.0
    assert "drift" in check["summary"].lower()


def test_an_unreachable_environment_marks_the_replay_unavailable_never_pass_or_fail(desk_agent):
    desk_agent.environment_url = f"http://127.0.0.1:{CLOSED_PORT}/mcp"
    desk_agent.save(update_fields=["environment_url"])
    run = _desk_runs(desk_agent, count=4)[0]
    gateway = Gateway(backend="recorded")
    gateway.recordings.add(run)

    result = replay(run, desk_agent.stable_version, gateway=gateway)
    graded = grade(run, result, gateway=gateway, comment="")

    assert result.stop_reason == Stop.ENVIRONMENT_UNAVAILABLE and result.environment_error
    assert (graded.verdict, graded.grader) == ("unverifiable", "environment")
    assert graded.reason.startswith("Environment unavailable")
    check = check_harness(runs=[run], version=desk_agent.stable_version)
    assert check["checked"] == 0 and check["fidelity"] is None
    assert "environment unavailable" in check["not_checked"][0]["reason"]


def test_the_harness_port_helper_stays_in_range():
    assert 18640 <= sandbox_port() < 18660


def test_an_experiments_replays_run_in_the_environment_on_the_async_path(
    desk_agent, django_capture_on_commit_callbacks
):
    from dreams.experiments import start_experiment
    from dreams.models import Replay

    runs = _desk_runs(desk_agent, count=12)
    with django_capture_on_commit_callbacks(execute=True):
        experiment = start_experiment(
            agent=desk_agent,
            baseline_version=desk_agent.stable_version,
            candidate_version=desk_agent.stable_version,  # a no-change replay on the simulated model
            target_runs=[r for r in runs if r.status == "failure"],
            regression_runs=[r for r in runs if r.status == "success"][:4],
        )
    experiment.refresh_from_db()

    replays = list(Replay.objects.filter(experiment=experiment).select_related("run"))
    assert replays and all(r.status == Replay.Status.DONE for r in replays)
    # Graded by the sandbox's final state, and the same as the recorded outcome.
    assert {r.grader for r in replays} == {"environment"}
    assert all((r.verdict == "pass") == (r.run.status == "success") for r in replays)
    assert all(c["source"] == "environment" for r in replays for c in r.tool_calls)
    assert experiment.harness_check["environment"] is True


def test_an_environment_that_never_answers_times_out_as_unavailable(loopback_environments):
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", sandbox_port(offset=1)))
    silent.listen(8)  # accepts connections (the kernel does), never answers a byte
    try:
        started = time.monotonic()
        with pytest.raises(EnvironmentUnavailable):
            EnvironmentSession(f"http://127.0.0.1:{sandbox_port(offset=1)}/mcp", timeout=1).open()
        assert time.monotonic() - started < 8
    finally:
        silent.close()


def test_a_replayed_model_cannot_call_reverie_tools(desk_agent):
    from dreams.replay import ReplaySession

    run = _desk_runs(desk_agent, count=2)[0]
    session = ReplaySession(run=run, version=desk_agent.stable_version, agent=desk_agent)
    try:
        answer = session._answer_tool({"id": "t1", "name": "reverie_check", "input": {}})
    finally:
        session.close_environment()
    assert answer["is_error"] and "reserved" in answer["content"]


def test_batch_mode_replays_run_in_the_environment_past_the_divergence(
    desk_agent, fake_gateway_settings, settings, django_capture_on_commit_callbacks
):
    from agents.services import create_config_version
    from dreams.experiments import start_experiment
    from dreams.models import Replay

    settings.REVERIE_REPLAY_BATCH_MODE = True
    runs = _desk_runs(desk_agent, count=12)
    candidate = create_config_version(
        agent=desk_agent,
        system_prompt=desk.SYSTEM_PROMPT,
        memory_documents={
            "playbooks/access.md": desk.MEMORY_DOCUMENTS["playbooks/access.md"]
            + desk.CANDIDATE_RULE
        },
        tools=desk.TOOLS,
        model=desk_agent.model,
        parent=desk_agent.stable_version,
    )
    with django_capture_on_commit_callbacks(execute=True):
        experiment = start_experiment(
            agent=desk_agent,
            baseline_version=desk_agent.stable_version,
            candidate_version=candidate,
            target_runs=[r for r in runs if r.status == "failure"],
            regression_runs=[r for r in runs if r.status == "success"][:3],
        )
    # The chunk submitted its first step and ended; beat's poller takes it from there.
    from dreams.models import ReplayBatch
    from dreams.tasks import poll_replay_batches

    for _ in range(40):
        if not ReplayBatch.objects.filter(experiment=experiment, status="open").exists():
            break
        with django_capture_on_commit_callbacks(execute=True):
            poll_replay_batches.apply()
    experiment.refresh_from_db()

    assert experiment.status == "completed", experiment.error
    candidates = Replay.objects.filter(experiment=experiment, arm="candidate")
    assert {r.grader for r in candidates} == {"environment"}
    assert all(r.verdict == "pass" and r.simulated_turns for r in candidates)
    assert experiment.stats["target"]["fixes"] == experiment.stats["target"]["n"] > 0


def test_the_harness_check_replays_concurrently_with_the_same_verdicts(desk_agent, access_sandbox):
    """Up to `replay_concurrency` replays at once, each with a fresh MCP session of its own
    that it closes: the check says exactly what one replay after another says."""
    runs = _desk_runs(desk_agent, count=16)
    timing = ("seconds", "runs_per_second", "concurrency")

    def without_timing(check):
        return {k: v for k, v in check.items() if k not in timing}

    for run in runs:
        run.agent.replay_concurrency = 1
    sequential = check_harness(runs=runs, version=desk_agent.stable_version)
    sessions_before = len(access_sandbox.sandboxes)
    runs = list(
        Run.objects.filter(agent=desk_agent).select_related("agent").order_by("external_id")
    )
    for run in runs:
        run.agent.replay_concurrency = 4
    concurrent = check_harness(runs=runs, version=desk_agent.stable_version)

    assert (sequential["concurrency"], concurrent["concurrency"]) == (1, 4)
    assert without_timing(concurrent) == without_timing(sequential)
    assert concurrent["fidelity"] == 1.0 and concurrent["checked"] == len(runs)
    assert len(access_sandbox.sandboxes) - sessions_before == len(
        runs
    )  # one fresh session a replay
    assert access_sandbox.open_sessions() == 0  # every replay closed its session (DELETE)


def test_the_sandbox_can_answer_late_like_a_staging_host_a_hop_away():
    import time

    import anyio

    from dreams.demo_desk.sandbox import with_latency

    seen = []

    async def app(scope, receive, send):
        seen.append((scope["type"], time.monotonic()))

    delayed = with_latency(app, 0.05)

    async def main():
        started = time.monotonic()
        await delayed({"type": "lifespan"}, None, None)
        await delayed({"type": "http"}, None, None)
        return started

    started = anyio.run(main)
    assert [kind for kind, _ in seen] == ["lifespan", "http"]
    assert seen[1][1] - started >= 0.05  # a lower bound only: never a speed assumption
