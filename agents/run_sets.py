"""Run sets: named sets of an agent's runs, made from the runs list's filters, from a
proposal's replays (dreams/run_sets.py) or by API, and kept by the runs' external ids.

Services (create, change, add/remove members, delete) write the audit log in the change's
transaction; selectors resolve members to the runs stored now.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.http import Http404

from agents import audit
from agents.access import Principal
from agents.actors import Actor, user_of
from agents.models import Agent, Run, RunSet, RunSetMember
from agents.selectors import runs_for


class RunSetInvalid(Exception):
    """The run set cannot be made or changed as asked; `fields` names what is wrong."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v[0]}" for k, v in fields.items()))


# -- selectors -----------------------------------------------------------------------------


def run_sets_for(agent: Agent) -> QuerySet[RunSet]:
    """The agent's run sets with their member counts."""
    return (
        RunSet.objects.filter(agent=agent)
        .select_related("agent", "created_by")
        .annotate(member_count=Count("members"))
        .order_by("name", "id")
    )


def get_run_set_for(principal: Principal, agent: Agent, pk: int) -> RunSet:
    """The agent's run set, scoped to the caller's workspace (404 otherwise)."""
    run_set = run_sets_for(agent).filter(pk=pk, agent__workspace=principal.workspace).first()
    if run_set is None:
        raise Http404("No such run set for this agent.")
    return run_set


def pinned_run_sets(agent: Agent) -> list[tuple[RunSet, list[Run]]]:
    """Each pinned set of the agent with its runs stored now (ids only; one query per set)."""
    sets = RunSet.objects.filter(agent=agent, pinned=True).order_by("name", "id")
    return [(s, list(s.runs().only("id", "external_id").order_by("id"))) for s in sets]


def external_ids_of_runs(*, agent: Agent, run_ids: Iterable[int]) -> list[str]:
    """The external ids of run ids of this agent; an id of another agent is a 400."""
    wanted = list(dict.fromkeys(run_ids))
    found = dict(Run.objects.filter(agent=agent, pk__in=wanted).values_list("pk", "external_id"))
    missing = [str(pk) for pk in wanted if pk not in found]
    if missing:
        raise RunSetInvalid({"run_ids": [f"not runs of this agent: {', '.join(missing[:10])}"]})
    return [found[pk] for pk in wanted]


def external_ids_matching(
    *,
    agent: Agent,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    negative_feedback: bool | None = None,
    config_version: int | None = None,
) -> list[str]:
    """The newest runs matching the runs list's filters, at most RunSet.MAX_RUNS."""
    runs = runs_for(
        agent.workspace,
        agent_slug=agent.slug,
        status=status,
        since=since,
        until=until,
        negative_feedback=negative_feedback,
        config_version=config_version,
    )
    return list(
        runs.order_by("-started_at", "-id").values_list("external_id", flat=True)[: RunSet.MAX_RUNS]
    )


# -- services ------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise RunSetInvalid({"name": ["give the run set a name"]})
    if len(name) > 100:
        raise RunSetInvalid({"name": ["at most 100 characters"]})
    return name


def _check_size(run_set: RunSet, adding: int) -> None:
    if run_set.members.count() + adding > RunSet.MAX_RUNS:
        raise RunSetInvalid({"runs": [f"a run set holds at most {RunSet.MAX_RUNS} runs"]})


def create_run_set(
    *,
    agent: Agent,
    actor: Actor,
    name: str,
    external_ids: Iterable[str] = (),
    description: str = "",
    pinned: bool = False,
    origin: str = RunSet.Origin.API,
    origin_detail: dict[str, Any] | None = None,
) -> RunSet:
    """Create a named set of the agent's runs (by external id); a taken name is a 400."""
    name = _check_name(name)
    members = list(dict.fromkeys(e for e in external_ids if e))
    if len(members) > RunSet.MAX_RUNS:
        raise RunSetInvalid({"runs": [f"a run set holds at most {RunSet.MAX_RUNS} runs"]})
    try:
        with transaction.atomic():
            run_set = RunSet.objects.create(
                agent=agent,
                name=name,
                description=description,
                pinned=pinned,
                origin=origin,
                origin_detail=origin_detail or {},
                created_by=user_of(actor),
            )
            RunSetMember.objects.bulk_create(
                [RunSetMember(run_set=run_set, external_id=e) for e in members]
            )
            audit.record(
                workspace=agent.workspace,
                actor=actor,
                action="run_set.create",
                target=run_set,
                after={"runs": len(members), "pinned": pinned, "origin": origin},
            )
    except IntegrityError:
        raise RunSetInvalid({"name": ["this agent already has a run set with this name"]}) from None
    run_set.member_count = len(members)  # type: ignore[attr-defined]
    return run_set


def update_run_set(*, run_set: RunSet, actor: Actor, changes: dict[str, Any]) -> RunSet:
    """Rename, describe, pin or unpin a run set."""
    fields: list[str] = [f for f in ("name", "description", "pinned") if f in changes]
    if "name" in changes:
        changes["name"] = _check_name(changes["name"])
    before = {f: getattr(run_set, f) for f in fields}
    for field in fields:
        setattr(run_set, field, changes[field])
    try:
        with transaction.atomic():
            run_set.save(update_fields=[*fields, "updated_at"])
            audit.record(
                workspace=run_set.agent.workspace,
                actor=actor,
                action="run_set.pin" if fields == ["pinned"] else "run_set.update",
                target=run_set,
                before=before,
                after={f: changes[f] for f in fields},
            )
    except IntegrityError:
        raise RunSetInvalid({"name": ["this agent already has a run set with this name"]}) from None
    return run_set


def change_members(
    *, run_set: RunSet, actor: Actor, add: Iterable[str] = (), remove: Iterable[str] = ()
) -> RunSet:
    """Add and remove members by external id (adding one twice keeps one)."""
    adding = [e for e in dict.fromkeys(add) if e]
    removing = list(dict.fromkeys(remove))
    with transaction.atomic():
        RunSet.objects.select_for_update().filter(pk=run_set.pk).first()  # serialise changes
        present = set(
            run_set.members.filter(external_id__in=adding).values_list("external_id", flat=True)
        )
        new = [e for e in adding if e not in present and e not in removing]
        _check_size(run_set, len(new))
        RunSetMember.objects.bulk_create(
            [RunSetMember(run_set=run_set, external_id=e) for e in new], ignore_conflicts=True
        )
        removed, _ = run_set.members.filter(external_id__in=removing).delete()
        audit.record(
            workspace=run_set.agent.workspace,
            actor=actor,
            action="run_set.members",
            target=run_set,
            after={"added": len(new), "removed": removed},
        )
    return run_set


def delete_run_set(*, run_set: RunSet, actor: Actor) -> None:
    """Delete a run set; experiments that replayed it keep their own record of its runs."""
    with transaction.atomic():
        audit.record(
            workspace=run_set.agent.workspace,
            actor=actor,
            action="run_set.delete",
            target=run_set,
            before={"name": run_set.name, "pinned": run_set.pinned},
        )
        run_set.delete()
