"""Reads for the dreams pages and the agent page's dreams panels: cycles, harness check, spend."""

import json
from typing import Any

from django.db.models import Count, QuerySet

from agents.models import Agent, Workspace
from dreams.models import DreamCycle, Experiment, Proposal


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
        "stop_reason": (cycle.report or {}).get("stop_reason", ""),
        # The header and the curated tables below already show the cycle's fields, patterns and
        # proposals; the other lists of the report (not drafted, refused answers, …) as tables.
        "sections": report_sections(cycle.report or {}, skip=SHOWN_ON_THE_CYCLE_PAGE),
    }


SHOWN_ON_THE_CYCLE_PAGE = frozenset({"patterns", "suggestions"})


def report_sections(
    report: dict[str, Any], *, max_columns: int = 8, skip: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Lists of records in a report (e.g. not drafted, refused answers) as small tables,
    whatever their keys; column names read as words."""
    sections = []
    for key, value in report.items():
        if key in skip:
            continue
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
            {
                "title": key.replace("_", " ").capitalize(),
                "columns": [c.replace("_", " ").capitalize() for c in columns],
                "rows": rows,
            }
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
    """The newest experiment's harness check and its simulated-user check (one query).

    `simulated_user_check` is the newest experiment's `stats["simulated_user"]` when the
    simulated user could not be trusted there (the agent page says so, with the verdict)."""
    found: dict[str, Any] = {
        "harness_check": None,
        "harness_proposal": None,
        "simulated_user_check": None,
        "simulated_user_proposal": None,
    }
    for experiment in (
        Experiment.objects.filter(agent=agent, proposal__isnull=False)
        .only("id", "proposal_id", "harness_check", "stats")
        .order_by("-id")[:5]
    ):
        check = (experiment.stats or {}).get("simulated_user") or {}
        if found["simulated_user_proposal"] is None and check:
            found["simulated_user_proposal"] = experiment.proposal_id
            if check.get("trusted") is False:
                found["simulated_user_check"] = check
        if experiment.harness_check:
            found["harness_check"] = experiment.harness_check
            found["harness_proposal"] = experiment.proposal_id
            break
    return found
