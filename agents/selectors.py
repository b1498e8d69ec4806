"""Reads for the capture API and pages, always scoped to one workspace."""

from datetime import datetime
from typing import Any

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
