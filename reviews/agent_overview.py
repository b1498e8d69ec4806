"""Reads for the agent page and the dreams pages: versions, cycles, pass rate by version, spend."""

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from agents.models import Agent, ConfigVersion, Run, Workspace
from dreams.cycles import start_cycle
from dreams.llm.base import FREE_BACKENDS
from dreams.models import DreamCycle, Experiment, ModelCall, Proposal

SPEND_DAYS = 30


PASS_RATE_WINDOW = 1000
PASS_RATE_VERSIONS = 12


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
    points = []
    for version_id, number in reversed(recent):
        latest = (
            Run.objects.filter(agent=agent, config_version_id=version_id)
            .exclude(status=Run.Status.UNKNOWN)
            .order_by("-started_at")
            .values("pk")[:window]
        )
        counts = Run.objects.filter(pk__in=Subquery(latest)).aggregate(
            n=Count("id"), passed=Count("id", filter=Q(status=Run.Status.SUCCESS))
        )
        points.append({"number": number, "current": number == current, **counts})
    return points


def spend(*, agent: Agent, days: int = SPEND_DAYS) -> dict[str, Any]:
    """Dreaming (dream + replay + judge model calls) against production run cost, last `days`."""
    since = timezone.now() - timedelta(days=days)
    by_purpose = dict(
        ModelCall.objects.filter(agent=agent, created_at__gte=since)
        .values_list("purpose")
        .annotate(total=Sum("cost_usd"))
    )
    dreaming = sum((v or Decimal(0) for v in by_purpose.values()), Decimal(0))
    free_calls = ModelCall.objects.filter(
        agent=agent, created_at__gte=since, backend__in=FREE_BACKENDS
    ).count()
    production = Run.objects.filter(agent=agent, started_at__gte=since).aggregate(
        total=Sum("cost_usd")
    )["total"] or Decimal(0)
    total = dreaming + production
    return {
        "days": days,
        "dreaming": dreaming,
        "production": production,
        "by_purpose": [
            (label, by_purpose.get(key) or Decimal(0)) for key, label in ModelCall.Purpose.choices
        ],
        "dreaming_share": float(dreaming / total) if total else 0.0,
        "free_calls": free_calls,  # simulated / recorded: priced at $0, nothing spent
    }


def cycles_for(
    *, agent: Agent | None = None, workspace: Workspace | None = None
) -> QuerySet[DreamCycle]:
    cycles = DreamCycle.objects.select_related("agent", "created_by").annotate(
        proposal_count=Count("proposals", distinct=True),
        pattern_count=Count("patterns", distinct=True),
    )
    if agent is not None:
        cycles = cycles.filter(agent=agent)
    if workspace is not None:
        cycles = cycles.filter(agent__workspace=workspace)
    return cycles.order_by("-created_at", "-id")


def get_cycle_for(*, workspace: Workspace, pk: int) -> DreamCycle:
    from django.http import Http404

    cycle = (
        DreamCycle.objects.filter(agent__workspace=workspace, pk=pk)
        .select_related("agent", "created_by")
        .first()
    )
    if cycle is None:
        raise Http404("No such dream cycle in this workspace.")
    return cycle


def cycle_detail(*, cycle: DreamCycle) -> dict[str, Any]:
    return {
        "cycle": cycle,
        "patterns": list(cycle.patterns.order_by("-count", "id")),
        "proposals": list(
            Proposal.objects.filter(cycle=cycle).select_related("candidate_version").order_by("id")
        ),
        "report": cycle.report or {},
        "runs_studied": cycle.runs.count(),
        "summary": [
            (key.replace("_", " "), value)
            for key, value in (cycle.report or {}).items()
            if isinstance(value, str | int | float) and key != "markdown"
        ],
        "sections": report_sections(cycle.report or {}),
    }


def report_sections(report: dict[str, Any], *, max_columns: int = 8) -> list[dict[str, Any]]:
    """Lists of records in a report (e.g. patterns, proposals) as small tables, whatever their keys."""
    sections = []
    for key, value in report.items():
        if not (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            continue
        columns: list[str] = []
        for record in value:
            for column in record:
                if column not in columns and len(columns) < max_columns:
                    columns.append(column)
        rows = [
            [
                v
                if isinstance(v := record.get(c), str | int | float) or v is None
                else json.dumps(v)[:200]
                for c in columns
            ]
            for record in value
        ]
        sections.append(
            {"title": key.replace("_", " ").capitalize(), "columns": columns, "rows": rows}
        )
    return sections


def cycle_markdown(*, cycle: DreamCycle) -> str:
    """The report as Markdown: the dreamer's own text when it wrote one, else built from the rows."""
    report = cycle.report or {}
    if isinstance(report.get("markdown"), str) and report["markdown"].strip():
        return report["markdown"]
    detail = cycle_detail(cycle=cycle)
    lines = [
        f"# Dream cycle {cycle.pk} — {cycle.agent.name}",
        "",
        f"- Status: {cycle.get_status_display()}",
        f"- Trigger: {cycle.get_trigger_display()}",
        f"- Started: {cycle.started_at or '—'}",
        f"- Finished: {cycle.finished_at or '—'}",
        f"- Tokens: {cycle.tokens_used}  ·  cost: ${cycle.cost_usd}",
        "",
        "## Failure patterns",
        "",
    ]
    for pattern in detail["patterns"]:
        lines.append(f"- **{pattern.title}** ({pattern.count} runs): {pattern.description}")
    lines += ["", "## Proposals", ""]
    for proposal in detail["proposals"]:
        lines.append(f"- #{proposal.pk} {proposal.title} — {proposal.get_status_display()}")
    return "\n".join(lines) + "\n"


def agent_overview(*, agent: Agent) -> dict[str, Any]:
    versions = list(
        ConfigVersion.objects.filter(agent=agent)
        .select_related("author")
        .defer("system_prompt", "memory_documents", "tools")
        .order_by("-number")
    )
    return {
        "agent": agent,
        "versions": versions,
        "cycles": list(cycles_for(agent=agent)[:10]),
        "pass_rates": version_pass_rates(agent=agent),
        "open_proposals": list(
            Proposal.objects.filter(agent=agent, status__in=Proposal.OPEN).order_by(
                "-expected_value"
            )[:10]
        ),
        "can_dream": not agent.is_paused,
        **latest_harness_check(agent=agent),
    }


def latest_harness_check(*, agent: Agent) -> dict[str, Any]:
    """The newest experiment's harness check (a fixed two queries at most)."""
    for experiment in (
        Experiment.objects.filter(agent=agent, proposal__isnull=False)
        .only("id", "proposal_id", "harness_check")
        .order_by("-id")[:5]
    ):
        if experiment.harness_check:
            return {
                "harness_check": experiment.harness_check,
                "harness_proposal": experiment.proposal_id,
            }
    return {"harness_check": None, "harness_proposal": None}


def start_dream(*, agent: Agent, user: Any) -> DreamCycle:
    """The "Dream now" button: a manual cycle (refused for a paused agent or one already dreaming)."""
    return start_cycle(agent=agent, trigger=DreamCycle.Trigger.MANUAL, actor=user)
