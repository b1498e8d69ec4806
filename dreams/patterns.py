"""Select the failures a cycle studies and group them into failure patterns.

Grouping is two-step: a deterministic signature (status, failing tool, normalised grader reason)
makes candidate groups; the model then merges candidates that are the same mistake. Each
pattern's runs are split into a drafting part (what the dreamer reads) and a held-out part
(what judges the edit).
"""

import hashlib
import re
from collections import Counter, defaultdict
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from agents.models import Agent, Feedback, Run
from agents.transcripts import iter_tool_calls
from dreams import dreamer, prompts
from dreams.llm import UnusableAnswer
from dreams.models import DreamCycle, FailurePattern, PatternRun

MERGE_MAX_GROUPS = 40
MERGE_SAMPLES = 2
# A pattern needs two drafting runs (an insight seen once is not an edit) and one held out.
MIN_DRAFTING = 2


# -- select --------------------------------------------------------------------------------


def selectable_failures(*, agent: Agent, exclude_cycle: DreamCycle | None = None) -> QuerySet[Run]:
    """Failed/error runs and runs with negative feedback on the current config, not yet studied."""
    negative = Feedback.objects.filter(run=OuterRef("pk"), rating=Feedback.Rating.NEGATIVE)
    runs = Run.objects.filter(agent=agent).filter(
        Q(status__in=[Run.Status.FAILURE, Run.Status.ERROR]) | Q(Exists(negative))
    )
    if agent.stable_version_id:
        runs = runs.filter(
            Q(config_version_id=agent.stable_version_id) | Q(config_version__isnull=True)
        )
    studied = DreamCycle.objects.filter(
        agent=agent,
        status__in=[DreamCycle.Status.SUCCEEDED, *DreamCycle.ACTIVE],
        runs=OuterRef("pk"),
    )
    if exclude_cycle is not None:
        studied = studied.exclude(pk=exclude_cycle.pk)
    return runs.filter(~Exists(studied))


def select_runs(*, cycle: DreamCycle) -> int:
    """Stage *select*: attach up to REVERIE_DREAM_MAX_RUNS newest unstudied failures (once)."""
    if cycle.runs.exists():
        return cycle.runs.count()
    ids = list(
        selectable_failures(agent=cycle.agent, exclude_cycle=cycle)
        .order_by("-started_at", "-id")
        .values_list("id", "started_at")[: settings.REVERIE_DREAM_MAX_RUNS]
    )
    with transaction.atomic():
        locked = DreamCycle.objects.select_for_update().get(pk=cycle.pk)
        if locked.runs.exists():
            return locked.runs.count()
        locked.runs.set([pk for pk, _ in ids])
        locked.window_start = min((t for _, t in ids), default=None)
        locked.window_end = timezone.now()
        locked.save(update_fields=["window_start", "window_end"])
    cycle.window_start, cycle.window_end = locked.window_start, locked.window_end
    return len(ids)


# -- signature -----------------------------------------------------------------------------

# A match may start only where a run of [\w-] starts (the lookbehind), so a long digit-free
# word is scanned once instead of once per character: linear, not quadratic, time.
_NUMBERS = re.compile(r"(?<![\w-])[\w-]*\d[\w.,-]*")
_SPACES = re.compile(r"\s+")
REASON_READ_CHARS = 4096


def normalise_reason(text: str, *, words: int = 14) -> str:
    """Lower-case, numbers and ids replaced by '#', first `words` words."""
    # The signature keeps 200 characters; reading more of a (up to 2 MB) reason buys nothing.
    text = _NUMBERS.sub("#", text[:REASON_READ_CHARS].lower())
    text = re.sub(r"[^\w#' ]+", " ", text)
    return " ".join(_SPACES.sub(" ", text).split()[:words])


def failing_tool(run: Run) -> str:
    """The tool call the failure points at: the first errored call, else the last call."""
    calls = iter_tool_calls(run.messages)
    errored = [c for c in calls if c["is_error"]]
    if errored:
        return errored[0]["name"]
    return calls[-1]["name"] if calls else "-"


def signature(run: Run) -> str:
    """Deterministic group key: status | failing tool | error type or grader reason."""
    reason = run.outcome_reason.strip()
    if run.status == Run.Status.ERROR and ":" in reason:
        reason = reason.split(":", 1)[0]  # the error type, e.g. "ToolError"
    if not reason:
        comments = run.negative_comments()
        reason = "feedback: " + (comments[0] if comments else "negative")
    return f"{run.status}|{failing_tool(run)}|{normalise_reason(reason)}"[:200]


def split_of(*, run_ids: list[int], cycle_id: int) -> dict[int, str]:
    """Stable pseudo-random drafting/held-out split of a pattern's runs."""
    order = sorted(run_ids, key=lambda pk: hashlib.sha256(f"{cycle_id}:{pk}".encode()).hexdigest())
    n = len(order)
    if n < MIN_DRAFTING + 1:
        drafting = n  # too few to hold any out; such a pattern never becomes an edit
    else:
        drafting = max(MIN_DRAFTING, min(settings.REVERIE_DREAM_MAX_DRAFTING_RUNS, n // 2))
    return {
        pk: PatternRun.Split.DRAFTING if i < drafting else PatternRun.Split.HELDOUT
        for i, pk in enumerate(order)
    }


# -- group ---------------------------------------------------------------------------------


def cycle_runs(cycle: DreamCycle) -> list[Run]:
    negative = Feedback.objects.filter(rating=Feedback.Rating.NEGATIVE)
    return list(
        cycle.runs.order_by("id").prefetch_related(
            Prefetch("feedback", queryset=negative, to_attr="negative_feedback")
        )
    )


def _severity(*, runs: list[Run], total: int) -> str:
    if any(r.status == Run.Status.ERROR for r in runs) or len(runs) * 4 >= total:
        return "high"
    return "medium" if len(runs) > 1 else "low"


def _candidate_groups(runs: list[Run]) -> dict[str, list[Run]]:
    buckets: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        buckets[signature(run)].append(run)
    return dict(sorted(buckets.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _mechanical_title(runs: list[Run]) -> str:
    reasons = Counter(r.outcome_reason.strip() for r in runs if r.outcome_reason.strip())
    if reasons:
        return reasons.most_common(1)[0][0][:200]
    return f"Negative feedback after {failing_tool(runs[0])}"[:200]


def _ask_merge(*, cycle: DreamCycle, buckets: dict[str, list[Run]]) -> list[dict[str, Any]]:
    """Ask the model which candidate groups are one mistake; validate its answer."""
    keys = list(buckets)
    ids = {f"g{i + 1}": key for i, key in enumerate(keys[:MERGE_MAX_GROUPS])}
    groups = [
        {
            "id": gid,
            "signature": key,
            "runs": len(buckets[key]),
            "reasons": sorted({r.outcome_reason for r in buckets[key] if r.outcome_reason})[:3],
            "samples": [
                prompts.run_summary(r, comments=r.negative_comments())
                for r in buckets[key][:MERGE_SAMPLES]
            ],
        }
        for gid, key in ids.items()
    ]
    try:
        answer = dreamer.ask(
            cycle=cycle,
            tool_name="merge_patterns",
            input_schema=prompts.MERGE_SCHEMA,
            system=prompts.MERGE_SYSTEM,
            prompt=prompts.merge_prompt(groups),
        )
    except UnusableAnswer as exc:
        # Merging only refines the mechanical groups: keep them, and say why in the report.
        dreamer.note_refusal(cycle=cycle, step="merge", reason=str(exc))
        answer = {}
    merged: list[dict[str, Any]] = []
    taken: set[str] = set()
    for group in answer.get("groups", []) if isinstance(answer.get("groups"), list) else []:
        if not isinstance(group, dict):
            continue
        listed = group.get("members")
        members = [
            ids[m]
            for m in (listed if isinstance(listed, list) else [])
            if isinstance(m, str) and m in ids and ids[m] not in taken
        ]
        if not members:
            continue
        taken.update(members)
        merged.append(
            {
                "keys": members,
                "title": str(group.get("title") or "").strip()[:200],
                "description": str(group.get("description") or "").strip(),
                "reason": str(group.get("reason") or "").strip(),
                "severity": group.get("severity"),
            }
        )
    for key in keys:
        if key not in taken:
            merged.append({"keys": [key], "title": "", "description": "", "reason": ""})
    return merged


def group_runs(*, cycle: DreamCycle) -> int:
    """Stage *group*: create the cycle's failure patterns (once; all in one transaction)."""
    if cycle.patterns.exists():
        return cycle.patterns.count()
    runs = cycle_runs(cycle)
    if not runs:
        return 0
    buckets = _candidate_groups(runs)
    if len(buckets) > 1:
        groups = _ask_merge(cycle=cycle, buckets=buckets)
    else:
        groups = [{"keys": list(buckets), "title": "", "description": "", "reason": ""}]
    try:
        with transaction.atomic():
            DreamCycle.objects.select_for_update().get(pk=cycle.pk)
            if cycle.patterns.exists():
                return cycle.patterns.count()
            for group in groups:
                _create_pattern(cycle=cycle, group=group, buckets=buckets, total=len(runs))
    except IntegrityError:
        # Another worker grouped this cycle first; its patterns stand.
        pass
    return cycle.patterns.count()


def _create_pattern(
    *, cycle: DreamCycle, group: dict[str, Any], buckets: dict[str, list[Run]], total: int
) -> FailurePattern:
    runs = [r for key in group["keys"] for r in buckets[key]]
    signatures = ", ".join(f"`{k}` ({len(buckets[k])})" for k in group["keys"])
    mechanical = f"Same signature (status | failing tool | reason): {signatures}."
    reason = (group["reason"] + " " if group["reason"] else "") + mechanical
    severity = group.get("severity")
    pattern = FailurePattern.objects.create(
        cycle=cycle,
        agent_id=cycle.agent_id,
        signature=group["keys"][0],
        title=group["title"] or _mechanical_title(runs),
        description=group["description"],
        grouping_reason=reason,
        severity=severity
        if severity in ("low", "medium", "high")
        else _severity(runs=runs, total=total),
        count=len(runs),
    )
    splits = split_of(run_ids=[r.pk for r in runs], cycle_id=cycle.pk)
    PatternRun.objects.bulk_create(
        [PatternRun(pattern=pattern, run_id=pk, split=split) for pk, split in splits.items()]
    )
    return pattern
