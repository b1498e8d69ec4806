"""Reads for the capture API and pages, always scoped to one workspace."""

from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from agents.models import Agent, AuditEvent, ConfigVersion, Feedback, Run, Workspace

PASS_RATE_WINDOW = 1000
PASS_RATE_VERSIONS = 12


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
    a UNION ALL picks the page. Three queries whatever the table size or the number of agents.
    """
    agents = Agent.objects.filter(workspace=workspace)
    if agent_slug:
        agents = agents.filter(slug=agent_slug)
    agent_ids = list(agents.values_list("id", flat=True))
    if not agent_ids:
        return []
    per_agent = []
    for agent_id in agent_ids:
        newest = Run.objects.filter(agent_id=agent_id)
        if status:
            newest = newest.filter(status=status)
        newest_pks = newest.order_by("-started_at", "-id").values("pk")[: offset + limit]
        # The slice sits inside the subquery, so the UNION works on SQLite and PostgreSQL alike.
        per_agent.append(
            Run.objects.filter(pk__in=Subquery(newest_pks))
            .order_by()
            .values_list("id", "started_at")
        )
    combined = per_agent[0].union(*per_agent[1:], all=True) if len(per_agent) > 1 else per_agent[0]
    ids = [pk for pk, _ in combined.order_by("-started_at", "-id")[offset : offset + limit]]
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
        row = counts.get(agent.pk)
        # Counts set on plain instances (django-stubs types only `annotate()`'s attributes).
        agent.run_count = row["n"] if row else 0  # type: ignore[attr-defined]
        agent.failure_count = row["failures"] if row else 0  # type: ignore[attr-defined]
    return agents


def version_pass_rates(
    *, agent: Agent, window: int = PASS_RATE_WINDOW, versions: int = PASS_RATE_VERSIONS
) -> list[dict[str, Any]]:
    """Production pass rate of each recent config version (oldest first) over its latest `window`
    graded runs: one index range scan per version, so the cost does not grow with history."""
    current = agent.stable_version.number if agent.stable_version else None
    recent = list(
        ConfigVersion.objects.filter(agent=agent)
        .order_by("-number")
        .values_list("id", "number")[:versions]
    )
    parts = []
    for version_id, _ in recent:
        latest = (
            Run.objects.filter(agent=agent, config_version_id=version_id)
            .exclude(status=Run.Status.UNKNOWN)
            .order_by("-started_at")
            .values("pk")[:window]
        )
        parts.append(
            Run.objects.filter(pk__in=Subquery(latest))
            .order_by()
            .values("config_version_id")
            .annotate(n=Count("id"), passed=Count("id", filter=Q(status=Run.Status.SUCCESS)))
        )
    # One query for every version: a UNION ALL of the per-version range scans.
    counts: dict[int, Any] = {}
    if parts:
        rows = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
        counts = {row["config_version_id"]: row for row in rows}
    points = []
    for version_id, number in reversed(recent):
        row = counts.get(version_id) or {}
        points.append(
            {
                "number": number,
                "current": number == current,
                "n": row.get("n", 0),
                "passed": row.get("passed", 0),
            }
        )
    return points


def agent_page_context(agent: Agent) -> dict[str, Any]:
    """What the agent page itself shows: its versions and their pass rates (slots add the rest)."""
    versions = list(
        ConfigVersion.objects.filter(agent=agent)
        .select_related("author")
        .defer("system_prompt", "memory_documents", "tools")
        .order_by("-number")
    )
    return {"agent": agent, "versions": versions, "pass_rates": version_pass_rates(agent=agent)}


def audit_log(
    *, workspace: Workspace, action: str = "", actor: str = "", target: str = ""
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(workspace=workspace).select_related("actor")
    if action:
        events = events.filter(action__startswith=action)
    if actor:
        events = events.filter(actor_label__icontains=actor)
    if target:
        kind, _, pk = target.partition(":")
        events = events.filter(target_type=kind)
        if pk:
            events = events.filter(target_id=pk)
    return events.order_by("-created_at", "-id")


def audit_actions(*, workspace: Workspace) -> list[str]:
    return list(
        AuditEvent.objects.filter(workspace=workspace)
        .order_by("action")
        .values_list("action", flat=True)
        .distinct()
    )
