"""The dreamer's one door to the model: cap check, structured call through the gateway, usage.

Every model-assisted step of a cycle (merge, diagnose, draft) calls `ask`; the cycle's and the
month's token caps are checked before each call (the gateway checks its own budget too).
"""

from typing import Any

from django.conf import settings
from django.db import transaction

from dreams import spend
from dreams.llm import BudgetExceeded, get_gateway
from dreams.models import DreamCycle, ModelCall


def get_dream_gateway() -> Any:
    """The shared model gateway; one seam so tests can watch what the dreamer asks."""
    return get_gateway()


def note_refusal(*, cycle: DreamCycle, step: str, reason: str) -> None:
    """Keep why a step's answer was unusable in the cycle's report (`progress.refused`)."""
    with transaction.atomic():
        locked = DreamCycle.objects.select_for_update().get(pk=cycle.pk)
        report = dict(locked.report or {})
        progress = dict(report.get("progress", {}))
        progress["refused"] = [*progress.get("refused", []), {"step": step, "reason": reason}]
        report["progress"] = progress
        locked.report = report
        locked.save(update_fields=["report"])
    cycle.report = report


def ask(
    *,
    cycle: DreamCycle,
    tool_name: str,
    input_schema: dict[str, Any],
    system: str,
    prompt: str,
    max_tokens: int = 2048,
) -> dict[str, Any]:
    """One structured call for `cycle`; raises spend.CapReached before spending past a cap."""
    spend.ensure_cycle_budget(cycle=cycle)
    try:
        result = get_dream_gateway().structured(
            agent=cycle.agent,
            purpose=ModelCall.Purpose.DREAM,
            cycle=cycle,
            tool_name=tool_name,
            input_schema=input_schema,
            system=system,
            messages=[{"role": "user", "content": prompt}],
            model=settings.REVERIE_DREAM_MODEL,
            max_tokens=max_tokens,
        )
    except BudgetExceeded as exc:
        # The gateway checks with an estimate of the call, so it may stop a call first.
        if "monthly" in str(exc).lower():
            raise spend.CapReached(
                "monthly_token_cap", f"Monthly dreaming cap reached: {exc}"
            ) from exc
        raise spend.CapReached("cycle_token_cap", f"Cycle token cap reached: {exc}") from exc
    finally:
        spend.refresh_cycle_usage(cycle=cycle)
    if not isinstance(result, dict):
        raise TypeError(f"{tool_name}: the model answered {type(result).__name__}, not an object")
    return result
