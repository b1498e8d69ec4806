"""Reads for the capture API and pages, always scoped to one workspace."""

import heapq
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from agents.models import Agent, ConfigVersion, Feedback, Run, Workspace


def agents_for(workspace: Workspace) -> QuerySet[Agent]:
    return Agent.objects.filter(workspace=workspace).select_related(
        "stable_version", "canary_version"
    )


def agents_with_run_counts(workspace: Workspace) -> QuerySet[Agent]:
    return agents_for(workspace).annotate(
        run_count=Count("runs"),
        failure_count=Count(
            "runs", filter=Q(runs__status__in=[Run.Status.FAILURE, Run.Status.ERROR])
        ),
    )


def versions_for(agent: Agent) -> QuerySet[ConfigVersion]:
    return ConfigVersion.objects.filter(agent=agent).select_related("author").order_by("-number")


def negative_feedback_exists() -> Exists:
    return Exists(Feedback.objects.filter(run=OuterRef("pk"), rating=Feedback.Rating.NEGATIVE))


def runs_for(
    workspace: Workspace,
    *,
    agent_slug: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    negative_feedback: bool | None = None,
    config_version: int | None = None,
) -> QuerySet[Run]:
    runs = Run.objects.filter(agent__workspace=workspace).select_related("agent", "config_version")
    if agent_slug:
        runs = runs.filter(agent__slug=agent_slug)
    if status:
        runs = runs.filter(status=status)
    if since:
        runs = runs.filter(started_at__gte=since)
    if until:
        runs = runs.filter(started_at__lt=until)
    if negative_feedback is not None:
        runs = runs.annotate(has_negative=negative_feedback_exists()).filter(
            has_negative=negative_feedback
        )
    if config_version is not None:
        runs = runs.filter(config_version__number=config_version)
    return runs


def run_detail(run: Run) -> dict[str, Any]:
    return {"run": run, "feedback": list(run.feedback.select_related("author"))}


def recent_runs(
    workspace: Workspace,
    *,
    agent_slug: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> list[Run]:
    """Newest runs across the workspace's agents, one index range scan per agent.

    Sorting a whole workspace by time would sort every run; instead each agent contributes
    its newest `offset + limit` rows through the (agent, status?, -started_at) indexes and
    a UNION ALL picks the page. Two queries whatever the table size.
    """
    agents = Agent.objects.filter(workspace=workspace)
    if agent_slug:
        agents = agents.filter(slug=agent_slug)
    agent_ids = list(agents.values_list("id", flat=True))
    if not agent_ids:
        return []
    per_agent = []
    for agent_id in agent_ids:
        runs = Run.objects.filter(agent_id=agent_id)
        if status:
            runs = runs.filter(status=status)
        per_agent.append(
            runs.order_by("-started_at", "-id").values_list("id", "started_at")[: offset + limit]
        )
    if len(per_agent) > 1 and connection.features.supports_slicing_ordering_in_compound:
        combined = per_agent[0].union(*per_agent[1:], all=True)
        ids = [pk for pk, _ in combined.order_by("-started_at", "-id")[offset : offset + limit]]
    else:
        # SQLite cannot slice inside a UNION: merge the per-agent lists here instead.
        merged = heapq.merge(
            *(list(q) for q in per_agent), key=lambda r: (r[1], r[0]), reverse=True
        )
        ids = [pk for pk, _ in list(merged)[offset : offset + limit]]
    rows = Run.objects.filter(pk__in=ids).select_related("agent", "config_version")
    by_id = {
        run.pk: run for run in rows.defer("messages", "system", "tools", "metadata", "expectations")
    }
    return [by_id[pk] for pk in ids if pk in by_id]


def agents_with_recent_counts(workspace: Workspace, *, days: int = 7) -> list[Agent]:
    """Agents with their run and failure counts over the last `days` (one grouped query)."""
    from datetime import timedelta

    from django.utils import timezone

    since = timezone.now() - timedelta(days=days)
    counts = {
        row["agent_id"]: row
        for row in Run.objects.filter(agent__workspace=workspace, started_at__gte=since)
        .values("agent_id")
        .annotate(
            n=Count("id"),
            failures=Count("id", filter=Q(status__in=[Run.Status.FAILURE, Run.Status.ERROR])),
        )
    }
    agents = list(agents_for(workspace))
    for agent in agents:
        row = counts.get(agent.pk, {})
        agent.run_count = row.get("n", 0)
        agent.failure_count = row.get("failures", 0)
    return agents
