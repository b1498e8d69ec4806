"""Every HTML page's query count is pinned by comparison: rendered with small data, then with
grown data (more agents, runs, feedback, proposals, replays, patterns, cycles, run sets, rollout
stages, audit rows), it makes the same number of queries; the rollout page also stays under 40.

A new page gets a line in PAGES (test_every_html_page_is_pinned fails until it does).
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern

from agents import run_sets
from agents.models import Agent, Run
from dreams.models import Experiment
from rollouts import services as rollout_services
from rollouts.models import Rollout
from tests.factories import (
    AgentFactory,
    ConfigVersionFactory,
    FeedbackFactory,
    reviewable_proposal,
)
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs

pytestmark = pytest.mark.django_db

ROLLOUT_CEILING = 40


@dataclass
class World:
    """One agent's worth of everything the pages show."""

    agent: Agent
    proposal: Any
    run: Run
    replay_run_id: int
    rollout: Rollout


def build(agent: Agent, owner: Any, *, size: int) -> World:
    """`size` proposals (each with 2×size target runs and `size` patterns, replayed), feedback,
    `size` run sets, and a rollout on its stage `size` of five with live runs on both arms."""
    assert settings.REVERIE_CANARY_MIN_SAMPLE <= 60
    rng = random.Random(size)
    proposal = None
    for _ in range(size):
        proposal = reviewable_proposal(agent=agent, runs=2 * size, patterns=size)
    assert proposal is not None
    runs = list(Run.objects.filter(agent=agent).order_by("id"))
    for run in runs[: 2 * size]:
        FeedbackFactory(run=run, rating=-1)
    for index in range(size):
        run_sets.create_run_set(
            agent=agent,
            actor=owner,
            name=f"set {index}",
            external_ids=[r.external_id for r in runs[: index + 2]],
        )
    to_roll = approved_proposal(agent, actor=owner)
    rollout = rollout_services.start_rollout(
        proposal_id=to_roll.pk,
        actor=owner,
        stages=[5, 10, 25, 50, 100],
        min_runs=0,
        min_duration=timedelta(0),
    )
    for _ in range(size - 1):
        rollout = rollout_services.approve_stage(rollout_id=rollout.pk, actor=owner)
    age_stage(rollout, minutes=5)
    # Past the canary's first sequential look (REVERIE_CANARY_MIN_SAMPLE = 50) even when small:
    # the small page already makes the look's queries; the grown one is at a later look.
    seed_runs(agent=agent, version=rollout.from_version, n=100 * size, success=0.9, rng=rng)
    seed_runs(agent=agent, version=rollout.to_version, n=60 * size, success=0.9, rng=rng)
    experiment = Experiment.objects.filter(proposal=proposal).latest("id")
    replay_run_id = experiment.replays.order_by("run_id").values_list("run_id", flat=True)[0]
    run = Run.objects.filter(agent=agent, replays__isnull=False).order_by("id").first()
    assert run is not None
    return World(agent, proposal, run, replay_run_id, rollout)


Page = Callable[[World], str]
PAGES: dict[str, Page] = {
    # agents
    "agents": lambda w: "/agents/",
    "agent-detail": lambda w: f"/agents/{w.agent.slug}/",
    "runs": lambda w: "/runs/",
    "runs-filtered": lambda w: f"/runs/?agent={w.agent.slug}&status=failure",
    "run-detail": lambda w: f"/runs/{w.run.pk}/",
    "agent-run-sets": lambda w: f"/agents/{w.agent.slug}/run-sets/",
    "audit": lambda w: "/audit/",
    # dreams
    "agent-spend": lambda w: f"/agents/{w.agent.slug}/spend/",
    "dreams": lambda w: "/dreams/",
    "cycle-detail": lambda w: f"/dreams/{w.proposal.cycle_id}/",
    "cycle-markdown": lambda w: f"/dreams/{w.proposal.cycle_id}/report.md",
    # reviews
    "home": lambda w: "/",
    "proposal-detail": lambda w: f"/proposals/{w.proposal.pk}/",
    "proposal-split": lambda w: f"/proposals/{w.proposal.pk}/?view=split",
    "replay-detail": lambda w: f"/proposals/{w.proposal.pk}/replays/{w.replay_run_id}/",
    "proposal-edit": lambda w: f"/proposals/{w.proposal.pk}/edit/",
    "agent-propose": lambda w: f"/agents/{w.agent.slug}/propose/",
    # rollouts
    "rollout-list": lambda w: "/rollouts/",
    "rollout-detail": lambda w: f"/rollouts/{w.rollout.pk}/",
    "agent-split": lambda w: f"/rollouts/agents/{w.agent.slug}/split/",
}
# The fragments htmx swaps in (same URL, a partial chosen by the request's headers).
FRAGMENTS: dict[str, tuple[Page, dict[str, str]]] = {
    "home#queue-results": (lambda w: "/?sort=agent", {"HX-Request": "true"}),
    "proposal-detail#replay-list": (
        lambda w: f"/proposals/{w.proposal.pk}/?outcome=fixed",
        {"HX-Request": "true", "HX-Target": "replay-list"},
    ),
    "replay-detail#replay-trajectory": (
        lambda w: f"/proposals/{w.proposal.pk}/replays/{w.replay_run_id}/",
        {"HX-Request": "true"},
    ),
    "runs#fragment": (lambda w: "/runs/?status=failure", {"HX-Request": "true"}),
    "rollout-detail#rollout-live": (
        lambda w: f"/rollouts/{w.rollout.pk}/",
        {"HX-Request": "true"},
    ),
}
# GET routes that are not pages: actions (POST only) and redirects.
NOT_PAGES = {
    "run-feedback",
    "agent-run-set-action",
    "switch-workspace",
    "agent-dream",
    "cycle-cancel",
    "cycle-rerun",
    "experiment-cancel",
    "experiment-rerun",
    "proposal-decide",
    "proposal-rebase",
    "proposal-resolve",
    "proposal-assign",
    "proposal-run-set",
    "proposal-comment",
    "proposal-thread-resolve",
    "rollout-start",
    "rollout-approve",
    "rollout-halt",
    "rollout-roll-back",
}
APPS = ("agents", "dreams", "reviews", "rollouts")


def _count(client: Any, url: str, headers: dict[str, str] | None = None) -> int:
    client.get(url, headers=headers)  # warm up: sessions, caches filled on first use
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, headers=headers)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries)


@pytest.fixture(autouse=True)
def no_stage_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rollouts here start with stages that advance at once; the floor has its own tests.
    monkeypatch.setattr("rollouts.services.minimum_stage_runs", lambda: 0)


@pytest.mark.parametrize("name", sorted(PAGES) + sorted(FRAGMENTS))
def test_the_page_makes_as_many_queries_with_grown_data(name, client, owner, agent, workspace):
    page, headers = FRAGMENTS.get(name) or (PAGES[name], None)
    small = build(agent, owner, size=1)
    client.force_login(owner)
    before = _count(client, page(small), headers)

    big_agent = AgentFactory(workspace=workspace, slug="big", name="Big")
    big_agent.stable_version = ConfigVersionFactory(agent=big_agent, number=1)
    big_agent.save(update_fields=["stable_version"])
    big = build(big_agent, owner, size=3)
    after = _count(client, page(big), headers)
    assert after == before, f"{name}: {before} queries with small data, {after} with grown data"
    if name.startswith("rollout-detail"):
        assert after <= ROLLOUT_CEILING


def test_every_html_page_is_pinned():
    """Every route of every app's urls.py is a pinned page or a named non-page."""
    names = {
        entry.name
        for app in APPS
        for entry in import_module(f"{app}.urls").urlpatterns
        if isinstance(entry, URLPattern)
    }
    missing = names - set(PAGES) - NOT_PAGES
    assert not missing, f"pages without a query-count pin: {sorted(missing)}"
