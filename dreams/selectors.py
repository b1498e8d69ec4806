"""Reads for the dreams pages and the agent page's dreams panels: cycles, harness check, spend."""

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from agents.models import Agent, Run, Workspace
from dreams.llm.base import FREE_BACKENDS
from dreams.models import DreamCycle, Experiment, ModelCall, Proposal

SPEND_DAYS = 30


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


def agent_panels(*, agent: Agent) -> dict[str, Any]:
    """The agent page's dreams sections: open proposals and the latest cycles."""
    cycles = list(cycles_for(agent=agent)[:10])
    return {
        "agent": agent,
        "cycles": cycles,
        "polling": any(c.is_active for c in cycles),
        "open_proposals": list(
            Proposal.objects.filter(agent=agent, status__in=Proposal.OPEN).order_by(
                "-expected_value"
            )[:10]
        ),
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
