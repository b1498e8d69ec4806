"""Sync Managed Agents sessions into canonical runs (capture step for Managed Agents).

Sessions are listed from the link's cursor on, read event by event, converted to the canonical
Anthropic Messages form and stored through agents.ingest (idempotent on the session id as the
run's external_id). A session still running or still being graded is left for the next sync, and
the cursor never moves past it.

A session is whole when it *ends* (`terminated`, or archived), not at its first `idle` (waiting
for the user): the run is stored at the first idle, and while the session is open every sync
fetches it again and, when it has moved on (`updated_at`) and is settled, rebuilds the run from
all its events — later turns extend the same run, idempotently, until the session terminates.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anthropic
from django.db import transaction
from django.utils import timezone

from agents import audit
from agents.ingest import IngestError, ingest_runs, parse_run
from agents.models import Run
from agents.transcripts import TranscriptError
from dreams.managed.client import client_for
from dreams.managed.models import ManagedAgentLink
from dreams.managed.mount import mounts_of_session

logger = logging.getLogger(__name__)

OUTCOME_STATUS = {
    "satisfied": Run.Status.SUCCESS,
    "failed": Run.Status.FAILURE,
    "max_iterations_reached": Run.Status.FAILURE,
    "interrupted": Run.Status.UNKNOWN,
}
UNSETTLED_RESULTS = {"pending", "running", "evaluating", "needs_revision"}
FINISHED_STATUSES = {"idle", "terminated"}
OPEN_STATUSES = ["idle", "running", "rescheduling"]
MANAGED_TAG = "managed"
MAX_OPEN_PER_SYNC = 200  # open sessions re-fetched per sync, most recent first


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _dump(obj: Any) -> dict[str, Any]:
    return obj.to_dict(mode="json") if hasattr(obj, "to_dict") else dict(obj)


def has_ended(session: dict[str, Any]) -> bool:
    """Terminated or archived: no further turn can come."""
    return session.get("status") == "terminated" or bool(session.get("archived_at"))


def is_settled(session: dict[str, Any]) -> bool:
    """Finished running and no outcome evaluation still in progress."""
    if session.get("status") not in FINISHED_STATUSES:
        return False
    return all(
        e.get("result") not in UNSETTLED_RESULTS for e in session.get("outcome_evaluations") or []
    )


def _result_blocks(content: Any) -> list[dict[str, Any]] | str:
    if not content:
        return ""
    blocks = []
    for block in content:
        if block.get("type") == "text":
            blocks.append({"type": "text", "text": block.get("text", "")})
        else:
            blocks.append({"type": "text", "text": f"[{block.get('type', 'content')} omitted]"})
    return blocks


def events_to_messages(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold session events into alternating user/assistant messages with tool_use/tool_result blocks."""
    messages: list[dict[str, Any]] = []

    def add(role: str, block: dict[str, Any]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": role, "content": [block]})

    for event in events:
        kind = event.get("type")
        if kind == "user.message":
            for block in event.get("content") or []:
                if block.get("type") == "text":
                    add("user", {"type": "text", "text": block.get("text", "")})
                else:
                    add("user", {"type": "text", "text": f"[{block.get('type')} omitted]"})
        elif kind == "agent.message":
            for block in event.get("content") or []:
                if block.get("type") == "text":
                    add("assistant", {"type": "text", "text": block.get("text", "")})
        elif kind in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
            add(
                "assistant",
                {
                    "type": "tool_use",
                    "id": event["id"],
                    "name": event.get("name") or "tool",
                    "input": event.get("input") or {},
                },
            )
        elif kind in (
            "agent.tool_result",
            "agent.mcp_tool_result",
            "user.custom_tool_result",
            "user.tool_result",
        ):
            tool_use_id = (
                event.get("tool_use_id")
                or event.get("mcp_tool_use_id")
                or event.get("custom_tool_use_id")
            )
            block = {
                "type": "tool_result",
                "tool_use_id": tool_use_id,
                "content": _result_blocks(event.get("content")),
            }
            if event.get("is_error"):
                block["is_error"] = True
            add("user", block)
    return messages


def _outcome(session: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Status, reason and rubric from the latest outcome evaluation (or a terminal session error)."""
    evaluations = session.get("outcome_evaluations") or []
    if evaluations:
        latest = evaluations[-1]
        rubrics = {
            e.get("outcome_id"): e.get("rubric") or {}
            for e in events
            if e.get("type") == "user.define_outcome"
        }
        rubric = rubrics.get(latest.get("outcome_id"), {})
        rubric_text = rubric.get("content") if rubric.get("type") == "text" else ""
        parts = [latest.get("description") or "", rubric_text or ""]
        return {
            "status": OUTCOME_STATUS.get(latest.get("result"), Run.Status.UNKNOWN),
            "outcome_reason": latest.get("explanation") or latest.get("result") or "",
            "rubric": "\n\n".join(p for p in parts if p),
            "outcome": {
                "outcome_id": latest.get("outcome_id"),
                "result": latest.get("result"),
                "iteration": latest.get("iteration"),
            },
        }
    for event in reversed(events):
        if event.get("type") == "session.error":
            error = event.get("error") or {}
            if (error.get("retry_status") or {}).get("type") in ("exhausted", "terminal"):
                return {
                    "status": Run.Status.ERROR,
                    "outcome_reason": f"{error.get('type')}: {error.get('message', '')}",
                    "rubric": "",
                    "outcome": {},
                }
    return {"status": Run.Status.UNKNOWN, "outcome_reason": "", "rubric": "", "outcome": {}}


def _usage(raw: dict[str, Any]) -> dict[str, int]:
    cache_creation = raw.get("cache_creation") or {}
    written = (
        sum(v for v in cache_creation.values() if isinstance(v, int))
        if isinstance(cache_creation, dict)
        else 0
    )
    return {
        "input_tokens": int(raw.get("input_tokens") or 0),
        "output_tokens": int(raw.get("output_tokens") or 0),
        "cache_read_input_tokens": int(raw.get("cache_read_input_tokens") or 0),
        "cache_creation_input_tokens": written,
    }


def session_to_run(
    *, agent_slug: str, session: dict[str, Any], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """One capture item (agents.ingest form) for a settled session."""
    remote_agent = session.get("agent") or {}
    model = remote_agent.get("model") or {}
    tools = [
        {
            "name": t["name"],
            "description": t.get("description") or "",
            "input_schema": t.get("input_schema") or {"type": "object"},
        }
        for t in remote_agent.get("tools") or []
        if t.get("type") == "custom" and t.get("name")
    ]
    outcome = _outcome(session, events)
    messages = events_to_messages(events)
    if not messages:
        messages = [{"role": "user", "content": [{"type": "text", "text": ""}]}]
    duration = (session.get("stats") or {}).get("duration_seconds")
    item: dict[str, Any] = {
        "agent": agent_slug,
        "external_id": session["id"],
        "format": "anthropic",
        "status": outcome["status"],
        "outcome_reason": outcome["outcome_reason"],
        "system": remote_agent.get("system") or "",
        "tools": tools,
        "messages": messages,
        "usage": _usage(session.get("usage") or {}),
        "model": model.get("id") if isinstance(model, dict) else str(model or ""),
        "started_at": str(session["created_at"]),
        "tags": [MANAGED_TAG],
        "metadata": {
            "managed": {
                "session_id": session["id"],
                "agent_id": remote_agent.get("id"),
                "agent_version": remote_agent.get("version"),
                "session_status": "terminated" if has_ended(session) else session.get("status"),
                "session_updated_at": str(session.get("updated_at") or ""),
                # How the session read memory (mounted files), so its replays read it the same way.
                "memory_mounts": mounts_of_session(session),
                **outcome["outcome"],
            }
        },
    }
    if duration is not None:
        item["latency_ms"] = int(float(duration) * 1000)
    if outcome["rubric"]:
        item["expectations"] = {"rubric": outcome["rubric"]}
    return item


def _read_events(client: anthropic.Anthropic, session_id: str) -> list[dict[str, Any]]:
    return [_dump(e) for e in client.beta.sessions.events.list(session_id, order="asc", limit=100)]


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _store(
    link: ManagedAgentLink, session: dict[str, Any], client: anthropic.Anthropic, result: SyncResult
) -> None:
    events = _read_events(client, session["id"])
    item = session_to_run(agent_slug=link.agent.slug, session=session, events=events)
    try:
        stored = ingest_runs(workspace=link.agent.workspace, items=[item])[0]
    except IngestError as exc:
        logger.warning("session %s could not be stored: %s", session["id"], exc)
        result.skipped[session["id"]] = str(exc)
        return
    (result.created if stored.created else result.existing).append(session["id"])


def _graded(session: dict[str, Any]) -> bool:
    evaluations = session.get("outcome_evaluations") or []
    return (
        is_settled(session)
        and bool(evaluations)
        and evaluations[-1].get("result") in OUTCOME_STATUS
    )


EXTENDED_FIELDS = [
    "messages",
    "step_count",
    "system",
    "tools",
    "metadata",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "latency_ms",
]
GRADE_FIELDS = ["status", "outcome_reason", "expectations"]


def _is_open(run: Run) -> bool:
    return (run.metadata.get(MANAGED_TAG) or {}).get("session_status") in OPEN_STATUSES


def _moved_on(run: Run, session: dict[str, Any]) -> bool:
    managed = run.metadata.get(MANAGED_TAG) or {}
    return managed.get("session_updated_at") != str(session.get("updated_at") or "") or (
        run.status == Run.Status.UNKNOWN and _graded(session)
    )


def _extend(
    link: ManagedAgentLink,
    run: Run,
    session: dict[str, Any],
    client: anthropic.Anthropic,
    result: SyncResult,
) -> None:
    """Rebuild an open session's run from all its events (later turns, a grade, its end)."""
    if not _moved_on(run, session):
        result.existing.append(session["id"])
        return
    if not is_settled(session):
        result.pending.append(session["id"])  # a turn is in progress: take it whole next time
        return
    events = _read_events(client, session["id"])
    item = session_to_run(agent_slug=link.agent.slug, session=session, events=events)
    try:
        fresh = parse_run(item, agents=_agents_by_slug(link))
    except TranscriptError as exc:
        result.skipped[session["id"]] = str(exc)
        return
    fields = list(EXTENDED_FIELDS)
    if fresh["status"] != Run.Status.UNKNOWN:
        fields += GRADE_FIELDS  # else an outcome sent through the API stays
    fresh["metadata"] = {**run.metadata, MANAGED_TAG: fresh["metadata"][MANAGED_TAG]}
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if not _is_open(locked):
            result.existing.append(session["id"])  # another sync saw it end first
            return
        for name in fields:
            setattr(locked, name, fresh[name])
        locked.save(update_fields=fields)
    result.updated.append(session["id"])


def _open_runs(link: ManagedAgentLink, exclude: set[str]) -> list[Run]:
    """Stored runs whose session has not ended (JSON key lookups work on SQLite and PostgreSQL)."""
    return list(
        Run.objects.filter(agent=link.agent, metadata__managed__session_status__in=OPEN_STATUSES)
        .exclude(external_id__in=exclude)
        .order_by("-started_at", "-id")[:MAX_OPEN_PER_SYNC]
    )


def _agents_by_slug(link: ManagedAgentLink) -> dict[str, Any]:
    agent = link.agent
    agent._version_ids = {}  # type: ignore[attr-defined]  # parse_run reads it for explicit versions
    return {agent.slug: agent}


def sync_link(*, link_id: int, session_ids: list[str] | None = None) -> SyncResult:
    """List sessions since the cursor (or fetch the given ones) and store the settled ones as runs."""
    link = ManagedAgentLink.objects.select_related("agent__workspace").get(pk=link_id)
    client = client_for(link)
    result = SyncResult()
    if session_ids is not None:
        sessions = [_dump(client.beta.sessions.retrieve(sid)) for sid in session_ids]
        sessions = [
            s for s in sessions if (s.get("agent") or {}).get("id") == link.managed_agent_id
        ]
    else:
        params: dict[str, Any] = {"agent_id": link.managed_agent_id, "order": "asc", "limit": 100}
        if link.sync_cursor is not None:
            params["created_at_gte"] = link.sync_cursor.isoformat()
        sessions = [_dump(s) for s in client.beta.sessions.list(**params)]

    known = {
        run.external_id: run
        for run in Run.objects.filter(agent=link.agent, external_id__in=[s["id"] for s in sessions])
    }
    cursor = link.sync_cursor
    blocked = False  # the cursor stops at the first session that is not settled yet
    for session in sessions:
        created_at = _as_datetime(session["created_at"])
        if session["id"] in known:
            run = known[session["id"]]
            if _is_open(run):
                _extend(link, run, session, client, result)
            else:
                result.existing.append(session["id"])
        elif not is_settled(session):
            result.pending.append(session["id"])
            if session_ids is None and not blocked:
                cursor, blocked = created_at, True
            continue
        else:
            _store(link, session, client, result)
        if session_ids is None and not blocked:
            cursor = max(cursor, created_at) if cursor else created_at
    if session_ids is None:
        # Open sessions behind the cursor: their later turns extend their runs.
        for run in _open_runs(link, exclude={s["id"] for s in sessions}):
            try:
                session = _dump(client.beta.sessions.retrieve(run.external_id))
            except anthropic.NotFoundError:
                session = {"id": run.external_id, "status": "terminated"}  # deleted: it ended
                _close(run)
                result.updated.append(run.external_id)
                continue
            _extend(link, run, session, client, result)

    with transaction.atomic():
        link = (
            ManagedAgentLink.objects.select_for_update()
            .select_related("agent__workspace")
            .get(pk=link_id)
        )
        fields = ["last_synced_at", "last_sync_error", "updated_at"]
        link.last_synced_at = timezone.now()
        link.last_sync_error = ""
        if session_ids is None:
            link.sync_cursor = cursor
            fields.append("sync_cursor")
        link.save(update_fields=fields)
        if result.created:
            audit.record(
                workspace=link.agent.workspace,
                actor=None,
                action="managed.sync",
                target=link,
                after={"created": len(result.created), "pending": len(result.pending)},
            )
    return result


def _close(run: Run) -> None:
    managed = {**(run.metadata.get(MANAGED_TAG) or {}), "session_status": "terminated"}
    Run.objects.filter(pk=run.pk).update(metadata={**run.metadata, MANAGED_TAG: managed})


def record_sync_error(*, link_id: int, message: str) -> None:
    ManagedAgentLink.objects.filter(pk=link_id).update(
        last_sync_error=message[:2000], updated_at=timezone.now()
    )
