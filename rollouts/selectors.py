"""Reads for the rollout pages, scoped to the caller's workspace."""

from typing import Any

from django.db.models import QuerySet

from agents.models import Agent, Workspace
from dreams.models import Proposal
from rollouts.canary import ArmMetrics, StageAnalysis, analyse_stage
from rollouts.models import Rollout, RolloutStage
from rollouts.services import stage_readiness


def rollouts_for(workspace: Workspace) -> QuerySet[Rollout]:
    return Rollout.objects.filter(agent__workspace=workspace).select_related(
        "agent", "from_version", "to_version", "proposal"
    )


def approved_proposals_for(workspace: Workspace) -> QuerySet[Proposal]:
    return Proposal.objects.filter(
        agent__workspace=workspace, status=Proposal.Status.APPROVED
    ).select_related("agent", "base_version", "candidate_version")


def agent_split(agent: Agent) -> dict[str, Any]:
    """What the config endpoint serves right now, for the agent-page partial."""
    canary = agent.canary_percent if agent.canary_version_id else 0
    return {
        "agent": agent,
        "stable_number": agent.stable_version.number if agent.stable_version else None,
        "canary_number": agent.canary_version.number if agent.canary_version else None,
        "canary_percent": canary,
        "stable_percent": 100 - canary,
        "active_rollout": Rollout.objects.filter(agent=agent, status__in=Rollout.ACTIVE).first(),
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _ci(ci: tuple[float, float] | None, value: float | None) -> str:
    if value is None:
        return ""
    return "—" if ci is None else f"{ci[0] * 100:.1f}–{ci[1] * 100:.1f}%"


def metric_rows(stable: ArmMetrics, canary: ArmMetrics) -> list[dict[str, str]]:
    """The per-arm table as display strings (rates with 95% Wilson intervals)."""

    def row(label: str, attr: str, ci_attr: str | None) -> dict[str, str]:
        out = {"label": label}
        for arm_name, arm in (("stable", stable), ("canary", canary)):
            value = getattr(arm, attr)
            out[arm_name] = _pct(value)
            out[f"{arm_name}_ci"] = _ci(getattr(arm, ci_attr), value) if ci_attr else ""
        return out

    def plain(label: str, fn: Any) -> dict[str, str]:
        return {
            "label": label,
            "stable": fn(stable),
            "canary": fn(canary),
            "stable_ci": "",
            "canary_ci": "",
        }

    return [
        plain("Runs (labelled)", lambda a: f"{a.counts.n} ({a.counts.labelled})"),
        row("Success rate", "success_rate", "success_ci"),
        row("Error rate", "error_rate", "error_ci"),
        row("Negative feedback", "negative_rate", "negative_ci"),
        plain("Mean tokens", lambda a: "—" if a.mean_tokens is None else f"{a.mean_tokens:,.0f}"),
        plain(
            "p95 latency",
            lambda a: "—" if a.p95_latency_ms is None else f"{a.p95_latency_ms:,.0f} ms",
        ),
    ]


def rollout_page(rollout: Rollout) -> dict[str, Any]:
    """Stages, the live analysis of the current stage and whether it may advance (and why not)."""
    stages = list(RolloutStage.objects.filter(rollout=rollout))
    current = next((s for s in stages if s.index == rollout.current_stage), None)
    analysis: StageAnalysis | None = None
    readiness = None
    if current is not None and current.started_at is not None:
        analysis = analyse_stage(rollout=rollout, stage=current)
        if rollout.is_active:
            readiness = stage_readiness(rollout=rollout, stage=current)
    return {
        "rollout": rollout,
        "stages": stages,
        "current": current,
        "is_final_stage": current is not None and current.index == len(stages) - 1,
        "analysis": analysis,
        "rows": metric_rows(analysis.stable, analysis.canary) if analysis else [],
        "readiness": readiness,
        "split": agent_split(rollout.agent),
    }
