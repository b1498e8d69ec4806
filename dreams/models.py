"""Dreaming data: cycles, failure patterns, proposals, experiments, replays, model calls.

States follow DESIGN.md; transitions happen only in services (dreams/proposals.py,
dreams/cycles.py), each in one transaction with the row locked.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from agents.models import Agent, ConfigVersion, Run


class DreamCycle(models.Model):
    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        THRESHOLD = "threshold", "Failure threshold"
        MANUAL = "manual", "Manual"
        API = "api", "API"
        HOSTED = "hosted", "Anthropic Dreams API"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="dream_cycles")
    trigger = models.CharField(max_length=12, choices=Trigger.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(
        max_length=20, blank=True, help_text="select, group, diagnose, draft, guard, replay, report"
    )
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    runs = models.ManyToManyField(
        Run, blank=True, related_name="dream_cycles", help_text="failures this cycle studied"
    )
    tokens_used = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    report = models.JSONField(default=dict, blank=True)
    external_id = models.CharField(
        max_length=100, blank=True, help_text="hosted dream id, when the Dreams API did the work"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent"],
                condition=Q(status__in=["queued", "running"]),
                name="dreamcycle_one_active_per_agent",
            ),
        ]
        indexes = [models.Index(fields=["agent", "-created_at"], name="dreamcycle_agent_time")]

    def __str__(self) -> str:
        return f"cycle {self.pk} of {self.agent.slug}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class FailurePattern(models.Model):
    cycle = models.ForeignKey(DreamCycle, on_delete=models.CASCADE, related_name="patterns")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="failure_patterns")
    signature = models.CharField(max_length=200)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    grouping_reason = models.TextField(blank=True, help_text="why these runs are grouped")
    severity = models.CharField(max_length=10, default="medium")
    count = models.PositiveIntegerField(default=0)
    runs = models.ManyToManyField(Run, through="PatternRun", related_name="failure_patterns")

    class Meta:
        ordering = ["-count", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["cycle", "signature"], name="pattern_unique_signature_per_cycle"
            )
        ]

    def __str__(self) -> str:
        return self.title


class PatternRun(models.Model):
    class Split(models.TextChoices):
        DRAFTING = "drafting", "Drafting"
        HELDOUT = "heldout", "Held out"

    pattern = models.ForeignKey(
        FailurePattern, on_delete=models.CASCADE, related_name="pattern_runs"
    )
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="pattern_memberships")
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.DRAFTING)
    divergence_step = models.PositiveIntegerField(null=True, blank=True)
    divergence_explanation = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pattern", "run"], name="patternrun_unique")]

    def __str__(self) -> str:
        return f"run {self.run_id} in pattern {self.pattern_id} ({self.split})"


class Proposal(models.Model):
    class Status(models.TextChoices):
        DRAFTED = "drafted", "Drafted"
        REPLAYING = "replaying", "Replaying"
        READY = "ready", "Ready for review"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        ROLLING_OUT = "rolling_out", "Rolling out"
        ROLLED_OUT = "rolled_out", "Rolled out"
        ROLLED_BACK = "rolled_back", "Rolled back"
        HALTED = "halted", "Rollout halted"
        SUPERSEDED = "superseded", "Superseded"

    class Source(models.TextChoices):
        DREAM = "dream", "Dream"
        HOSTED_DREAM = "hosted_dream", "Anthropic Dreams API"
        HUMAN = "human", "Person"

    OPEN = (
        Status.DRAFTED,
        Status.REPLAYING,
        Status.READY,
        Status.CHANGES_REQUESTED,
        Status.APPROVED,
    )

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="proposals")
    cycle = models.ForeignKey(
        DreamCycle, null=True, blank=True, on_delete=models.SET_NULL, related_name="proposals"
    )
    patterns = models.ManyToManyField(FailurePattern, blank=True, related_name="proposals")
    base_version = models.ForeignKey(ConfigVersion, on_delete=models.PROTECT, related_name="+")
    candidate_version = models.ForeignKey(ConfigVersion, on_delete=models.PROTECT, related_name="+")
    revision_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="revisions"
    )
    revision = models.PositiveIntegerField(default=1)
    title = models.CharField(max_length=300)
    rationale = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFTED)
    source = models.CharField(max_length=14, choices=Source.choices, default=Source.DREAM)
    flags = models.JSONField(
        default=list,
        blank=True,
        help_text="[{code, message}]: protected_section, possible_injection, growth, …",
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="authored_proposals",
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_proposals",
    )
    expected_value = models.FloatField(
        default=0, help_text="queue order: fixes − regressions weighted by confidence"
    )
    lock_version = models.PositiveIntegerField(
        default=0, help_text="bumped by every state change; forms send it back"
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["agent", "status"], name="proposal_agent_status"),
            models.Index(fields=["status", "-expected_value"], name="proposal_status_value"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def is_flagged(self) -> bool:
        return bool(self.flags)

    @property
    def latest_experiment(self) -> "Experiment | None":
        return self.experiments.order_by("-id").first()


class Experiment(models.Model):
    """One candidate config against the stable one on target and regression runs."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        STOPPED_EARLY = "stopped_early", "Stopped early"
        FAILED = "failed", "Failed"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="experiments")
    proposal = models.ForeignKey(
        Proposal, null=True, blank=True, on_delete=models.CASCADE, related_name="experiments"
    )
    baseline_version = models.ForeignKey(ConfigVersion, on_delete=models.PROTECT, related_name="+")
    candidate_version = models.ForeignKey(ConfigVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=14, choices=Status.choices, default=Status.PENDING)
    replicates = models.PositiveSmallIntegerField(default=1)
    target_runs = models.ManyToManyField(Run, blank=True, related_name="+")
    regression_runs = models.ManyToManyField(Run, blank=True, related_name="+")
    pinned_runs = models.ManyToManyField(
        Run, blank=True, related_name="+", help_text="runs of the agent's pinned run sets"
    )
    run_sets = models.JSONField(
        default=list,
        blank=True,
        help_text="[{id, name, run_ids}]: the pinned run sets as they were when it started",
    )
    stats = models.JSONField(default=dict, blank=True)
    fidelity = models.FloatField(null=True, blank=True)
    harness_check = models.JSONField(
        default=dict,
        blank=True,
        help_text="the recorded model's replay of the baseline runs (dreams/harness.py)",
    )
    stop_reason = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"experiment {self.pk}"


class Replay(models.Model):
    class Arm(models.TextChoices):
        BASELINE = "baseline", "Baseline"
        CANDIDATE = "candidate", "Candidate"

    class RunSet(models.TextChoices):
        TARGET = "target", "Target"
        REGRESSION = "regression", "Regression"
        PINNED = "pinned", "Pinned run set"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Verdict(models.TextChoices):
        PASS = "pass", "Pass"
        FAIL = "fail", "Fail"
        UNVERIFIABLE = "unverifiable", "Unverifiable"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="replays")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="replays")
    arm = models.CharField(max_length=10, choices=Arm.choices)
    replicate = models.PositiveSmallIntegerField(default=0)
    run_set = models.CharField(max_length=10, choices=RunSet.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    verdict = models.CharField(max_length=12, choices=Verdict.choices, blank=True)
    grader = models.CharField(max_length=20, blank=True, help_text="expectations, rubric, feedback")
    reason = models.TextField(blank=True)
    messages = models.JSONField(default=list, blank=True)
    divergence_step = models.PositiveIntegerField(null=True, blank=True)
    divergence_kind = models.CharField(
        max_length=12, blank=True, help_text="tool, arguments, extra, missing, text"
    )
    off_recording = models.BooleanField(default=False)
    unverifiable = models.BooleanField(default=False)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    stop_reason = models.CharField(
        max_length=24,
        blank=True,
        help_text=(
            "end_turn, step_limit, diverged_before_turn, unverifiable_write, max_tokens, "
            "refusal, error"
        ),
    )
    steps = models.PositiveIntegerField(default=0, help_text="assistant turns replayed")
    model_stop_reason = models.CharField(
        max_length=24, blank=True, help_text="the model's stop_reason on the last turn"
    )
    tool_calls = models.JSONField(
        default=list, blank=True, help_text="[{name, input, source}]: recording, sandbox, …"
    )
    simulated_turns = models.JSONField(
        default=list,
        blank=True,
        help_text="indices in `messages` of the user turns written by the simulated user",
    )
    simulated_user_tokens = models.PositiveBigIntegerField(
        default=0, help_text="tokens the simulated user spent on this replay"
    )
    # Set (in one conditional UPDATE) just before the slot's first model call, so a redelivered
    # chunk or a resumed experiment skips it; a claim older than REVERIE_REPLAY_CLAIM_SECONDS
    # belongs to a worker that died and is taken over.
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["experiment", "run_id", "arm", "replicate"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "run", "arm", "replicate"], name="replay_unique_slot"
            )
        ]
        indexes = [models.Index(fields=["experiment", "status"], name="replay_experiment_status")]

    def __str__(self) -> str:
        return f"replay of run {self.run_id} ({self.arm} #{self.replicate})"


class ReplayBatch(models.Model):
    """Replay slots going through the Message Batches API, one step (one batch) at a time.

    The chunk task submits the first step and ends; beat's `dreams.poll_replay_batches` reads
    open batches, feeds the answers, submits the next step or grades and saves the slots.
    `answers` keeps every step's model answers per slot, so the replays are rebuilt from them.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="batches")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    anthropic_id = models.CharField(max_length=100, help_text="the current step's Message Batch")
    step = models.PositiveIntegerField(default=0)
    slot_ids = models.JSONField(default=list)
    answers = models.JSONField(default=dict, help_text="replay id → the model's answers so far")
    submitted_at = models.DateTimeField(help_text="when the current step's batch was created")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status"], name="replay_batch_status")]

    def __str__(self) -> str:
        return f"batch {self.anthropic_id} of experiment {self.experiment_id} (step {self.step})"


class BudgetCounter(models.Model):
    """One of an agent's budgets as every worker process sees it: one row per agent for the
    monthly budget and the replay concurrency (`cycle_id` 0), one per dream cycle for its cap.

    Workers take tokens (and replay slots) with one conditional UPDATE on this row, in chunks
    (`dreams.llm.budget`); what each worker holds is mirrored in its `BudgetLease`, so a dead
    worker's share is handed back by beat's sweeper. `recorded` counts the tokens of every
    ModelCall row the gateway wrote (bumped in the same transaction), so a worker's cached spend
    plus the growth of `recorded` is never behind another worker's calls.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="budget_counters")
    cycle_id = models.BigIntegerField(default=0, help_text="0: the agent's monthly budget")
    reserved = models.BigIntegerField(default=0, help_text="tokens held by workers' calls")
    recorded = models.BigIntegerField(default=0, help_text="tokens recorded through it, ever")
    slots = models.IntegerField(default=0, help_text="replays in flight (monthly row)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "cycle_id"], name="budget_counter_scope")
        ]

    def __str__(self) -> str:
        scope = f"cycle {self.cycle_id}" if self.cycle_id else "month"
        return f"budget of agent {self.agent_id} ({scope}): {self.reserved} held"


class BudgetLease(models.Model):
    """What one worker process holds of a BudgetCounter (same agent and cycle_id); past `expires_at` (renewed while the
    worker is alive) its tokens and slots go back to the counter (`dreams.llm.budget.sweep`)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="budget_leases")
    cycle_id = models.BigIntegerField(default=0, help_text="its counter's scope")
    worker = models.CharField(max_length=100)
    tokens = models.BigIntegerField(default=0)
    slots = models.IntegerField(default=0)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "cycle_id", "worker"], name="budget_lease_worker"
            )
        ]
        indexes = [models.Index(fields=["expires_at"], name="budget_lease_expiry")]

    def __str__(self) -> str:
        return f"{self.worker}: {self.tokens} tokens, {self.slots} slots"


class ModelCall(models.Model):
    """Accounting row for every model call the gateway makes."""

    class Purpose(models.TextChoices):
        DREAM = "dream", "Dreaming"
        REPLAY = "replay", "Replay"
        JUDGE = "judge", "Judge"
        HOSTED_DREAM = "hosted_dream", "Hosted dream"
        SIMULATED_USER = "simulated_user", "Simulated user"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="model_calls")
    purpose = models.CharField(max_length=14, choices=Purpose.choices)
    cycle = models.ForeignKey(
        DreamCycle, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_calls"
    )
    experiment = models.ForeignKey(
        Experiment, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_calls"
    )
    replay = models.ForeignKey(
        Replay, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_calls"
    )
    model = models.CharField(max_length=100)
    backend = models.CharField(max_length=12, default="simulated")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    ok = models.BooleanField(default=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["agent", "created_at"], name="modelcall_agent_time"),
            models.Index(fields=["cycle"], name="modelcall_cycle"),
            models.Index(fields=["experiment"], name="modelcall_experiment"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} call to {self.model}"

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


from dreams.managed.models import *  # noqa: E402,F403
