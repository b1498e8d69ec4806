"""The demo's IT access desk: seeded with its MCP sandbox, its proposal reaches verdicts past the
divergence (the simulated user continues, the sandbox grades), and its harness check shows."""

import pytest
from django.urls import reverse

from agents.models import Agent, Workspace
from dreams.demo_desk.seed import PROPOSAL_TITLE, seed_access_desk
from dreams.models import Proposal, Replay

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(access_sandbox, loopback_environments, owner, django_capture_on_commit_callbacks):
    workspace = Workspace.objects.get(slug="northwind")
    with django_capture_on_commit_callbacks(execute=True):
        line = seed_access_desk(workspace=workspace, sandbox_url=access_sandbox.url, runs=30)
    return line, Agent.objects.get(workspace=workspace, slug="access-desk")


def test_the_desk_is_seeded_once_with_its_sandbox_environment(seeded, access_sandbox):
    line, agent = seeded
    assert agent.environment_url == access_sandbox.url and "replayed in the sandbox" in line
    again = seed_access_desk(workspace=agent.workspace, sandbox_url=access_sandbox.url, runs=30)
    assert "its proposal exists" in again and "(0 new)" in again
    assert Proposal.objects.filter(agent=agent, title=PROPOSAL_TITLE).count() == 1


def test_the_desks_proposal_reaches_verdicts_past_the_divergence(seeded):
    _, agent = seeded
    experiment = Proposal.objects.get(agent=agent).latest_experiment
    candidates = list(Replay.objects.filter(experiment=experiment, arm=Replay.Arm.CANDIDATE))

    assert candidates and all(r.status == Replay.Status.DONE for r in candidates)
    # The candidate reads the policy first (an extra call before a user turn), yet every replay
    # ends with a verdict from the sandbox's final state, never "unverifiable".
    assert all(r.divergence_step is not None for r in candidates)
    assert {r.verdict for r in candidates} <= {"pass", "fail"}
    assert {r.grader for r in candidates} == {"environment"}
    assert all(r.simulated_turns for r in candidates)  # the simulated user said the "yes"
    target = experiment.stats["target"]
    assert target["fixes"] > 0 and target["regressions"] == 0
    assert experiment.harness_check["environment_drift"]["runs"] >= 1


def test_the_desks_agent_page_shows_the_harness_check_with_drift(seeded, client, owner):
    _, agent = seeded
    client.force_login(owner)

    page = client.get(reverse("agent-detail", args=[agent.slug])).content.decode()

    assert 'id="harness-check"' in page and 'id="harness-environment"' in page
    assert "drifted" in page and "sandbox environment" in page


def test_without_loopback_allowed_the_desk_is_seeded_without_an_environment(owner, settings):
    settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS = []
    workspace = Workspace.objects.get(slug="northwind")

    line = seed_access_desk(workspace=workspace, sandbox_url="http://127.0.0.1:18699/mcp", runs=6)

    assert "no sandbox environment" in line and "REVERIE_ENVIRONMENT_ALLOWED_HOSTS" in line
    assert Agent.objects.get(slug="access-desk").environment_url == ""
