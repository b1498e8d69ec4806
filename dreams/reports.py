"""What a dream cycle found and proposed: the report (JSON) and the Markdown correction report.

The report has the shape the hosted dreaming describes — identified patterns, suggested
adjustments with their diff, before/after metrics from the experiments, usage — and is built
from the database each time, so metrics appear as experiments finish.
"""

from typing import Any

from django.db.models import Prefetch
from django.http import HttpResponse

from dreams import drafting, spend
from dreams.models import DreamCycle, FailurePattern, PatternRun, Proposal

EXAMPLE_RUNS = 5
DIVERGENCES_SHOWN = 10


# -- report --------------------------------------------------------------------------------


def _arm(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(block, dict):
        return None
    base, cand = block.get("baseline") or {}, block.get("candidate") or {}
    return {
        "n": block.get("n"),
        "baseline_pass_rate": base.get("rate"),
        "candidate_pass_rate": cand.get("rate"),
        "baseline_ci": base.get("ci"),
        "candidate_ci": cand.get("ci"),
        "fixes": block.get("fixes"),
        "regressions": block.get("regressions"),
        "mcnemar_p": block.get("mcnemar_p"),
        "off_recording_share": block.get("off_recording_share"),
        "unverifiable_share": block.get("unverifiable_share"),
        "simulated_user_share": block.get("simulated_user_share"),
        "tokens_delta_mean": block.get("tokens_delta_mean"),
        "cost_delta_mean": block.get("cost_delta_mean"),
    }


def experiment_metrics(proposal: Proposal) -> dict[str, Any] | None:
    experiments = sorted(proposal.experiments.all(), key=lambda e: e.pk)
    if not experiments:
        return None
    experiment = experiments[-1]
    stats = experiment.stats or {}
    return {
        "experiment_id": experiment.pk,
        "status": experiment.status,
        "verdict": stats.get("verdict"),
        "fidelity": stats.get("fidelity", experiment.fidelity),
        "target": _arm(stats.get("target")),
        "regression": _arm(stats.get("regression")),
        "early_stop": stats.get("early_stop"),
        # The harness check (recorded model, no tokens): fidelity, threshold, can_judge, summary.
        "harness": stats.get("harness"),
        # The simulated user: share of replays that used one, and the baseline arm with one
        # against the recorded outcomes (whether the simulator can be trusted).
        "simulated_user": stats.get("simulated_user"),
    }


def _pattern(pattern: FailurePattern) -> dict[str, Any]:
    memberships = list(pattern.pattern_runs.all())
    by_split = {
        split: [m.run_id for m in memberships if m.split == split]
        for split in PatternRun.Split.values
    }
    diagnosed = [m for m in memberships if m.divergence_explanation]
    return {
        "id": pattern.pk,
        "title": pattern.title,
        "description": pattern.description,
        "signature": pattern.signature,
        "severity": pattern.severity,
        "count": pattern.count,
        "grouping_reason": pattern.grouping_reason,
        "example_run_ids": sorted(m.run_id for m in memberships)[:EXAMPLE_RUNS],
        "drafting_run_ids": by_split[PatternRun.Split.DRAFTING],
        "heldout_run_ids": by_split[PatternRun.Split.HELDOUT],
        "divergences": [
            {
                "run_id": m.run_id,
                "step": m.divergence_step,
                "explanation": m.divergence_explanation,
            }
            for m in diagnosed[:DIVERGENCES_SHOWN]
        ],
        "diagnosed": len(diagnosed),
    }


def _suggestion(proposal: Proposal) -> dict[str, Any]:
    return {
        "proposal_id": proposal.pk,
        "title": proposal.title,
        "rationale": proposal.rationale,
        "status": proposal.status,
        "flags": proposal.flags,
        "patterns": sorted(p.pk for p in proposal.patterns.all()),
        "base_version": proposal.base_version.number,
        "candidate_version": proposal.candidate_version.number,
        "changes": drafting.version_changes(proposal.base_version, proposal.candidate_version),
        "metrics": experiment_metrics(proposal),
    }


def _not_drafted(cycle: DreamCycle) -> list[dict[str, Any]]:
    drafts = ((cycle.report or {}).get("progress") or {}).get("drafts") or {}
    return [
        {"patterns": d.get("patterns", []), "status": d["status"], "reason": d.get("reason", "")}
        for d in drafts.values()
        if d.get("status") != "valid"
    ]


def build_cycle_report(cycle: DreamCycle) -> dict[str, Any]:
    """The cycle's report, from the database as it is now."""
    patterns = cycle.patterns.prefetch_related(
        Prefetch("pattern_runs", queryset=PatternRun.objects.order_by("split", "run_id"))
    ).order_by("-count", "id")
    proposals = (
        Proposal.objects.filter(cycle=cycle)
        .select_related("base_version", "candidate_version")
        .prefetch_related("patterns", "experiments")
        .order_by("id")
    )
    usage = spend.cycle_usage(cycle)
    stored = cycle.report or {}
    return {
        "id": cycle.pk,
        "agent": cycle.agent.slug,
        "trigger": cycle.trigger,
        "status": cycle.status,
        "stage": cycle.stage,
        "progress": {"done": cycle.progress_done, "total": cycle.progress_total},
        "window": {
            "start": cycle.window_start.isoformat() if cycle.window_start else None,
            "end": cycle.window_end.isoformat() if cycle.window_end else None,
        },
        "created_at": cycle.created_at.isoformat() if cycle.created_at else None,
        "started_at": cycle.started_at.isoformat() if cycle.started_at else None,
        "finished_at": cycle.finished_at.isoformat() if cycle.finished_at else None,
        "error": cycle.error,
        "stop_reason": stored.get("stop_reason", ""),
        "runs_studied": cycle.runs.count(),
        "patterns": [_pattern(p) for p in patterns],
        "suggestions": [_suggestion(p) for p in proposals],
        "not_drafted": _not_drafted(cycle),
        # Model answers a step could not use (dreamer.note_refusal): the step and the reason.
        "refused_answers": list(((stored.get("progress") or {}).get("refused")) or []),
        "usage": {
            "tokens": usage["tokens"],
            "cost_usd": f"{usage['cost_usd']:.6f}",
            "model_calls": usage["calls"],
            "token_cap": cycle.agent.cycle_token_budget,
            "spend_share": spend.cycle_spend_share(cycle),
        },
    }


# -- Markdown ------------------------------------------------------------------------------


def _line(text: Any) -> str:
    return " ".join(str(text if text is not None else "—").split())


def _cell(text: Any) -> str:
    return _line(text).replace("|", "\\|")


def _fenced(text: str, language: str = "") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _rate(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, int | float) else "—"


def render_markdown(report: dict[str, Any], *, agent_name: str) -> str:
    """The correction report: which decision points failed and what changed."""
    usage = report["usage"]
    share = usage["spend_share"]
    lines = [
        f"# Correction report: {agent_name}, dream cycle {report['id']}",
        "",
        f"- Status: **{report['status']}**"
        + (f" ({report['stop_reason']})" if report.get("stop_reason") else "")
        + f"; trigger: {report['trigger']}",
        f"- Window: {report['window']['start'] or '—'} → {report['window']['end'] or '—'}",
        f"- Failures studied: {report['runs_studied']}; patterns: {len(report['patterns'])}; "
        f"proposals: {len(report['suggestions'])}",
        f"- Dreaming usage: {usage['tokens']:,} tokens in {usage['model_calls']} model calls, "
        f"${usage['cost_usd']}"
        + (
            f" ({share['share_of_cost_pct']}% of the production spend of the runs in the window)"
            if share.get("share_of_cost_pct") is not None
            else ""
        )
        + (
            f"; {share['dreaming_free_calls']} calls on the simulated, recorded or local model, "
            "priced at $0 (nothing was spent)"
            if share.get("dreaming_free_calls")
            else ""
        ),
    ]
    if report.get("error"):
        lines.append(f"- Note: {_line(report['error'])}")
    lines += ["", "## Decision points that failed", ""]
    if not report["patterns"]:
        lines.append("No failures to study in this window.")
    for pattern in report["patterns"]:
        lines += [
            f"### {_line(pattern['title'])}",
            "",
            f"{pattern['count']} runs, severity {pattern['severity']}. "
            f"{_line(pattern['description'])}".rstrip(),
            "",
            f"Why grouped: {_line(pattern['grouping_reason'])}",
            "",
        ]
        if pattern["divergences"]:
            lines += ["| run | step | where the reasoning diverged |", "|---|---|---|"]
            lines += [
                f"| {d['run_id']} | {d['step'] if d['step'] is not None else '—'} | {_cell(d['explanation'])} |"
                for d in pattern["divergences"]
            ]
            lines.append("")
    lines += ["## What changed", ""]
    if not report["suggestions"]:
        lines.append("No edit was proposed.")
    for s in report["suggestions"]:
        lines += [
            f"### Proposal {s['proposal_id']}: {_line(s['title'])}",
            "",
            f"Status: {s['status']}; version {s['base_version']} → {s['candidate_version']}.",
        ]
        for flag in s["flags"]:
            lines.append(f"- ⚠ {flag.get('code')}: {_line(flag.get('message'))}")
        lines += ["", s["rationale"].strip(), ""]
        for change in s["changes"]:
            lines += [
                f"`{change['document']}` ({change['change']}):",
                "",
                _fenced(change["diff"], "diff"),
                "",
            ]
        metrics = s.get("metrics")
        harness = (metrics or {}).get("harness") or {}
        if harness.get("summary"):
            lines += [f"Harness check (no tokens): {_line(harness['summary'])}", ""]
        if metrics and metrics.get("target"):
            t = metrics["target"]
            lines.append(
                f"Held-out failing runs: pass rate {_rate(t['baseline_pass_rate'])} → "
                f"{_rate(t['candidate_pass_rate'])} ({t['fixes']} fixed, {t['regressions']} broken)"
                f"; verdict: {metrics.get('verdict') or '—'}."
            )
            r = metrics.get("regression")
            if r:
                lines.append(
                    f"Regression sample: {_rate(r['baseline_pass_rate'])} → "
                    f"{_rate(r['candidate_pass_rate'])} ({r['regressions']} broken)."
                )
            lines.append("")
        elif metrics:
            lines += [f"Replay: experiment {metrics['experiment_id']} is {metrics['status']}.", ""]
        else:
            lines += ["Replay: not started.", ""]
    if report["not_drafted"]:
        lines += ["## Patterns without an edit", ""]
        for item in report["not_drafted"]:
            lines.append(
                f"- patterns {', '.join(map(str, item['patterns']))}: {item['status']}: {_line(item['reason'])}"
            )
        lines.append("")
    if report.get("refused_answers"):
        lines += ["## Model answers that could not be used", ""]
        for item in report["refused_answers"]:
            lines.append(f"- {_line(item.get('step', ''))}: {_line(item.get('reason', ''))}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def markdown_response(cycle: DreamCycle) -> HttpResponse:
    """The one Markdown report of a cycle, as a download (the page's link and the API's)."""
    text = render_markdown(build_cycle_report(cycle), agent_name=cycle.agent.name)
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{cycle.agent.slug}-dream-{cycle.pk}-correction-report.md"'
    )
    return response
