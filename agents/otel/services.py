"""Store received spans and build (or extend) each trace's run; settle traces gone quiet.

One request is one transaction per trace group (a savepoint each): a group whose run does not
validate is rejected whole (OTLP partial success) and stores nothing; the others are kept.
A re-sent span is recognised by (agent, trace id, span id) and changes nothing. The buffer
holds one row per trace (TraceSpans: all its spans in one orjson list), so a new trace costs one
buffer insert however many spans it has.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.ingest import _load_agents, _store, insert_rows, parse_run
from agents.models import Agent, Run, Workspace
from agents.otel import mapping
from agents.otel.models import CapturedTrace, TraceSpans
from agents.transcripts import TranscriptError

TAKEN = "a run with this external_id was stored through the runs API"
NUL = b"\\u0000"  # how orjson writes U+0000 inside a string
NO_CONTENT = [{"role": "user", "content": "(no content captured)"}]
# Run fields a later span may change; the agent and external id never move.
REBUILT_FIELDS = (
    "config_version_id",
    "status",
    "outcome_reason",
    "model",
    "system",
    "tools",
    "messages",
    "step_count",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "latency_ms",
    "started_at",
    "tags",
    "metadata",
    "source_format",
)


@dataclass
class ReceiveResult:
    accepted: int = 0
    rejected: int = 0
    ignored: int = 0
    runs: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def reject(self, count: int, message: str) -> None:
        self.rejected += count
        if len(self.errors) < 10:
            self.errors.append(message)


def is_settled(trace: CapturedTrace, *, now: datetime) -> bool:
    """A trace is final once settled, or once no span has arrived for the quiet period."""
    quiet = timedelta(seconds=settings.REVERIE_OTLP_SETTLE_SECONDS)
    return trace.settled_at is not None or trace.last_received_at + quiet <= now


def receive_spans(
    *, workspace: Workspace, spans: list[dict[str, Any]], now: datetime | None = None
) -> ReceiveResult:
    """Store the GenAI spans of one export request and rebuild the runs they belong to."""
    now = now or timezone.now()
    result = ReceiveResult()
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        if mapping.is_genai(span):
            by_trace[span["trace_id"]].append(span)
        else:
            result.ignored += 1
    if not by_trace:
        return result

    slugs: dict[str, str | None] = {}
    for trace_id, trace_spans in by_trace.items():
        slugs[trace_id] = next(filter(None, map(mapping.agent_slug, trace_spans)), None)
    agents = _load_agents(workspace, {s for s in slugs.values() if s})
    stored = _stored_spans(agents=list(agents.values()), trace_ids=list(by_trace))

    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for trace_id, trace_spans in by_trace.items():
        slug = slugs[trace_id]
        agent = agents.get(slug) if slug else None
        if agent is None:
            result.reject(
                len(trace_spans),
                f"trace {trace_id}: unknown agent {slug!r}; set the resource attribute "
                f"{mapping.AGENT_ATTRIBUTE} (or service.name) to an agent slug of this workspace"
                if slug
                else f"trace {trace_id}: no agent; set the resource attribute "
                f"{mapping.AGENT_ATTRIBUTE} (or service.name) to an agent slug",
            )
            continue
        key = stored["groups"].get((agent.pk, trace_id))
        if key is None:
            key = next(filter(None, map(mapping.group_key, trace_spans)), None)
            key = key or f"otel:trace:{trace_id}"
        groups[(agent.pk, key)].extend(trace_spans)

    by_id = {agent.pk: agent for agent in agents.values()}
    with transaction.atomic():  # one commit per request; each group is a savepoint inside it
        _store_groups(
            groups=groups, by_id=by_id, agents=agents, stored=stored, now=now, result=result
        )
    return result


def _store_groups(
    *,
    groups: dict[tuple[int, str], list[dict[str, Any]]],
    by_id: dict[int, Agent],
    agents: dict[str, Agent],
    stored: dict[str, Any],
    now: datetime,
    result: ReceiveResult,
) -> None:
    fresh_by_group: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for (agent_id, key), group_spans in groups.items():
        fresh = {
            (s["trace_id"], s["span_id"]): s
            for s in group_spans
            if (agent_id, s["trace_id"], s["span_id"]) not in stored["known"]
        }
        result.accepted += len(group_spans) - len(fresh)  # a re-sent span: nothing to do
        if fresh:
            fresh_by_group[(agent_id, key)] = list(fresh.values())
    if not fresh_by_group:
        return
    existing = set(
        CapturedTrace.objects.filter(
            agent_id__in={a for a, _ in fresh_by_group}, key__in={k for _, k in fresh_by_group}
        ).values_list("agent_id", "key")
    )
    new = {g: s for g, s in fresh_by_group.items() if g not in existing}
    later = {g: s for g, s in fresh_by_group.items() if g in existing}
    if new:
        try:
            with transaction.atomic():
                _create_traces(new, by_id=by_id, agents=agents, now=now, result=result)
        except IntegrityError:
            later.update(new)  # a concurrent export created some of them: go one by one
    for (agent_id, key), spans in later.items():
        try:
            run_id = _extend_trace(
                agent=by_id[agent_id], agents=agents, key=key, spans=spans, now=now
            )
        except _Rejected as exc:
            result.reject(len(spans), exc.message)
            continue
        result.accepted += len(spans)
        result.runs.append(run_id)


def _create_traces(
    groups: dict[tuple[int, str], list[dict[str, Any]]],
    *,
    by_id: dict[int, Agent],
    agents: dict[str, Agent],
    now: datetime,
    result: ReceiveResult,
) -> None:
    """New trace groups in bulk: validate every run first, then three bulk inserts."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    # Each trace's spans serialised once: the buffer row, and the NUL scan of the runs API.
    dumped = {
        group: {tid: orjson.dumps(s) for tid, s in _by_trace_id(spans).items()}
        for group, spans in groups.items()
    }
    for (agent_id, key), spans in groups.items():
        try:
            rows[(agent_id, key)] = _run_row(
                agent=by_id[agent_id],
                agents=agents,
                key=key,
                spans=spans,
                check_nul=any(NUL in d for d in dumped[(agent_id, key)].values()),
            )
        except _Rejected as exc:
            result.reject(len(spans), exc.message)
    taken = set(
        Run.objects.filter(
            agent_id__in={a for a, _ in rows}, external_id__in={k for _, k in rows}
        ).values_list("agent_id", "external_id")
    )
    for group in [g for g in rows if g in taken]:
        result.reject(len(groups[group]), f"{group[1]}: {TAKEN}")
        del rows[group]
    if not rows:
        return
    # The runs API's own writer (one COPY each on PostgreSQL; sets "id"): runs, traces, spans.
    _store(list(rows.values()))
    traces = [
        {
            "agent_id": agent_id,
            "key": key,
            "run_id": row["id"],
            "first_received_at": now,
            "last_received_at": now,
            "settled_at": None,
        }
        for (agent_id, key), row in rows.items()
    ]
    insert_rows(CapturedTrace, traces)
    insert_rows(
        TraceSpans,
        [
            _trace_spans_values(
                trace_pk=trace["id"],
                agent_id=trace["agent_id"],
                trace_id=tid,
                spans=spans,
                now=now,
                data=dumped[group][tid],
            )
            for trace, group in zip(traces, rows, strict=True)
            for tid, spans in _by_trace_id(groups[group]).items()
        ],
    )
    for group, row in rows.items():
        result.accepted += len(groups[group])
        result.runs.append(row["id"])


def _by_trace_id(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        grouped[span["trace_id"]].append(span)
    return grouped


def _trace_spans_values(
    *,
    trace_pk: int,
    agent_id: int,
    trace_id: str,
    spans: list[dict[str, Any]],
    now: datetime,
    data: bytes | None = None,
) -> dict[str, Any]:
    return {
        "captured_trace_id": trace_pk,
        "agent_id": agent_id,
        "trace_id": trace_id,
        "span_ids": " ".join(s["span_id"] for s in spans),
        "span_count": len(spans),
        "data": (data if data is not None else orjson.dumps(spans)).decode(),
        "received_at": now,
    }


def _stored_spans(*, agents: list[Agent], trace_ids: list[str]) -> dict[str, Any]:
    known: set[tuple[int, str, str]] = set()
    groups: dict[tuple[int, str], str] = {}
    rows = TraceSpans.objects.filter(agent__in=agents, trace_id__in=trace_ids).values_list(
        "agent_id", "trace_id", "span_ids", "captured_trace__key"
    )
    for agent_id, trace_id, span_ids, key in rows:
        known.update((agent_id, trace_id, span_id) for span_id in span_ids.split())
        groups[(agent_id, trace_id)] = key
    return {"known": known, "groups": groups}


class _Rejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _extend_trace(
    *,
    agent: Agent,
    agents: dict[str, Agent],
    key: str,
    spans: list[dict[str, Any]],
    now: datetime,
) -> int:
    """Add new spans to a trace group and rebuild its run, all or nothing; returns the run id."""
    with transaction.atomic():
        trace = _locked_trace(agent=agent, key=key, now=now)
        buffered = {row.trace_id: row for row in trace.trace_spans.all()}
        if buffered and is_settled(trace, now=now):
            raise _Rejected(
                f"{key}: the run is settled (no span for {settings.REVERIE_OTLP_SETTLE_SECONDS} s); "
                "late spans are not added"
            )
        for trace_id, new_spans in _by_trace_id(spans).items():
            row = buffered.get(trace_id)
            if row is None:
                row = TraceSpans(
                    **_trace_spans_values(
                        trace_pk=trace.pk,
                        agent_id=trace.agent_id,
                        trace_id=trace_id,
                        spans=new_spans,
                        now=now,
                    )
                )
                try:
                    with transaction.atomic():
                        row.save()
                except IntegrityError:
                    # This trace id already feeds another run (its group changed): not twice.
                    raise _Rejected(f"{key}: trace {trace_id} belongs to another run") from None
                buffered[trace_id] = row
                continue
            seen = set(row.span_ids.split())
            added = [s for s in new_spans if s["span_id"] not in seen]
            if not added:
                continue
            row.data = orjson.dumps([*orjson.loads(row.data), *added]).decode()
            row.span_ids = " ".join([row.span_ids, *(s["span_id"] for s in added)])
            row.span_count += len(added)
            row.received_at = now
            row.save(update_fields=["data", "span_ids", "span_count", "received_at"])
        trace.last_received_at = now
        everything = [span for row in buffered.values() for span in orjson.loads(row.data)]
        fields = _run_row(agent=agent, agents=agents, key=key, spans=everything)
        run = trace.run
        if run is None:
            if Run.objects.filter(agent=agent, external_id=key).exists():
                raise _Rejected(f"{key}: {TAKEN}")
            run = Run.objects.create(**fields)
            trace.run = run
        else:
            if fields["status"] == Run.Status.UNKNOWN:
                fields["status"] = run.status  # an outcome sent later through the API stays
                fields["outcome_reason"] = fields["outcome_reason"] or run.outcome_reason
            for name in REBUILT_FIELDS:
                setattr(run, name, fields[name])
            run.save(update_fields=[f.removesuffix("_id") for f in REBUILT_FIELDS])
        trace.save(update_fields=["last_received_at", "run"])
        return run.pk


def _run_row(
    *,
    agent: Agent,
    agents: dict[str, Agent],
    key: str,
    spans: list[dict[str, Any]],
    check_nul: bool = True,
) -> dict[str, Any]:
    """The Run row the spans describe, validated by the runs API's own `parse_run`."""
    item = mapping.build_run(agent=agent.slug, external_id=key, spans=spans)
    empty = not item["messages"]
    try:
        row = parse_run(
            item | ({"messages": NO_CONTENT} if empty else {}), agents=agents, check_nul=check_nul
        )
    except TranscriptError as exc:
        raise _Rejected(f"{key}: {exc.path}: {exc.message}") from None
    if empty:
        row["messages"], row["step_count"] = [], 0
    row["source_format"] = "otel"
    return row


def _locked_trace(*, agent: Agent, key: str, now: datetime) -> CapturedTrace:
    for _attempt in range(3):
        trace = (
            CapturedTrace.objects.select_for_update(of=("self",))
            .select_related("run")
            .filter(agent=agent, key=key)
            .first()
        )
        if trace is not None:
            return trace
        try:
            with transaction.atomic():
                return CapturedTrace.objects.create(
                    agent=agent, key=key, first_received_at=now, last_received_at=now
                )
        except IntegrityError:
            continue  # a concurrent request created it: lock that one
    raise _Rejected(f"{key}: busy; retry")


def settle_traces(*, now: datetime | None = None) -> int:
    """Mark traces quiet for the settle period as final and flag their runs; returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.REVERIE_OTLP_SETTLE_SECONDS)
    count = 0
    due = CapturedTrace.objects.filter(settled_at__isnull=True, last_received_at__lte=cutoff)
    for trace_id in due.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            trace = (
                CapturedTrace.objects.select_for_update(of=("self",))
                .select_related("run")
                .filter(pk=trace_id, settled_at__isnull=True)
                .first()
            )
            if trace is None:
                continue
            trace.settled_at = now
            trace.save(update_fields=["settled_at"])
            if trace.run is not None:
                trace.run.metadata.setdefault("otel", {})["settled"] = True
                trace.run.save(update_fields=["metadata"])
            count += 1
    return count
