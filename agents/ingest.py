"""Capture: validate incoming runs and store them in bulk, idempotent on (agent, external_id).

A batch is all-or-nothing: every item is validated before anything is written, and the
insert runs in one transaction. Re-posting a run returns the stored id and writes nothing.
Hot path (tests/bench/ingest.py): orjson in and out, plain row dicts instead of model
instances, and on PostgreSQL one COPY per batch into the run table.
"""

import json
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from agents.answer_patterns import PatternError, compile_answer_pattern
from agents.models import Agent, ConfigVersion, Run, Workspace
from agents.pricing import cost_of
from agents.timestamps import TimestampError, parse_timestamp
from agents.transcripts import TranscriptError, check_tool_turns, count_steps, to_canonical

MAX_EXTERNAL_ID = 255
STATUSES = frozenset(Run.Status.values)  # the enum rebuilds its value list on every access
MAX_LATENCY_MS = 2**31 - 1  # the column is a PostgreSQL integer
MAX_COST_USD = Decimal(1_000_000)  # the column holds 12 digits, 6 after the point
GRADED_ON = frozenset(Run.GradedOn.values)
MAX_USER_BRIEF = 20_000


class IngestError(ValueError):
    """A batch item failed validation; `fields` maps a dotted path (with the item index) to messages."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        first = next(iter(fields.items()))
        super().__init__(f"{first[0]}: {first[1][0]}")


@dataclass
class IngestResult:
    index: int
    id: int
    external_id: str
    agent: str
    created: bool


def _fail(path: str, message: str) -> TranscriptError:
    return TranscriptError(path, message)


def _optional_number(item: dict[str, Any], key: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, "must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _fail(key, "must be a finite number")
    return number


def _validate_expectations(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail("expectations", "must be an object")
    allowed = {"expected_answer_pattern", "expected_tools", "forbidden_tools", "rubric"}
    unknown = set(value) - allowed
    if unknown:
        raise _fail(
            f"expectations.{sorted(unknown)[0]}",
            f"unknown key; allowed: {', '.join(sorted(allowed))}",
        )
    pattern = value.get("expected_answer_pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _fail(
                "expectations.expected_answer_pattern", "must be a string (a regular expression)"
            )
        try:
            compile_answer_pattern(pattern)
        except PatternError as exc:
            raise _fail("expectations.expected_answer_pattern", str(exc)) from None
    for key in ("expected_tools", "forbidden_tools"):
        calls = value.get(key)
        if calls is None:
            continue
        if not isinstance(calls, list):
            raise _fail(f"expectations.{key}", "must be a list of {name, arguments?} or tool names")
        for j, call in enumerate(calls):
            if isinstance(call, str):
                continue
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise _fail(f"expectations.{key}[{j}].name", "must be a tool name")
            if not isinstance(call.get("arguments", {}), dict):
                raise _fail(
                    f"expectations.{key}[{j}].arguments", "must be an object (an argument subset)"
                )
    if value.get("rubric") is not None and not isinstance(value["rubric"], str):
        raise _fail("expectations.rubric", "must be a string")
    return value


def nul_path(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding U+0000, which PostgreSQL cannot store."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return child_path
            found = nul_path(child, child_path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = nul_path(child, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def parse_run(item: Any, *, agents: dict[str, Agent], check_nul: bool = True) -> dict[str, Any]:
    """Validate one incoming run into a row of Run values; raises TranscriptError naming the field."""
    if not isinstance(item, dict):
        raise _fail("", "each run must be a JSON object")
    if check_nul:
        nul_at = nul_path(item)
        if nul_at is not None:
            raise _fail(nul_at, "contains a NUL character (\\u0000), which cannot be stored")
    slug = item.get("agent")
    if not isinstance(slug, str) or not slug:
        raise _fail("agent", "is required (the agent's slug)")
    agent = agents.get(slug)
    if agent is None:
        raise _fail("agent", f"unknown agent {slug!r} in this workspace")
    external_id = item.get("external_id")
    if not isinstance(external_id, str) or not external_id or len(external_id) > MAX_EXTERNAL_ID:
        raise _fail(
            "external_id",
            f"is required: a non-empty string of at most {MAX_EXTERNAL_ID} characters",
        )
    status = item.get("status", "unknown")
    if not isinstance(status, str) or status not in STATUSES:
        raise _fail("status", f"must be one of {', '.join(Run.Status.values)}")
    started_at = timezone.now()
    if item.get("started_at") is not None:
        try:
            started_at = parse_timestamp(item["started_at"])
        except TimestampError as exc:
            raise _fail("started_at", str(exc)) from None
    latency = item.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool)
        or not isinstance(latency, int | float)
        or not 0 <= latency < MAX_LATENCY_MS
    ):
        raise _fail("latency_ms", f"must be a number of milliseconds below {MAX_LATENCY_MS}")
    tags = item.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _fail("tags", "must be a list of strings")
    metadata = item.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _fail("metadata", "must be an object")
    reason = item.get("outcome_reason", "")
    if not isinstance(reason, str):
        raise _fail("outcome_reason", "must be a string")
    score = _optional_number(item, "score")
    expectations = _validate_expectations(item.get("expectations"))
    graded_on = item.get("graded_on", Run.GradedOn.BOTH)
    if not isinstance(graded_on, str) or graded_on not in GRADED_ON:
        raise _fail("graded_on", f"must be one of {', '.join(Run.GradedOn.values)}")
    user_brief = item.get("user_brief", "")
    if not isinstance(user_brief, str) or len(user_brief) > MAX_USER_BRIEF:
        raise _fail("user_brief", f"must be a string of at most {MAX_USER_BRIEF} characters")

    canonical = to_canonical(item)
    check_tool_turns(canonical["messages"])
    usage = canonical["usage"]
    model = canonical["model"] or agent.model
    if not isinstance(model, str):
        raise _fail("model", "must be a string")

    version_id = None
    if item.get("config_version") is not None:
        number = item["config_version"]
        if isinstance(number, bool) or not isinstance(number, int):
            raise _fail("config_version", "must be a version number")
        version_id = agent._version_ids.get(number)  # type: ignore[attr-defined]
        if version_id is None:
            raise _fail("config_version", f"agent {slug!r} has no version {number}")
    else:
        version_id = agent.stable_version_id

    if item.get("cost_usd") is not None:
        raw_cost = item["cost_usd"]
        try:
            cost = Decimal(str(raw_cost)) if not isinstance(raw_cost, bool) else Decimal("NaN")
        except InvalidOperation:
            cost = Decimal("NaN")
        if not cost.is_finite() or not 0 <= cost < MAX_COST_USD:
            raise _fail("cost_usd", f"must be a number of dollars from 0 to below {MAX_COST_USD}")
        cost = cost.quantize(Decimal("0.000001"))
    else:
        cost = cost_of(model, usage)

    # A plain row (field attname → value): building model instances costs more than storing them.
    return {
        "agent_id": agent.pk,
        "config_version_id": version_id,
        "external_id": external_id,
        "status": status,
        "score": score,
        "outcome_reason": reason,
        "model": model,
        "system": canonical["system"],
        "tools": canonical["tools"],
        "messages": canonical["messages"],
        "step_count": count_steps(canonical["messages"]),
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "cache_read_tokens": usage.get("cache_read_input_tokens", 0),
        "cache_write_tokens": usage.get("cache_creation_input_tokens", 0),
        "cost_usd": cost,
        "latency_ms": int(latency) if latency is not None else None,
        "started_at": started_at,
        "tags": tags,
        "metadata": metadata,
        "expectations": expectations,
        "source_format": canonical["format"],
        "graded_on": graded_on,
        "user_brief": user_brief,
    }


def _load_agents(workspace: Workspace, slugs: set[str]) -> dict[str, Agent]:
    agents = {a.slug: a for a in Agent.objects.filter(workspace=workspace, slug__in=slugs)}
    versions: dict[int, dict[int, int]] = {}
    for agent_id, number, pk in ConfigVersion.objects.filter(agent__in=agents.values()).values_list(
        "agent_id", "number", "pk"
    ):
        versions.setdefault(agent_id, {})[number] = pk
    for agent in agents.values():
        agent._version_ids = versions.get(agent.pk, {})  # type: ignore[attr-defined]
    return agents


class PayloadRejected(ValueError):
    """The body of POST /runs as a whole is unusable (not JSON, wrong shape, too large)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid",
        fields: dict[str, list[str]] | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.fields = fields or {}
        self.status = status


EXPECTED_BODY = 'one run object, a list of runs, or {"runs": [...]}'


def load_payload(body: bytes) -> tuple[list[Any], bool]:
    """Decode a POST /runs body into its run items; the flag says whether one bare run was sent."""
    if len(body) > settings.REVERIE_REQUEST_MAX_BYTES:
        raise PayloadRejected(
            f"Request body over {settings.REVERIE_REQUEST_MAX_BYTES} bytes.",
            code="too_large",
            status=413,
        )
    try:
        data = orjson.loads(body)  # strict: no NaN, no lone surrogates (PostgreSQL refuses them)
    except orjson.JSONDecodeError as exc:
        raise PayloadRejected(
            f"Malformed JSON ({exc}); expected {EXPECTED_BODY}.", code="parse_error"
        ) from exc
    single = isinstance(data, dict) and "runs" not in data
    items = [data] if single else (data.get("runs") if isinstance(data, dict) else data)
    if not isinstance(items, list) or not items:
        raise PayloadRejected(
            f"Expected {EXPECTED_BODY}.",
            fields={"runs": ["expected a run object or a non-empty list of runs"]},
        )
    if len(items) > settings.REVERIE_BATCH_MAX_RUNS:
        raise PayloadRejected(
            f"At most {settings.REVERIE_BATCH_MAX_RUNS} runs per request.",
            code="too_large",
            fields={"runs": [f"{len(items)} runs sent"]},
            status=413,
        )
    oversized = _first_oversized(items, body_size=len(body))
    if oversized is not None:
        raise PayloadRejected(
            f"Run {oversized} is over {settings.REVERIE_RUN_MAX_BYTES} bytes.",
            code="too_large",
            fields={f"runs[{oversized}]": ["too large"]},
            status=413,
        )
    return items, single


def _first_oversized(items: list[Any], *, body_size: int) -> int | None:
    """Return the index of the first run over the per-run limit, or None."""
    limit = settings.REVERIE_RUN_MAX_BYTES
    if body_size <= limit:
        return None  # no single item can be larger than the whole body
    for index, item in enumerate(items):
        if len(orjson.dumps(item)) > limit:
            return index
    return None


def ingest_runs(
    *, workspace: Workspace, items: list[Any], check_nul: bool = True
) -> list[IngestResult]:
    """Store a batch of runs; existing (agent, external_id) pairs are returned, not re-written.

    `check_nul=False` skips the scan for U+0000 when the caller knows the raw body has none.
    """
    slugs = {
        i["agent"]
        for i in items
        if isinstance(i, dict) and isinstance(i.get("agent"), str) and "\x00" not in i["agent"]
    }
    agents = _load_agents(workspace, slugs)
    rows: list[dict[str, Any]] = []
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(items):
        try:
            rows.append(parse_run(item, agents=agents, check_nul=check_nul))
        except TranscriptError as exc:
            path = f"runs[{index}].{exc.path}" if exc.path else f"runs[{index}]"
            errors[path] = [exc.message]
            if len(errors) >= 20:
                break
    if errors:
        raise IngestError(errors)

    slugs_by_id = {agent.pk: slug for slug, agent in agents.items()}
    try:
        return _insert(rows, slugs_by_id=slugs_by_id)
    except IntegrityError:
        pass  # a concurrent request stored some of these first
    if connection.vendor == "postgresql":
        # Skip what racers stored (ON CONFLICT DO NOTHING): cannot fail again however many race.
        return _insert(rows, slugs_by_id=slugs_by_id, skip_conflicts=True)
    for _attempt in range(3):  # SQLite serialises writers: looking again is enough
        try:
            return _insert(rows, slugs_by_id=slugs_by_id)
        except IntegrityError:
            continue
    return _insert(rows, slugs_by_id=slugs_by_id)


def _insert(
    rows: list[dict[str, Any]], *, slugs_by_id: dict[int, str], skip_conflicts: bool = False
) -> list[IngestResult]:
    """Store the rows not stored yet, in one transaction; duplicates in the batch: first one wins.

    `skip_conflicts` (PostgreSQL) inserts with ON CONFLICT DO NOTHING and then reads back which
    rows a concurrent request stored first: those are answered as existing, with their ids.
    """
    with transaction.atomic():
        existing: dict[tuple[int, str], int] = {}
        by_agent: dict[int, list[str]] = {}
        for row in rows:
            by_agent.setdefault(row["agent_id"], []).append(row["external_id"])
        for agent_id, external_ids in by_agent.items():
            for chunk_start in range(0, len(external_ids), 1000):
                chunk = external_ids[chunk_start : chunk_start + 1000]
                for ext, pk in Run.objects.filter(
                    agent_id=agent_id, external_id__in=chunk
                ).values_list("external_id", "pk"):
                    existing[(agent_id, ext)] = pk
        planned: dict[tuple[int, str], dict[str, Any]] = {}
        for row in rows:
            key = (row["agent_id"], row["external_id"])
            if key not in existing and key not in planned:
                planned[key] = row
        if planned:
            # A fixed order: two batches racing on the same keys then wait, never deadlock.
            ordered = [planned[key] for key in sorted(planned)]
            if skip_conflicts:
                _store_skipping_conflicts(ordered)
                for key, row in list(planned.items()):
                    if row.get("stored_by_other") is not None:
                        existing[key] = row.pop("stored_by_other")
                        del planned[key]
            else:
                _store(ordered)
    results = []
    for index, row in enumerate(rows):
        key = (row["agent_id"], row["external_id"])
        slug = slugs_by_id[row["agent_id"]]
        if key in existing:
            results.append(IngestResult(index, existing[key], row["external_id"], slug, False))
        else:
            stored = planned[key]
            results.append(
                IngestResult(index, stored["id"], row["external_id"], slug, stored is row)
            )
    return results


def _store(rows: list[dict[str, Any]]) -> None:
    """Write new runs and set their "id" (see `insert_rows`)."""
    insert_rows(Run, rows)


def insert_rows(model: type[models.Model], rows: list[dict[str, Any]]) -> None:
    """Write new rows (field attname → value) and set their "id". On PostgreSQL: ids from the
    sequence, then one COPY (several times faster than Django's multi-row INSERT, which quotes
    JSON and long text into arrays); elsewhere one bulk INSERT."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        objs = model._default_manager.bulk_create([model(**row) for row in rows], batch_size=500)
        for row, obj in zip(rows, objs, strict=True):
            row["id"] = obj.pk
            if obj.pk is None:  # backends without RETURNING
                row["id"] = model._default_manager.get(
                    **{f: row[f] for f in _natural_key(model)}
                ).pk
        return
    table = model._meta.db_table
    fields = [f for f in model._meta.concrete_fields if f.attname != "id"]
    json_fields = {f.attname for f in fields if isinstance(f, models.JSONField)}
    now = timezone.now()
    # A column the row does not name gets its model default (auto_now fields: now).
    defaults = {f.attname: now if _auto_now(f) else f.get_default() for f in fields}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(rows)],
        )
        for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
            row["id"] = pk
        columns = ", ".join(connection.ops.quote_name(cast(str, f.column)) for f in fields)
        sql = f"COPY {connection.ops.quote_name(table)} (id, {columns}) FROM STDIN"
        with connection.wrap_database_errors, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(
                    [row["id"]]
                    + [
                        dump_json(row.get(n, d)) if n in json_fields else row.get(n, d)
                        for n, d in defaults.items()
                    ]
                )


def _auto_now(field: models.Field) -> bool:
    return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))


def _natural_key(model: type[models.Model]) -> list[str]:
    for constraint in model._meta.constraints:
        if isinstance(constraint, models.UniqueConstraint) and constraint.condition is None:
            return [cast(models.Field, model._meta.get_field(f)).attname for f in constraint.fields]
    raise LookupError(f"{model.__name__} has no unique constraint to read ids back by")


def _store_skipping_conflicts(rows: list[dict[str, Any]]) -> None:
    """PostgreSQL: ids from the sequence, INSERT … ON CONFLICT DO NOTHING, then read back each
    key's id; a row whose stored id is not its own was stored by a concurrent request."""
    table = Run._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, len(rows)],
        )
        for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
            row["id"] = pk
    Run.objects.bulk_create([Run(**row) for row in rows], batch_size=500, ignore_conflicts=True)
    by_agent: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_agent.setdefault(row["agent_id"], {})[row["external_id"]] = row
    for agent_id, wanted in by_agent.items():
        stored = Run.objects.filter(agent_id=agent_id, external_id__in=list(wanted))
        for ext, pk in stored.values_list("external_id", "pk"):
            if pk != wanted[ext]["id"]:
                wanted[ext]["stored_by_other"] = pk


def dump_json(value: Any) -> str:
    """JSON text for a jsonb column (orjson; the stdlib for what orjson cannot encode)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
