"""Stage *diagnose*: for each studied run, the assistant step where the reasoning went wrong.

The model answers in structured form; each answer is checked against the run's real number of
assistant steps before it is stored. Drafting runs come first, then held-out runs, up to a cap
per pattern (REVERIE_DREAM_DIAGNOSE_PER_PATTERN) so spend stays flat on large patterns.
"""

from django.conf import settings
from django.db import transaction

from agents.transcripts import count_steps
from dreams import dreamer, prompts
from dreams.llm import UnusableAnswer
from dreams.models import DreamCycle, FailurePattern, PatternRun

CHUNK = 12


def runs_to_diagnose(pattern: FailurePattern) -> list[PatternRun]:
    memberships = list(
        pattern.pattern_runs.select_related("run").order_by("split", "run_id")
    )  # "drafting" sorts before "heldout"
    return memberships[: settings.REVERIE_DREAM_DIAGNOSE_PER_PATTERN]


def validate_step(*, step: object, steps: int) -> int | None:
    """The step index if it exists in a run of `steps` assistant turns, else None."""
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    return step if 0 <= step < steps else None


def diagnose_pattern(*, cycle: DreamCycle, pattern: FailurePattern) -> int:
    """Diagnose the pattern's not-yet-diagnosed runs; returns how many were stored."""
    pending = [m for m in runs_to_diagnose(pattern) if not m.divergence_explanation]
    stored = 0
    for start in range(0, len(pending), CHUNK):
        chunk = pending[start : start + CHUNK]
        summaries = [prompts.run_summary(m.run, comments=m.run.negative_comments()) for m in chunk]
        refused = ""
        try:
            answer = dreamer.ask(
                cycle=cycle,
                tool_name="diagnose_runs",
                input_schema=prompts.DIAGNOSE_SCHEMA,
                system=prompts.DIAGNOSE_SYSTEM,
                prompt=prompts.diagnose_prompt(pattern.title, summaries),
            )
        except UnusableAnswer as exc:
            refused, answer = str(exc), {}
            dreamer.note_refusal(cycle=cycle, step=f"diagnose pattern {pattern.pk}", reason=refused)
        runs_answer = answer.get("runs")
        by_run = {
            item.get("run_id"): item
            for item in (runs_answer if isinstance(runs_answer, list) else [])
            if isinstance(item, dict) and not isinstance(item.get("run_id"), (list, dict))
        }
        with transaction.atomic():
            for membership in chunk:
                steps = count_steps(membership.run.messages)
                item = by_run.get(membership.run_id)
                if refused:
                    step, explanation = None, f"Diagnosis refused: {refused}"[:500]
                elif item is None:
                    step, explanation = None, "No diagnosis returned for this run."
                else:
                    step = validate_step(step=item.get("step"), steps=steps)
                    explanation = str(item.get("explanation") or "").strip()[:500]
                    if step is None:
                        explanation = (
                            f"Diagnosis rejected: step {item.get('step')!r} is not one of the "
                            f"run's {steps} assistant steps."
                        )
                    elif not explanation:
                        explanation = "(no explanation given)"
                PatternRun.objects.filter(pk=membership.pk, divergence_explanation="").update(
                    divergence_step=step, divergence_explanation=explanation
                )
                stored += 1
    return stored


def diagnose_cycle(*, cycle: DreamCycle) -> int:
    """Stage *diagnose* for every pattern of the cycle; resumable run by run."""
    return sum(
        diagnose_pattern(cycle=cycle, pattern=pattern) for pattern in cycle.patterns.order_by("id")
    )
