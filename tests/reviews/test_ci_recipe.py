"""The CI recipe (client/reverie-propose.sh) against a live server: it posts the prompt file,
waits for the verdict and exits non-zero on regressions."""

import io
import os
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

from agents import services
from agents.models import Agent
from dreams.models import Proposal
from dreams.simulated.transport import answer
from tests.fake_anthropic import FakeAnthropic, text

SCRIPT = Path(__file__).resolve().parents[2] / "client" / "reverie-propose.sh"
RULE = "\nBefore issuing any refund, always check the refund window with check_refund_policy.\n"


@pytest.fixture
def seeded(transactional_db):
    call_command("seed_demo", runs=60, no_dream=True, stdout=io.StringIO())
    agent = Agent.objects.select_related("stable_version", "workspace").get(slug="refunds-desk")
    _, raw = services.create_api_key(workspace=agent.workspace, name="ci", scope="admin")
    return agent, raw


def run_recipe(live_server, raw, agent, prompt: Path, **env):
    return subprocess.run(
        [str(SCRIPT), agent.slug, str(prompt), "Prompt change from PR #12"],
        env={
            **os.environ,
            "REVERIE_URL": live_server.url,
            "REVERIE_API_KEY": raw,
            "REVERIE_POLL": "1",
            "REVERIE_TIMEOUT": "120",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_recipe_posts_the_file_waits_and_reports_the_verdict(live_server, seeded, tmp_path):
    agent, raw = seeded
    prompt = tmp_path / "prompt.md"
    prompt.write_text(agent.stable_version.system_prompt + RULE)
    # Regressions allowed here: this run checks the round trip and the printed verdict.
    result = run_recipe(live_server, raw, agent, prompt, REVERIE_MAX_REGRESSIONS="1000")
    assert result.returncode == 0, result.stderr + result.stdout
    proposal = Proposal.objects.get(title="Prompt change from PR #12")
    assert proposal.source == "human" and proposal.status == "ready"
    assert proposal.candidate_version.system_prompt.endswith(RULE)
    assert f"proposal #{proposal.pk} is ready; verdict" in result.stdout


def test_the_recipe_fails_the_job_on_regressions(
    live_server, seeded, tmp_path, fake_gateway_settings
):
    agent, raw = seeded

    def broken_candidate(body):
        # The loopback model answers as the simulated one, except under the broken prompt.
        if "BROKEN" in str(body.get("system") or []) and not body.get("tool_choice"):
            return FakeAnthropic.message([text("I can't help with refunds.")])
        return answer(body)

    fake_gateway_settings.responder = broken_candidate
    prompt = tmp_path / "prompt.md"
    prompt.write_text(agent.stable_version.system_prompt + "\nBROKEN\n")
    result = run_recipe(live_server, raw, agent, prompt)
    proposal = Proposal.objects.get(title="Prompt change from PR #12")
    regressions = proposal.latest_experiment.stats["overall"]["regressions"]
    assert regressions > 0 or proposal.latest_experiment.stats.get("verdict") == "regresses"
    assert result.returncode == 1, result.stdout + result.stderr


def test_an_unknown_agent_is_a_usage_error(live_server, seeded, tmp_path):
    _, raw = seeded
    prompt = tmp_path / "prompt.md"
    prompt.write_text("x")
    result = run_recipe(live_server, raw, Agent(slug="nope"), prompt)
    assert result.returncode == 2 and "HTTP 404" in result.stderr


# -- the same recipe with the Python client (python -m reverie_client.ci) -------------------

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


def run_python_recipe(live_server, raw, agent, prompt: Path, *extra: str):
    import sys

    return subprocess.run(
        [sys.executable, "-m", "reverie_client.ci", agent.slug, str(prompt), "--title", "PR #13"]
        + [*extra, "--poll", "1", "--timeout", "120"],
        env={
            **os.environ,
            "PYTHONPATH": str(CLIENT_DIR),  # this checkout's client, not the installed one
            "REVERIE_URL": live_server.url,
            "REVERIE_API_KEY": raw,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_python_recipe_posts_the_file_waits_and_reports_the_verdict(
    live_server, seeded, tmp_path
):
    agent, raw = seeded
    prompt = tmp_path / "prompt.md"
    prompt.write_text(agent.stable_version.system_prompt + RULE)
    result = run_python_recipe(live_server, raw, agent, prompt, "--max-regressions", "1000")
    assert result.returncode == 0, result.stderr + result.stdout
    proposal = Proposal.objects.get(title="PR #13")
    assert proposal.source == "human" and proposal.status == "ready"
    assert proposal.candidate_version.system_prompt.endswith(RULE)
    assert f"proposal #{proposal.pk} is ready; verdict" in result.stdout


def test_the_python_recipe_fails_the_job_on_regressions(
    live_server, seeded, tmp_path, fake_gateway_settings
):
    agent, raw = seeded

    def broken_candidate(body):
        if "BROKEN" in str(body.get("system") or []) and not body.get("tool_choice"):
            return FakeAnthropic.message([text("I can't help with refunds.")])
        return answer(body)

    fake_gateway_settings.responder = broken_candidate
    prompt = tmp_path / "prompt.md"
    prompt.write_text(agent.stable_version.system_prompt + "\nBROKEN\n")
    result = run_python_recipe(live_server, raw, agent, prompt)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "regressed" in result.stdout


def test_the_python_recipe_exits_2_on_an_api_error(live_server, seeded, tmp_path):
    agent, raw = seeded
    prompt = tmp_path / "prompt.md"
    prompt.write_text(agent.stable_version.system_prompt)  # unchanged: refused with a 400
    result = run_python_recipe(live_server, raw, agent, prompt)
    assert result.returncode == 2
    assert "same as the stable version" in result.stderr


def test_wait_for_verdict_times_out_with_the_proposal(live_server, seeded):
    # Run with PYTHONPATH=$PWD/client so this checkout's client is the one imported.
    from reverie_client import Reverie, ReverieTimeout

    from tests.factories import reviewable_proposal

    agent, raw = seeded

    proposal = reviewable_proposal(agent=agent, runs=2)
    Proposal.objects.filter(pk=proposal.pk).update(status="replaying")
    ticks = iter([0.0, 5.0, 11.0])
    reverie = Reverie(live_server.url, raw)
    try:
        with pytest.raises(ReverieTimeout) as raised:
            reverie.wait_for_verdict(
                proposal.pk, timeout=10, poll=5, sleep=lambda _s: None, clock=lambda: next(ticks)
            )
        assert raised.value.proposal["status"] == "replaying"
        Proposal.objects.filter(pk=proposal.pk).update(status="ready")
        assert reverie.wait_for_verdict(proposal.pk)["verdict"]
    finally:
        reverie.close(timeout=0)
