"""Capture: validate incoming runs and store them in bulk, idempotent on (agent, external_id).

A batch is all-or-nothing: every item is validated before anything is written, and the
insert runs in one transaction. Re-posting a run returns the stored id and writes nothing.
"""

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.models import Agent, ConfigVersion, Run, Workspace
from agents.pricing import cost_of
from agents.transcripts import TranscriptError, count_steps, to_canonical

MAX_EXTERNAL_ID = 255
MAX_LATENCY_MS = 2**31 - 1  # the column is a PostgreSQL integer
MAX_COST_USD = Decimal(1_000_000)  # the column holds 12 digits, 6 after the point


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
            re.compile(pattern)
        except re.error as exc:
            raise _fail(
                "expectations.expected_answer_pattern", f"is not a valid regular expression ({exc})"
            ) from exc
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


def _nul_path(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding U+0000, which PostgreSQL cannot store."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return child_path
            found = _nul_path(child, child_path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = _nul_path(child, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def parse_run(item: Any, *, agents: dict[str, Agent], check_nul: bool = True) -> Run:
    """Validate one incoming run and build an unsaved Run; raises TranscriptError naming the field."""
    if not isinstance(item, dict):
        raise _fail("", "each run must be a JSON object")
    if check_nul:
        nul_at = _nul_path(item)
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
    status = item.get("status", Run.Status.UNKNOWN)
    if status not in Run.Status.values:
        raise _fail("status", f"must be one of {', '.join(Run.Status.values)}")
    started_at = timezone.now()
    if item.get("started_at") is not None:
        raw = item["started_at"]
        try:
            parsed = parse_datetime(raw) if isinstance(raw, str) else None
        except ValueError:  # well-formed but impossible, e.g. month 13
            parsed = None
        if parsed is None:
            raise _fail("started_at", "must be an ISO 8601 date-time")
        started_at = (
            parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.UTC)
        )
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

    canonical = to_canonical(item)
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

    return Run(
        agent=agent,
        config_version_id=version_id,
        external_id=external_id,
        status=status,
        score=score,
        outcome_reason=reason,
        model=model,
        system=canonical["system"],
        tools=canonical["tools"],
        messages=canonical["messages"],
        step_count=count_steps(canonical["messages"]),
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        cache_read_tokens=usage.get("cache_read_input_tokens", 0),
        cache_write_tokens=usage.get("cache_creation_input_tokens", 0),
        cost_usd=cost,
        latency_ms=int(latency) if latency is not None else None,
        started_at=started_at,
        tags=tags,
        metadata=metadata,
        expectations=expectations,
        source_format=canonical["format"],
    )


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_payload(body: bytes) -> tuple[list[Any], bool]:
    """Decode a POST /runs body into its run items; the flag says whether one bare run was sent."""
    if len(body) > settings.REVERIE_REQUEST_MAX_BYTES:
        raise PayloadRejected(
            f"Request body over {settings.REVERIE_REQUEST_MAX_BYTES} bytes.",
            code="too_large",
            status=413,
        )
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
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
        if len(json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()) > limit:
            return index
    return None


def ingest_runs(
    *, workspace: Workspace, items: list[Any], check_nul: bool = True
) -> list[IngestResult]:
    """Store a batch of runs; existing (agent, external_id) pairs are returned, not re-written.

    `check_nul=False` skips the scan for U+0000 when the caller knows the raw body has none.
    """
    slugs = {
        i.get("agent") for i in items if isinstance(i, dict) and isinstance(i.get("agent"), str)
    }
    agents = _load_agents(workspace, slugs)
    runs: list[Run] = []
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(items):
        try:
            runs.append(parse_run(item, agents=agents, check_nul=check_nul))
        except TranscriptError as exc:
            path = f"runs[{index}].{exc.path}" if exc.path else f"runs[{index}]"
            errors[path] = [exc.message]
            if len(errors) >= 20:
                break
    if errors:
        raise IngestError(errors)

    # Duplicates inside the batch itself: the first occurrence wins.
    for _attempt in range(3):
        try:
            return _insert(runs)
        except IntegrityError:
            continue  # a concurrent request stored some of these first; look again
    return _insert(runs)


def _insert(runs: list[Run]) -> list[IngestResult]:
    with transaction.atomic():
        existing: dict[tuple[int, str], int] = {}
        by_agent: dict[int, list[str]] = {}
        for run in runs:
            by_agent.setdefault(run.agent_id, []).append(run.external_id)
        for agent_id, external_ids in by_agent.items():
            for chunk_start in range(0, len(external_ids), 1000):
                chunk = external_ids[chunk_start : chunk_start + 1000]
                for ext, pk in Run.objects.filter(
                    agent_id=agent_id, external_id__in=chunk
                ).values_list("external_id", "pk"):
                    existing[(agent_id, ext)] = pk
        to_create: list[Run] = []
        planned: dict[tuple[int, str], Run] = {}
        for run in runs:
            key = (run.agent_id, run.external_id)
            if key not in existing and key not in planned:
                planned[key] = run
                to_create.append(run)
        created = Run.objects.bulk_create(to_create, batch_size=500)
        if created and created[0].pk is None:  # backends without RETURNING
            ids = dict(
                ((a, e), pk)
                for a, e, pk in Run.objects.filter(
                    agent_id__in=by_agent, external_id__in=[r.external_id for r in created]
                ).values_list("agent_id", "external_id", "pk")
            )
            for run in created:
                run.pk = ids[(run.agent_id, run.external_id)]
    results = []
    for index, run in enumerate(runs):
        key = (run.agent_id, run.external_id)
        if key in existing:
            results.append(
                IngestResult(index, existing[key], run.external_id, run.agent.slug, False)
            )
        else:
            stored = planned[key]
            results.append(
                IngestResult(index, stored.pk, run.external_id, run.agent.slug, stored is run)
            )
    return results
