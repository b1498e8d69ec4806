"""Helpers for the rollout tests: approved proposals and seeded live runs."""

import random
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from agents.models import Agent, ConfigVersion, Feedback, Run
from dreams.models import Proposal
from dreams.proposals import create_proposal, transition_proposal
from tests.factories import ConfigVersionFactory


def approved_proposal(agent: Agent, *, actor: Any = None, prompt: str = "") -> Proposal:
    """A proposal taken through drafted → ready → approved with the real state machine."""
    number = ConfigVersion.objects.filter(agent=agent).count() + 1
    candidate = ConfigVersionFactory(
        agent=agent,
        number=number,
        system_prompt=prompt or f"You are a helpful support agent. Revision {number}.",
        parent=agent.stable_version,
    )
    proposal = create_proposal(
        agent=agent,
        base_version=agent.stable_version,
        candidate_version=candidate,
        title=f"Candidate v{number}",
        author=actor,
    )
    transition_proposal(proposal_id=proposal.pk, to=Proposal.Status.READY, actor=actor)
    transition_proposal(proposal_id=proposal.pk, to=Proposal.Status.APPROVED, actor=actor)
    return proposal


def seed_runs(
    *,
    agent: Agent,
    version: ConfigVersion,
    n: int,
    success: float,
    rng: random.Random,
    error: float = 0.0,
    negative: float = 0.0,
    started_at: datetime | None = None,
    prefix: str = "",
) -> list[Run]:
    """`n` live runs on `version`, each outcome drawn at random with the given rates."""
    start = started_at or timezone.now() - timedelta(seconds=1, milliseconds=n)
    tag = prefix or f"v{version.number}-{rng.random():.12f}"
    runs = []
    for i in range(n):
        draw = rng.random()
        if draw < error:
            status = Run.Status.ERROR
        elif draw < error + success * (1 - error):
            status = Run.Status.SUCCESS
        else:
            status = Run.Status.FAILURE
        runs.append(
            Run(
                agent=agent,
                config_version=version,
                external_id=f"{tag}-{i}",
                status=status,
                messages=[],
                input_tokens=rng.randint(200, 800),
                output_tokens=rng.randint(50, 300),
                latency_ms=rng.randint(300, 3000),
                started_at=start + timedelta(milliseconds=i),
            )
        )
    runs = Run.objects.bulk_create(runs)
    feedback = [
        Feedback(run=run, rating=Feedback.Rating.NEGATIVE, comment="bad")
        for run in runs
        if rng.random() < negative
    ]
    Feedback.objects.bulk_create(feedback)
    return runs


def age_stage(rollout: Any, *, minutes: int = 120) -> None:
    """Pretend the current stage started `minutes` ago (its window moves with it)."""
    stage = rollout.stages.get(index=rollout.current_stage)
    stage.started_at = timezone.now() - timedelta(minutes=minutes)
    stage.save(update_fields=["started_at"])
