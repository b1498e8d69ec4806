"""Write an approved proposal into the live Managed Agent: memories first, then the system prompt.

Every changed or removed memory is written with the content_sha256 of the version the proposal
was based on. The first failed precondition stops the run: nothing further is written, and the
MemoryApplication row says exactly which writes happened and what the live text is now.

A new attempt (after a conflict, an outage or a dead worker) re-reads the live hashes first: a
memory that already holds the proposal's text is done (`already_live`), so a retried partial apply
finishes instead of re-sending the old hash and reading its own earlier write as a conflict.
"""

import hashlib
import logging
from datetime import timedelta
from typing import Any

import anthropic
from anthropic.types.beta.memory_stores import BetaManagedAgentsMemory as Memory
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import audit
from agents.actors import Actor, user_of
from agents.services import set_stable_version
from dreams.managed.client import ManagedNotConfigured, client_for
from dreams.managed.models import ManagedAgentLink, MemoryApplication
from dreams.models import Proposal
from dreams.proposals import transition_proposal

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=15)
PRECONDITION_ERRORS = {"memory_precondition_failed_error", "memory_path_conflict_error"}


class ApplyError(Exception):
    """The proposal cannot be applied (wrong status, not linked, already applying)."""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan_for(proposal: Proposal) -> list[dict[str, Any]]:
    """Ordered writes: changed, added, removed memories (then the prompt, handled apart)."""
    before = proposal.base_version.memory_documents
    after = proposal.candidate_version.memory_documents
    plan = [
        {"op": "update", "path": p}
        for p in sorted(set(before) & set(after))
        if before[p] != after[p]
    ]
    plan += [{"op": "create", "path": p} for p in sorted(set(after) - set(before))]
    plan += [{"op": "delete", "path": p} for p in sorted(set(before) - set(after))]
    return plan


def _live_state(client: anthropic.Anthropic, store_id: str) -> dict[str, tuple[str, str]]:
    """path → (memory id, content_sha256) of the live store; the basic view carries the hash."""
    return {
        m.path: (m.id, m.content_sha256)
        for m in client.beta.memory_stores.memories.list(store_id, limit=100)
        if getattr(m, "type", "") == "memory" and isinstance(m, Memory)
    }


def _live_ids(client: anthropic.Anthropic, store_id: str) -> dict[str, str]:
    return {path: memory_id for path, (memory_id, _) in _live_state(client, store_id).items()}


def _already_live(
    step: dict[str, Any], live: tuple[str, str] | None, new_text: str | None
) -> dict[str, Any] | None:
    """The written record when the live store already holds this step's result, else None."""
    op, path = step["op"], step["path"]
    if op == "delete":
        if live is not None:
            return None
        return {"op": op, "path": path, "memory_id": None, "content_sha256": None}
    if live is None or live[1] != sha256(new_text or ""):
        return None
    return {"op": op, "path": path, "memory_id": live[0], "content_sha256": live[1]}


def _save(application: MemoryApplication, **changes: Any) -> None:
    for key, value in changes.items():
        setattr(application, key, value)
    application.save(update_fields=list(changes))


def _conflict(
    *,
    client: anthropic.Anthropic,
    store_id: str,
    path: str,
    memory_id: str | None,
    expected: str | None,
    message: str,
) -> dict[str, Any]:
    live_content, live_sha, live_id = None, None, memory_id
    try:
        if memory_id is None:
            memory_id = _live_ids(client, store_id).get(path)
            live_id = memory_id
        if memory_id is not None:
            live = client.beta.memory_stores.memories.retrieve(
                memory_id, memory_store_id=store_id, view="full"
            )
            live_content, live_sha = live.content, live.content_sha256
    except anthropic.NotFoundError:
        live_content, live_sha = None, None  # deleted live since the proposal
    return {
        "path": path,
        "memory_id": live_id,
        "expected_sha256": expected,
        "live_sha256": live_sha,
        "live_content": live_content,
        "message": message,
    }


def _write_one(
    *,
    client: anthropic.Anthropic,
    store_id: str,
    step: dict[str, Any],
    base_text: str | None,
    new_text: str | None,
    memory_id: str | None,
) -> dict[str, Any]:
    """One conditional write; returns the written record or raises ConflictError/APIError."""
    memories = client.beta.memory_stores.memories
    path, op = step["path"], step["op"]
    if op == "create":
        created = memories.create(memory_store_id=store_id, path=path, content=new_text or "")
        return {
            "op": op,
            "path": path,
            "memory_id": created.id,
            "content_sha256": created.content_sha256,
        }
    if memory_id is None:
        raise LookupError(path)
    expected = sha256(base_text or "")
    if op == "update":
        updated = memories.update(
            memory_id,
            memory_store_id=store_id,
            content=new_text or "",
            precondition={"type": "content_sha256", "content_sha256": expected},
        )
        return {
            "op": op,
            "path": path,
            "memory_id": memory_id,
            "content_sha256": updated.content_sha256,
        }
    memories.delete(memory_id, memory_store_id=store_id, expected_content_sha256=expected)
    return {"op": op, "path": path, "memory_id": memory_id, "content_sha256": None}


def _start(
    *, proposal_id: int, actor: Actor
) -> tuple[MemoryApplication, Proposal, ManagedAgentLink]:
    with transaction.atomic():
        proposal = (
            Proposal.objects.select_for_update()
            .select_related("agent__workspace", "base_version", "candidate_version")
            .get(pk=proposal_id)
        )
        if proposal.status != Proposal.Status.APPROVED:
            raise ApplyError(
                f"Proposal #{proposal.pk} is {proposal.status}; only approved ones apply."
            )
        link = ManagedAgentLink.objects.filter(agent=proposal.agent).first()
        if link is None:
            raise ApplyError("The proposal's agent is not linked to a Managed Agent.")
        if proposal.memory_applications.filter(status=MemoryApplication.Status.APPLIED).exists():
            raise ApplyError("This proposal was already applied.")
        store_id = proposal.metadata.get("memory_store_id") or link.memory_store_id
        # An attempt whose worker died long ago must not block a new one forever.
        proposal.memory_applications.filter(
            status=MemoryApplication.Status.APPLYING,
            created_at__lt=timezone.now() - STALE_AFTER,
        ).update(
            status=MemoryApplication.Status.FAILED,
            error="interrupted: the worker stopped while applying",
            finished_at=timezone.now(),
        )
        try:
            application = MemoryApplication.objects.create(
                proposal=proposal,
                memory_store_id=store_id,
                planned=plan_for(proposal),
                actor=user_of(actor),
            )
        except IntegrityError as exc:
            raise ApplyError("This proposal is being applied right now.") from exc
        audit.record(
            workspace=proposal.agent.workspace,
            actor=actor,
            action="managed.apply.start",
            target=proposal,
            after={"application": application.pk, "planned": application.planned},
        )
    return application, proposal, link


def apply_approved_memory(*, proposal_id: int, actor: Actor = None) -> MemoryApplication:
    """Write an approved proposal's memory diff (and prompt change) into the live Managed Agent."""
    application, proposal, link = _start(proposal_id=proposal_id, actor=actor)
    store_id = application.memory_store_id
    before = proposal.base_version.memory_documents
    after = proposal.candidate_version.memory_documents
    known = proposal.metadata.get("memory_base") or {}
    written: list[dict[str, Any]] = []
    status, conflict, error = MemoryApplication.Status.APPLIED, {}, ""
    try:
        client = client_for(link, max_retries=2)
        # Conditional writes are never retried blindly: a 409 is an answer, not a glitch.
        writer = client.with_options(max_retries=0)
        live = _live_state(client, store_id)
        for step in application.planned:
            path = step["path"]
            done = _already_live(step, live.get(path), after.get(path))
            if done is not None:
                # Written by an earlier attempt of this proposal (or the same edit made live).
                written.append({**done, "already_live": True})
                _save(application, written=list(written))
                continue
            live_id = live[path][0] if path in live else None
            memory_id = (known.get(path) or {}).get("memory_id") or live_id
            if step["op"] != "create" and memory_id is None:
                status = MemoryApplication.Status.CONFLICT
                conflict = _conflict(
                    client=client,
                    store_id=store_id,
                    path=path,
                    memory_id=None,
                    expected=sha256(before.get(path, "")),
                    message="memory no longer exists live",
                )
                break
            try:
                record = _write_one(
                    client=writer,
                    store_id=store_id,
                    step=step,
                    base_text=before.get(path),
                    new_text=after.get(path),
                    memory_id=memory_id,
                )
            except anthropic.NotFoundError:
                if step["op"] == "delete":
                    continue  # already gone live: the goal of the write holds
                status = MemoryApplication.Status.CONFLICT
                conflict = {
                    "path": path,
                    "memory_id": memory_id,
                    "expected_sha256": sha256(before.get(path, "")),
                    "live_sha256": None,
                    "live_content": None,
                    "message": "memory was deleted live since the proposal",
                }
                break
            except anthropic.ConflictError as exc:
                if getattr(exc, "type", None) not in PRECONDITION_ERRORS:
                    raise
                found = _conflict(
                    client=client,
                    store_id=store_id,
                    path=path,
                    memory_id=None if step["op"] == "create" else memory_id,
                    expected=None if step["op"] == "create" else sha256(before.get(path, "")),
                    message=str(getattr(exc, "message", exc)),
                )
                if found["live_content"] is not None and found["live_content"] == after.get(path):
                    # Another writer got there first with the same text: the goal holds.
                    written.append(
                        {
                            "op": step["op"],
                            "path": path,
                            "memory_id": found["memory_id"],
                            "content_sha256": found["live_sha256"],
                            "already_live": True,
                        }
                    )
                    _save(application, written=list(written))
                    continue
                status, conflict = MemoryApplication.Status.CONFLICT, found
                break
            written.append(record)
            _save(application, written=list(written))
        if status == MemoryApplication.Status.APPLIED:
            _apply_system_prompt(
                client=writer, link=link, proposal=proposal, application=application
            )
            if application.conflict:
                status, conflict = MemoryApplication.Status.CONFLICT, application.conflict
    except (anthropic.APIError, ManagedNotConfigured) as exc:
        status, error = (
            MemoryApplication.Status.FAILED,
            f"{type(exc).__name__}: {getattr(exc, 'message', exc)}",
        )
    except Exception as exc:
        _finish(
            application=application,
            proposal=proposal,
            actor=actor,
            status=MemoryApplication.Status.FAILED,
            written=written,
            conflict={},
            error=f"{type(exc).__name__}: {exc}",
        )
        raise
    return _finish(
        application=application,
        proposal=proposal,
        actor=actor,
        status=status,
        written=written,
        conflict=conflict,
        error=error,
    )


def _apply_system_prompt(
    *,
    client: anthropic.Anthropic,
    link: ManagedAgentLink,
    proposal: Proposal,
    application: MemoryApplication,
) -> None:
    old, new = proposal.base_version.system_prompt, proposal.candidate_version.system_prompt
    if old == new:
        return
    remote = client.beta.agents.retrieve(link.managed_agent_id)
    if (remote.system or "") == new:
        # An earlier attempt already wrote it (the worker stopped before recording it).
        _save(application, agent_version_before=remote.version, agent_version_after=remote.version)
        ManagedAgentLink.objects.filter(pk=link.pk).update(managed_agent_version=remote.version)
        return
    if (remote.system or "") != old:
        _save(
            application,
            conflict={
                "path": "system_prompt",
                "memory_id": None,
                "expected_sha256": sha256(old),
                "live_sha256": sha256(remote.system or ""),
                "live_content": remote.system or "",
                "message": "the Managed Agent's system prompt changed since the proposal",
            },
        )
        return
    try:
        updated = client.beta.agents.update(
            link.managed_agent_id, version=remote.version, system=new
        )
    except anthropic.ConflictError as exc:
        _save(
            application,
            conflict={
                "path": "system_prompt",
                "memory_id": None,
                "expected_sha256": sha256(old),
                "live_sha256": None,
                "live_content": None,
                "message": str(getattr(exc, "message", exc)),
            },
        )
        return
    _save(application, agent_version_before=remote.version, agent_version_after=updated.version)
    ManagedAgentLink.objects.filter(pk=link.pk).update(managed_agent_version=updated.version)


def _finish(
    *,
    application: MemoryApplication,
    proposal: Proposal,
    actor: Actor,
    status: str,
    written: list[dict[str, Any]],
    conflict: dict[str, Any],
    error: str,
) -> MemoryApplication:
    with transaction.atomic():
        application = MemoryApplication.objects.select_for_update().get(pk=application.pk)
        application.status = status
        application.written = written
        application.conflict = conflict
        application.error = error
        application.finished_at = timezone.now()
        application.save(update_fields=["status", "written", "conflict", "error", "finished_at"])
        if status == MemoryApplication.Status.APPLIED:
            # A Managed Agent reads one memory store: the change is live for all traffic at once,
            # so applying it is the whole rollout.
            set_stable_version(
                agent=proposal.agent, version=proposal.candidate_version, actor=actor
            )
            for step in (Proposal.Status.ROLLING_OUT, Proposal.Status.ROLLED_OUT):
                transition_proposal(
                    proposal_id=proposal.pk, to=step, actor=actor, action=f"proposal.{step}"
                )
        audit.record(
            workspace=proposal.agent.workspace,
            actor=actor,
            action=f"managed.apply.{status}",
            target=proposal,
            after={
                "application": application.pk,
                "written": [f"{w['op']} {w['path']}" for w in written],
                "conflict_path": conflict.get("path"),
                "agent_version": application.agent_version_after,
                "error": error[:500],
            },
        )
    return application
