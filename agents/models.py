"""Capture store: workspaces, members, API keys, agents, their config versions, runs, feedback."""

import hashlib
import json
import secrets
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from agents.targets import TargetRefused, resolve_target


class Workspace(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        REVIEWER = "reviewer", "Reviewer"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "workspace"], name="membership_unique_user_workspace"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"

    @property
    def can_review(self) -> bool:
        return self.role in (self.Role.REVIEWER, self.Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN


def hash_api_key(raw_key: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough (as GitHub tokens); no salt needed.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(models.Model):
    """A workspace-scoped bearer key. Only its hash and a short visible prefix are stored."""

    PREFIX = "rv_"

    class Scope(models.TextChoices):
        # What a production agent needs: send runs, feedback and traces, fetch its config.
        INGEST = "ingest", "ingest (runs, feedback, traces, config)"
        READ = "read", "read (everything, no writes)"
        ADMIN = "admin", "admin (everything, incl. approvals, rollouts, memory writes)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.INGEST)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def generate_raw_key(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def grants(self, scope: str) -> bool:
        """An admin key may do everything; ingest and read keys only their own scope."""
        return self.scope == self.Scope.ADMIN or self.scope == scope


def new_routing_salt() -> str:
    return secrets.token_hex(16)


def environment_url_problem(url: str) -> str:
    """Why a sandbox environment URL may not be used ("" when it may), checked like webhooks."""
    try:
        resolve_target(
            url,
            what="environment",
            allowed_hosts=settings.REVERIE_ENVIRONMENT_ALLOWED_HOSTS,
            hint="add the host to REVERIE_ENVIRONMENT_ALLOWED_HOSTS to allow it",
        )
    except TargetRefused as exc:
        return str(exc)
    except ConnectionError as exc:
        return f"the host does not resolve ({exc})"
    return ""


class Agent(models.Model):
    class Frequency(models.TextChoices):
        HOURLY = "hourly", "Hourly"
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="agents")
    slug = models.SlugField(max_length=80)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    model = models.CharField(max_length=100, default="claude-sonnet-5-5")

    # Dreaming
    dreaming_enabled = models.BooleanField(default=True)
    dream_frequency = models.CharField(
        max_length=10, choices=Frequency.choices, default=Frequency.DAILY
    )
    dream_window_start = models.TimeField(null=True, blank=True, help_text="UTC; empty = any time")
    dream_window_end = models.TimeField(
        null=True, blank=True, help_text="UTC; may wrap past midnight"
    )
    failure_threshold = models.PositiveIntegerField(
        default=20, help_text="New failures that trigger a cycle; 0 = off"
    )
    cycle_token_budget = models.PositiveBigIntegerField(default=2_000_000)
    monthly_token_budget = models.PositiveBigIntegerField(default=50_000_000)
    replay_concurrency = models.PositiveIntegerField(default=8)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    protected_sections = models.JSONField(
        default=list, blank=True, help_text="Headings or literal texts that dreams may not change"
    )
    sandbox_tools = models.JSONField(
        default=dict,
        blank=True,
        help_text="tool name → dotted path of a read-only Python callable used in replays",
    )
    write_tools = models.JSONField(
        default=list, blank=True, help_text="names of tools with side effects"
    )
    pure_tools = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "names of pure tools (a calculator, a think tool): in replays their sandbox callable "
            "answers whenever the arguments differ from the recording"
        ),
    )
    simulated_user = models.BooleanField(
        default=True,
        help_text=(
            "when a replay leaves the recording before a later user turn, a simulated user "
            "continues the conversation (off: the replay stops there)"
        ),
    )
    environment_url = models.URLField(
        max_length=500,
        blank=True,
        help_text=(
            "sandbox environment: an MCP server (streamable HTTP) on staging that executes every "
            "tool call of a replay; empty = tools answer from the recording"
        ),
    )

    # Notifications
    webhook_url = models.URLField(blank=True)
    webhook_secret = models.CharField(max_length=200, blank=True)

    # Routing (rollouts write these through services)
    is_paused = models.BooleanField(
        default=False, help_text="Kill switch: no dreaming, config endpoint answers 423"
    )
    stable_version = models.ForeignKey(
        "ConfigVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    canary_version = models.ForeignKey(
        "ConfigVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    canary_percent = models.PositiveSmallIntegerField(default=0)
    routing_salt = models.CharField(max_length=32, default=new_routing_salt, editable=False)
    rollout_stages = models.JSONField(
        default=list, blank=True, help_text="Canary percents, e.g. [5, 25, 100]; empty = default"
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "slug"], name="agent_unique_slug_per_workspace"
            )
        ]

    def __str__(self) -> str:
        return self.name

    # Bounds of the settings that later code relies on (replays fan out, cycles spend tokens).
    MAX_REPLAY_CONCURRENCY = 64
    MAX_TOKEN_BUDGET = 10**12
    MAX_LIST_ITEMS = 200
    MAX_ITEM_CHARS = 500

    def clean(self) -> None:
        """Refuse settings that would fail later (in a cycle, a replay or a rollout), per field.

        Called by full_clean(): the admin form and `update_agent_settings` / `create_agent`."""
        from django.core.exceptions import ValidationError

        errors: dict[str, str] = {}
        for field in ("protected_sections", "write_tools", "pure_tools"):
            value = getattr(self, field)
            if (
                not isinstance(value, list)
                or len(value) > self.MAX_LIST_ITEMS
                or not all(isinstance(v, str) and 0 < len(v) <= self.MAX_ITEM_CHARS for v in value)
            ):
                errors[field] = (
                    f"must be a list of at most {self.MAX_LIST_ITEMS} non-empty strings "
                    f"of at most {self.MAX_ITEM_CHARS} characters"
                )
        if not isinstance(self.sandbox_tools, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v
            for k, v in self.sandbox_tools.items()
        ):
            errors["sandbox_tools"] = "must map tool names to dotted paths of Python callables"
        if "pure_tools" not in errors and "write_tools" not in errors:
            both = sorted(set(self.pure_tools) & set(self.write_tools))
            if both:
                errors["pure_tools"] = f"a pure tool cannot also be a write tool: {', '.join(both)}"
        stages = self.rollout_stages
        if not isinstance(stages, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 100 for p in stages
        ):
            errors["rollout_stages"] = "must be a list of whole percents from 1 to 100"
        elif stages and (stages != sorted(set(stages)) or stages[-1] != 100):
            errors["rollout_stages"] = "must rise strictly and end at 100, e.g. [5, 25, 100]"
        if not 1 <= (self.replay_concurrency or 0) <= self.MAX_REPLAY_CONCURRENCY:
            errors["replay_concurrency"] = f"must be from 1 to {self.MAX_REPLAY_CONCURRENCY}"
        if self.required_approvals not in (1, 2):
            errors["required_approvals"] = "must be 1 or 2"
        for field in ("cycle_token_budget", "monthly_token_budget"):
            if not 0 <= (getattr(self, field) or 0) <= self.MAX_TOKEN_BUDGET:
                errors[field] = f"must be from 0 to {self.MAX_TOKEN_BUDGET:,} tokens"
        if (self.dream_window_start is None) != (self.dream_window_end is None):
            field = "dream_window_end" if self.dream_window_end is None else "dream_window_start"
            errors[field] = "set both ends of the dream window, or neither"
        if not (self.model or "").strip():
            errors["model"] = "must name a model"
        if self.environment_url and "environment_url" not in errors:
            problem = environment_url_problem(self.environment_url)
            if problem:
                errors["environment_url"] = problem
        if errors:
            raise ValidationError(errors)


# The document name of the system prompt (memory documents are named by their paths).
SYSTEM_PROMPT_DOCUMENT = "system_prompt"


class ConfigVersion(models.Model):
    """An immutable snapshot of what the agent runs with. A change is a new version."""

    class Source(models.TextChoices):
        HUMAN = "human", "Human"
        DREAM = "dream", "Dream"
        IMPORT = "import", "Import"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    system_prompt = models.TextField(blank=True)
    memory_documents = models.JSONField(default=dict, blank=True, help_text="path → text")
    tools = models.JSONField(default=list, blank=True)
    model = models.CharField(max_length=100)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.HUMAN)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    content_hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "number"], name="configversion_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Immutability is an invariant of the data, so it lives with the data.
        if self.pk is not None and not self._state.adding:
            raise ValidationError("Config versions are immutable; create a new version instead.")
        self.content_hash = self.compute_hash(
            system_prompt=self.system_prompt,
            memory_documents=self.memory_documents,
            tools=self.tools,
            model=self.model,
        )
        super().save(*args, **kwargs)

    @property
    def documents(self) -> dict[str, str]:
        """The version's documents by name, as guards, drafts, rebases and diffs see them: the
        system prompt under SYSTEM_PROMPT_DOCUMENT, then the memory documents by path."""
        return {SYSTEM_PROMPT_DOCUMENT: self.system_prompt, **(self.memory_documents or {})}

    @staticmethod
    def compute_hash(
        *, system_prompt: str, memory_documents: dict[str, str], tools: list[Any], model: str
    ) -> str:
        payload = json.dumps(
            {"system": system_prompt, "memory": memory_documents, "tools": tools, "model": model},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


class Run(models.Model):
    """One recorded agent run: a replayable artifact in Anthropic Messages form."""

    class Status(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        ERROR = "error", "Error"
        UNKNOWN = "unknown", "Unknown"

    class GradedOn(models.TextChoices):
        """What the recorded outcome depended on: a replay inherits it only if that is unchanged."""

        ACTIONS = "actions", "Tool calls"
        ANSWER = "answer", "Final answer"
        BOTH = "both", "Tool calls and final answer"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="runs")
    config_version = models.ForeignKey(
        ConfigVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    external_id = models.CharField(max_length=255)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UNKNOWN)
    score = models.FloatField(null=True, blank=True)
    outcome_reason = models.TextField(blank=True, help_text="Grader explanation or error type")
    model = models.CharField(max_length=100, blank=True)
    system = models.TextField(blank=True)
    tools = models.JSONField(default=list, blank=True)
    messages = models.JSONField(default=list)
    step_count = models.PositiveIntegerField(default=0, help_text="assistant turns")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    expectations = models.JSONField(
        default=dict,
        blank=True,
        help_text="expected_answer_pattern, expected_tools, forbidden_tools, rubric",
    )
    source_format = models.CharField(max_length=24, default="anthropic")
    graded_on = models.CharField(
        max_length=8,
        choices=GradedOn.choices,
        default=GradedOn.BOTH,
        help_text="what the recorded outcome was graded on",
    )
    user_brief = models.TextField(
        blank=True, help_text="what the user wanted (a ticket summary, a task's instruction)"
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "external_id"], name="run_unique_external_id")
        ]
        indexes = [
            models.Index(fields=["agent", "status", "-started_at"], name="run_agent_status_time"),
            models.Index(fields=["agent", "-started_at"], name="run_agent_time"),
            models.Index(
                fields=["agent", "config_version", "-started_at"], name="run_agent_version_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug}:{self.external_id}"

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    @property
    def is_failure(self) -> bool:
        return self.status in (self.Status.FAILURE, self.Status.ERROR)

    def negative_comments(self) -> list[str]:
        """Negative feedback comments, newest first, blank ones left out. Reads a prefetched
        `negative_feedback` (to_attr) or `feedback` when the caller prefetched one."""
        feedback = getattr(self, "negative_feedback", None)
        if feedback is None:
            feedback = [f for f in self.feedback.all() if f.rating == Feedback.Rating.NEGATIVE]
        newest_first = sorted(feedback, key=lambda f: f.created_at, reverse=True)
        return [f.comment.strip() for f in newest_first if f.comment.strip()]

    def negative_comment(self) -> str:
        """The latest negative feedback comment, or ""."""
        comments = self.negative_comments()
        return comments[0] if comments else ""


class RunSet(models.Model):
    """A named set of an agent's runs ("golden regressions", a customer's cases).

    Members are kept by the run's stable identity, its `external_id`, so a set survives runs
    being deleted and ingested again. A pinned set is replayed in every experiment.
    """

    class Origin(models.TextChoices):
        FILTER = "filter", "Runs list filter"
        PROPOSAL = "proposal", "A proposal's replays"
        API = "api", "API"

    MAX_RUNS = 1000

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="run_sets")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    pinned = models.BooleanField(
        default=False, help_text="replayed in every experiment beside the regression sample"
    )
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.API)
    origin_detail = models.JSONField(
        default=dict, blank=True, help_text="the filter or the proposal it was made from"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["agent", "name"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "name"], name="runset_unique_name_per_agent")
        ]

    def __str__(self) -> str:
        return f"{self.agent.slug}: {self.name}"

    def runs(self) -> "models.QuerySet[Run]":
        """The member runs present now (a member whose run is not stored yet is skipped)."""
        return Run.objects.filter(
            agent_id=self.agent_id,
            external_id__in=self.members.values("external_id"),
        )


class RunSetMember(models.Model):
    run_set = models.ForeignKey(RunSet, on_delete=models.CASCADE, related_name="members")
    external_id = models.CharField(max_length=255, help_text="the run's stable identity")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_set", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run_set", "external_id"], name="runsetmember_unique_run"
            )
        ]

    def __str__(self) -> str:
        return f"{self.external_id} in set {self.run_set_id}"


class Feedback(models.Model):
    class Rating(models.TextChoices):
        POSITIVE = "positive", "Positive"
        NEGATIVE = "negative", "Negative"

    class Source(models.TextChoices):
        HUMAN = "human", "Human"
        API = "api", "API"
        INFERRED = "inferred", "Inferred"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="feedback")
    rating = models.CharField(max_length=10, choices=Rating.choices)
    score = models.FloatField(null=True, blank=True)
    comment = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.API)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "feedback"
        indexes = [models.Index(fields=["run", "rating"], name="feedback_run_rating")]

    def __str__(self) -> str:
        return f"{self.rating} on {self.run_id}"


class AuditEvent(models.Model):
    """Append-only log of who changed what. Lives in the lowest app so every app can write it."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=200, blank=True, help_text="user, API key or system")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_label = models.CharField(max_length=300, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="audit_workspace_time")]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValidationError("The audit log is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise ValidationError("The audit log is append-only.")
