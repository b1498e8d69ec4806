"""Dreaming spend: per-cycle and monthly token caps, and spend as a share of production spend.

Tokens and cost are counted from the gateway's `ModelCall` rows (input + output + cache
reads/writes) by one counter, `dreams.llm.budget.counted_calls`: the gateway's guard, the caps
checked between a cycle's steps, the agent page and the API all count the same calls. Production
spend is what the agent's recorded runs cost.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import DecimalField, F, QuerySet, Sum, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent, Run
from dreams.llm.base import FREE_BACKENDS
from dreams.llm.budget import counted_calls, month_start, tokens_spent
from dreams.models import DreamCycle, ModelCall

SPEND_DAYS = 30


class CapReached(Exception):
    """A token cap stops the cycle cleanly; `code` says which one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _token_sum(prefix: str = "") -> Any:
    fields = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    total: F | CombinedExpression = F(prefix + fields[0])
    for field in fields[1:]:
        total = total + F(prefix + field)
    return Coalesce(Sum(total), 0)


def _usage(calls: QuerySet[ModelCall]) -> dict[str, Any]:
    row = calls.aggregate(
        tokens=_token_sum(),
        cost=Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=DecimalField()),
    )
    return {
        "tokens": int(row["tokens"]),
        "cost_usd": Decimal(row["cost"]),
        "calls": calls.count(),
        "free_calls": calls.filter(backend__in=FREE_BACKENDS).count(),
    }


def cycle_usage(cycle: DreamCycle) -> dict[str, Any]:
    """What the cycle spent: its own calls and its proposals' replays (what its cap counts)."""
    return _usage(counted_calls(agent=cycle.agent_id, cycle_id=cycle.pk))


def month_tokens(*, agent: Agent, now: datetime | None = None) -> int:
    """Tokens counted against the agent's monthly budget so far this (UTC) month."""
    return int(tokens_spent(agent=agent, since=month_start(now)))


def has_monthly_budget(*, agent: Agent, now: datetime | None = None) -> bool:
    return month_tokens(agent=agent, now=now) < agent.monthly_token_budget


def refresh_cycle_usage(*, cycle: DreamCycle) -> None:
    """Copy the cycle's model-call totals onto the cycle row."""
    usage = cycle_usage(cycle)
    DreamCycle.objects.filter(pk=cycle.pk).update(
        tokens_used=usage["tokens"], cost_usd=usage["cost_usd"]
    )
    cycle.tokens_used = usage["tokens"]
    cycle.cost_usd = usage["cost_usd"]


def ensure_cycle_budget(*, cycle: DreamCycle) -> None:
    """Raise CapReached when the cycle or the agent's month has no tokens left."""
    agent = cycle.agent
    used = cycle_usage(cycle)["tokens"]
    if used >= agent.cycle_token_budget:
        raise CapReached(
            "cycle_token_cap",
            f"Cycle token cap reached: {used:,} of {agent.cycle_token_budget:,} tokens used.",
        )
    month = month_tokens(agent=agent)
    if month >= agent.monthly_token_budget:
        raise CapReached(
            "monthly_token_cap",
            f"Monthly dreaming cap reached: {month:,} of {agent.monthly_token_budget:,} tokens used.",
        )


def _production(runs: QuerySet[Run]) -> dict[str, Any]:
    row = runs.aggregate(
        tokens=_token_sum(),
        cost=Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=DecimalField()),
    )
    return {"tokens": int(row["tokens"]), "cost_usd": Decimal(row["cost"]), "runs": runs.count()}


def _share(part: Decimal | int, whole: Decimal | int) -> float | None:
    return round(float(part) / float(whole) * 100, 3) if whole else None


def spend_share(*, dreaming: dict[str, Any], production: dict[str, Any]) -> dict[str, Any]:
    return {
        "dreaming_tokens": dreaming["tokens"],
        "dreaming_cost_usd": f"{dreaming['cost_usd']:.6f}",
        "dreaming_calls": dreaming.get("calls", 0),
        # Calls on the simulated, recorded or local model: their tokens count, their price is $0.
        "dreaming_free_calls": dreaming.get("free_calls", 0),
        "production_tokens": production["tokens"],
        "production_cost_usd": f"{production['cost_usd']:.6f}",
        "production_runs": production["runs"],
        "share_of_tokens_pct": _share(dreaming["tokens"], production["tokens"]),
        "share_of_cost_pct": _share(dreaming["cost_usd"], production["cost_usd"]),
    }


def cycle_spend_share(cycle: DreamCycle) -> dict[str, Any]:
    """The cycle's dreaming spend against the production spend of the runs in its window."""
    runs = Run.objects.filter(agent_id=cycle.agent_id)
    if cycle.window_start:
        runs = runs.filter(started_at__gte=cycle.window_start)
    if cycle.window_end:
        runs = runs.filter(started_at__lte=cycle.window_end)
    return spend_share(dreaming=cycle_usage(cycle), production=_production(runs))


def period_spend_share(*, agent: Agent, since: datetime, until: datetime) -> dict[str, Any]:
    """All dreaming spend of the agent in [since, until) against its production runs then."""
    calls = counted_calls(agent=agent, since=since, until=until)
    runs = Run.objects.filter(agent=agent, started_at__gte=since, started_at__lt=until)
    return spend_share(dreaming=_usage(calls), production=_production(runs))


def agent_spend(
    *, agent: Agent, days: int = SPEND_DAYS, now: datetime | None = None
) -> dict[str, Any]:
    """The agent page's spend panel: the same figures as GET …/dreaming-spend?days=N, with the
    dreaming cost split by purpose."""
    until = now or timezone.now()
    since = until - timedelta(days=days)
    share = period_spend_share(agent=agent, since=since, until=until)
    by_purpose = dict(
        counted_calls(agent=agent, since=since, until=until)
        .values_list("purpose")
        .annotate(total=Sum("cost_usd"))
    )
    dreaming = Decimal(share["dreaming_cost_usd"])
    production = Decimal(share["production_cost_usd"])
    total = dreaming + production
    return {
        "days": days,
        "dreaming": dreaming,
        "production": production,
        "by_purpose": [
            (label, by_purpose.get(key) or Decimal(0)) for key, label in ModelCall.Purpose.choices
        ],
        "dreaming_share": float(dreaming / total) if total else 0.0,
        "free_calls": share["dreaming_free_calls"],  # simulated / recorded: priced at $0
        **share,
    }
