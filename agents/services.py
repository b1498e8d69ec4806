"""Everything in `agents` that writes, apart from bulk run capture (agents/ingest.py)."""

from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents import audit
from agents.actors import Actor, user_of
from agents.models import Agent, ApiKey, ConfigVersion, Feedback, Run, Workspace, hash_api_key
from agents.transcripts import count_steps

AGENT_SETTING_FIELDS = (
    "name",
    "description",
    "model",
    "dreaming_enabled",
    "dream_frequency",
    "dream_window_start",
    "dream_window_end",
    "failure_threshold",
    "cycle_token_budget",
    "monthly_token_budget",
    "replay_concurrency",
    "required_approvals",
    "protected_sections",
    "sandbox_tools",
    "write_tools",
    "pure_tools",
    "simulated_user",
    "environment_url",
    "webhook_url",
    "webhook_secret",
    "is_paused",
    "rollout_stages",
)
SECRET_FIELDS = {"webhook_secret"}


def _settings_snapshot(agent: Agent, fields: list[str]) -> dict[str, Any]:
    out = {}
    for field in fields:
        value = getattr(agent, field)
        if field in SECRET_FIELDS:
            value = "•••" if value else ""
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[field] = value
    return out


def create_api_key(
    *, workspace: Workspace, name: str, created_by: Actor = None, scope: str = ApiKey.Scope.INGEST
) -> tuple[ApiKey, str]:
    """Create a key; the raw key is returned once and only its hash is kept."""
    raw = ApiKey.generate_raw_key()
    with transaction.atomic():
        key = ApiKey.objects.create(
            workspace=workspace,
            name=name,
            prefix=raw[:10],
            key_hash=hash_api_key(raw),
            created_by=user_of(created_by),
            scope=scope,
        )
        audit.record(
            workspace=workspace,
            actor=created_by,
            action="api_key.create",
            target=key,
            after={"name": name, "prefix": key.prefix},
        )
    return key, raw


def revoke_api_key(*, key: ApiKey, actor: Actor = None) -> ApiKey:
    with transaction.atomic():
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            audit.record(workspace=key.workspace, actor=actor, action="api_key.revoke", target=key)
    return key


def create_agent(*, workspace: Workspace, actor: Actor = None, **fields: Any) -> Agent:
    with transaction.atomic():
        agent = Agent(workspace=workspace, **fields)
        agent.full_clean(exclude=["stable_version", "canary_version"], validate_unique=False)
        agent.save()
        audit.record(
            workspace=workspace,
            actor=actor,
            action="agent.create",
            target=agent,
            after={"slug": agent.slug},
        )
    return agent


def update_agent_settings(*, agent: Agent, actor: Actor = None, changes: dict[str, Any]) -> Agent:
    """Change agent settings (not routing state); the audit row holds before and after."""
    unknown = set(changes) - set(AGENT_SETTING_FIELDS)
    if unknown:
        raise ValueError(f"not agent settings: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        fields = [f for f, v in changes.items() if getattr(agent, f) != v]
        if not fields:
            return agent
        before = _settings_snapshot(agent, fields)
        for field in fields:
            setattr(agent, field, changes[field])
        agent.full_clean(exclude=["stable_version", "canary_version"])
        agent.save(update_fields=[*fields, "updated_at"])
        audit.record(
            workspace=agent.workspace,
            actor=actor,
            action="agent.settings",
            target=agent,
            before=before,
            after=_settings_snapshot(agent, fields),
        )
    return agent


def create_config_version(
    *,
    agent: Agent,
    system_prompt: str,
    memory_documents: dict[str, str] | None = None,
    tools: list[dict[str, Any]] | None = None,
    model: str = "",
    parent: ConfigVersion | None = None,
    source: str = ConfigVersion.Source.HUMAN,
    author: Actor = None,
    note: str = "",
    actor: Actor = None,
) -> ConfigVersion:
    """Append a new immutable version with the next number (the agent row serialises numbering)."""
    with transaction.atomic():
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        number = (
            ConfigVersion.objects.filter(agent=agent).aggregate(n=Max("number"))["n"] or 0
        ) + 1
        version = ConfigVersion.objects.create(
            agent=agent,
            number=number,
            system_prompt=system_prompt,
            memory_documents=memory_documents or {},
            tools=tools or [],
            model=model or agent.model,
            parent=parent,
            source=source,
            author=user_of(author),
            note=note,
        )
        audit.record(
            workspace=agent.workspace,
            actor=actor if actor is not None else author,
            action="config_version.create",
            target=version,
            after={"number": number, "source": source},
        )
    return version


def set_stable_version(*, agent: Agent, version: ConfigVersion, actor: Actor = None) -> Agent:
    if version.agent_id != agent.pk:
        raise ValueError("version belongs to another agent")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent.pk)
        before = {"stable_version": agent.stable_version_id}
        agent.stable_version = version
        agent.save(update_fields=["stable_version", "updated_at"])
        audit.record(
            workspace=agent.workspace,
            actor=actor,
            action="agent.set_stable",
            target=agent,
            before=before,
            after={"stable_version": version.pk, "number": version.number},
        )
    return agent


def add_feedback(
    *,
    run: Run,
    rating: str,
    score: float | None = None,
    comment: str = "",
    source: str = Feedback.Source.API,
    author: Actor = None,
) -> Feedback:
    return Feedback.objects.create(
        run=run,
        rating=rating,
        score=score,
        comment=comment,
        source=source,
        author=user_of(author),
    )


def recount_steps(*, run_id: int) -> int | None:
    """Re-derive a run's assistant-turn count from its messages; None when the run is gone."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return None
        steps = count_steps(run.messages)
        if run.step_count != steps:
            run.step_count = steps
            run.save(update_fields=["step_count"])
    return steps
