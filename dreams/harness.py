"""The harness check: before an experiment spends tokens, the recorded model replays each of
its runs' own turns through the sandbox and the graders (no tokens), to show whether Reverie's
harness can judge this agent at all.

* **harness fidelity** — share of runs whose recording, replayed and graded, reproduces the
  recorded outcome;
* **grader agreement** — each grader's verdict on the recorded trajectory itself against the
  recorded outcome, per grader;
* the **disagreeing runs**, each with its reason (calls that left the recording, how the replay
  stopped, which grader said what);
* with a sandbox environment, **environment drift** — matched calls whose environment result
  differs from the recording (the staging copy is not the system the run saw) — and the runs
  whose replay found the environment unavailable (not checked).

With an environment the replays run concurrently (`replay.replay_many`: up to the agent's
`replay_concurrency` MCP sessions at once, one fresh session a replay) and are graded in order
afterwards, so the check says the same as one replay after another, only sooner.

Model judges (rubric, feedback) run only on a backend that costs nothing; otherwise those runs
are counted as not checked. Below REVERIE_HARNESS_FIDELITY_THRESHOLD the experiment reports
that the harness cannot judge the agent instead of a verdict.
"""

import time
from typing import Any

from django.conf import settings
from django.db.models import prefetch_related_objects

from agents.models import ConfigVersion, Run
from agents.transcripts import final_answer, iter_tool_calls
from dreams.grading import Grade, grade_expectations, plan
from dreams.llm import Gateway, ModelError, get_gateway
from dreams.replay import ReplayResult, Stop, replay_many

MAX_DISAGREEMENTS = 50


def recorded_pass(run: Run) -> bool | None:
    if run.status == Run.Status.SUCCESS:
        return True
    if run.status in (Run.Status.FAILURE, Run.Status.ERROR):
        return False
    return None


def recorded_trajectory(run: Run) -> ReplayResult:
    """The recording itself in the shape graders read (every call answered from the recording)."""
    messages = run.messages or []
    return ReplayResult(
        messages=list(messages),
        tool_calls=[
            {"name": c["name"], "input": c["input"], "source": "recording"}
            for c in iter_tool_calls(messages)
        ],
        steps=run.step_count,
        stop_reason=Stop.END_TURN,
    )


def _graded(run: Run, result: ReplayResult, *, comment: str, judge: Gateway | None) -> Grade | None:
    """The harness's grade of a replay, or None when only a paid model judge could give it."""
    step = plan(run, result, comment=comment)
    if isinstance(step, Grade):
        return step
    if judge is None:
        return None
    from dreams.grading import grade

    try:
        return grade(run, result, gateway=judge, comment=comment)
    except ModelError as exc:
        return Grade("unverifiable", f"judge failed: {exc}", step.grader)


def _grader_verdicts(
    run: Run, trajectory: ReplayResult, *, comment: str, judge: Gateway | None
) -> dict[str, str]:
    """Each applicable grader's verdict on the recorded trajectory."""
    verdicts: dict[str, str] = {}
    expectations = run.expectations or {}
    graded = grade_expectations(expectations, trajectory)
    if graded is not None:
        verdicts["expectations"] = graded.verdict
    if judge is not None:
        from dreams.grading import (
            FEEDBACK_RUBRIC,
            JUDGE_SCHEMA,
            JUDGE_SYSTEM,
            JUDGE_TOOL,
            judge_messages,
        )

        asks = []
        if expectations.get("rubric"):
            asks.append(
                ("rubric", judge_messages(rubric=expectations["rubric"], result=trajectory))
            )
        if comment:
            asks.append(
                (
                    "feedback",
                    judge_messages(rubric=FEEDBACK_RUBRIC, result=trajectory, feedback=comment),
                )
            )
        for grader, messages in asks:
            try:
                answer = judge.structured(
                    agent=run.agent,
                    purpose="judge",
                    tool_name=JUDGE_TOOL,
                    input_schema=JUDGE_SCHEMA,
                    system=JUDGE_SYSTEM,
                    messages=messages,
                    max_tokens=400,
                )
            except ModelError:
                continue
            if answer.get("verdict") in ("pass", "fail"):
                verdicts[grader] = answer["verdict"]
    return verdicts


def _disagreement_reason(result: ReplayResult, graded: Grade, recorded: bool) -> str:
    parts = []
    off = [
        c
        for c in result.tool_calls
        if c.get("source") not in ("recording", "memory", "environment")
    ]
    if off:
        first = off[0]
        parts.append(f"{first['name']} went {first['source'].replace('_', '-')}")
    if result.stop_reason not in (Stop.END_TURN, ""):
        parts.append(f"the replay stopped: {result.stop_reason}")
    if result.error:
        parts.append(result.error)
    parts.append(
        f"{graded.grader} said {graded.verdict} ({graded.reason}); recorded "
        f"{'pass' if recorded else 'fail'}"
    )
    return "; ".join(parts)


def check_harness(*, runs: list[Run], version: ConfigVersion) -> dict[str, Any]:
    """Replay each run's own recorded turns with `version`'s harness and grade them (no tokens)."""
    started = time.monotonic()
    # In process: the recorded model's answers are the runs' own turns (see recorded.py).
    recorded_model = Gateway(backend="recorded", in_process=True)
    prefetch_related_objects(runs, "feedback")  # negative_comment() reads it for every run
    main = get_gateway()
    judge = None if main.priced else main
    for run in runs:
        recorded_model.recordings.add(run)
    checked = agree = 0
    not_checked: list[dict[str, Any]] = []
    disagreements: list[dict[str, Any]] = []
    graders: dict[str, dict[str, int]] = {}
    drift: dict[str, Any] = {"runs": 0, "calls": 0, "examples": []}
    environment = any(run.agent.environment_url for run in runs)
    graded_runs = [run for run in runs if recorded_pass(run) is not None]
    # Replays first (with an environment, up to the agent's replay concurrency at once, one
    # MCP session each), then grading in order: the same verdicts as one after another.
    concurrency = max((run.agent.replay_concurrency or 1 for run in graded_runs), default=1)
    results = dict(
        zip(
            (run.pk for run in graded_runs),
            replay_many(graded_runs, version, gateway=recorded_model, concurrency=concurrency),
            strict=True,
        )
    )
    for run in runs:
        outcome = recorded_pass(run)
        if outcome is None:
            not_checked.append({"run_id": run.pk, "reason": "no recorded pass/fail outcome"})
            continue
        comment = run.negative_comment()
        result = results[run.pk]
        if result.environment_unavailable:
            not_checked.append(
                {"run_id": run.pk, "reason": f"environment unavailable: {result.environment_error}"}
            )
            continue
        if result.drift:
            drift["runs"] += 1
            drift["calls"] += result.drift
            if len(drift["examples"]) < MAX_DISAGREEMENTS:
                call = next(c for c in result.tool_calls if c.get("drift"))
                drift["examples"].append(
                    {
                        "run_id": run.pk,
                        "external_id": run.external_id,
                        "tool": call["name"],
                        "recorded": str(call.get("recorded", ""))[:200],
                        "environment": str(call.get("result", ""))[:200],
                    }
                )
        graded = _graded(run, result, comment=comment, judge=judge)
        if result.environment_check is not None:
            # The sandbox's final-state check is a grader too: on the recording it must agree.
            counts = graders.setdefault("environment", {"n": 0, "agree": 0})
            counts["n"] += 1
            counts["agree"] += (result.environment_check["verdict"] == "pass") == outcome
        for grader, verdict in _grader_verdicts(
            run, recorded_trajectory(run), comment=comment, judge=judge
        ).items():
            counts = graders.setdefault(grader, {"n": 0, "agree": 0})
            counts["n"] += 1
            counts["agree"] += (verdict == "pass") == outcome
        if graded is None:
            not_checked.append(
                {"run_id": run.pk, "reason": "graded by a model judge on a paid backend"}
            )
            continue
        checked += 1
        if graded.verdict in ("pass", "fail") and (graded.verdict == "pass") == outcome:
            agree += 1
        elif len(disagreements) < MAX_DISAGREEMENTS:
            disagreements.append(
                {
                    "run_id": run.pk,
                    "external_id": run.external_id,
                    "recorded": "pass" if outcome else "fail",
                    "verdict": graded.verdict,
                    "grader": graded.grader,
                    "stop_reason": result.stop_reason,
                    "answer_changed": final_answer(run.messages or []) != result.final_text,
                    "reason": _disagreement_reason(result, graded, outcome),
                }
            )
    fidelity = agree / checked if checked else None
    threshold = settings.REVERIE_HARNESS_FIDELITY_THRESHOLD
    can_judge = fidelity is not None and fidelity >= threshold
    elapsed = time.monotonic() - started
    return {
        "fidelity": fidelity,
        "threshold": threshold,
        "can_judge": can_judge,
        "checked": checked,
        "agree": agree,
        "not_checked": not_checked[:MAX_DISAGREEMENTS],
        "not_checked_count": len(not_checked),
        "graders": {
            name: {**c, "agreement": c["agree"] / c["n"] if c["n"] else None}
            for name, c in sorted(graders.items())
        },
        "disagreements": disagreements,
        "disagreement_count": checked - agree,
        "environment": environment,
        "environment_drift": drift if environment else None,
        "summary": summarise(fidelity, threshold, checked, disagreements)
        + (drift_summary(drift) if environment else ""),
        "tokens": 0,
        "seconds": round(elapsed, 3),
        "concurrency": concurrency if environment else 1,
        "runs_per_second": round(len(runs) / elapsed, 1) if elapsed > 0 else None,
    }


def drift_summary(drift: dict[str, Any]) -> str:
    if not drift["calls"]:
        return " The sandbox environment answered every recorded call as recorded (no drift)."
    return (
        f" Environment drift: {drift['calls']} recorded call{'s' if drift['calls'] != 1 else ''} "
        f"in {drift['runs']} run{'s' if drift['runs'] != 1 else ''} got a different result from "
        "the sandbox environment than in the recording."
    )


def summarise(
    fidelity: float | None, threshold: float, checked: int, disagreements: list[dict[str, Any]]
) -> str:
    if fidelity is None:
        return "The harness check had no run with a recorded outcome it could grade."
    if fidelity >= threshold:
        return (
            f"Harness fidelity {fidelity:.0%} on {checked} runs (threshold {threshold:.0%}): "
            "replaying the recordings reproduces their outcomes."
        )
    by_grader: dict[str, int] = {}
    for d in disagreements:
        by_grader[d["grader"]] = by_grader.get(d["grader"], 0) + 1
    top = ", ".join(f"{n} by {g}" for g, n in sorted(by_grader.items(), key=lambda x: -x[1]))
    return (
        f"The harness cannot judge this agent: replaying the recordings themselves reproduces "
        f"only {fidelity:.0%} of their outcomes on {checked} runs (threshold {threshold:.0%}). "
        f"Disagreements: {top or 'none listed'}."
    )
