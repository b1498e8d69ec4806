"""Reads for the review pages: the queue and a proposal's evidence, with a fixed number of queries."""

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    TextField,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from agents.actors import Actor, Person, user_of
from agents.models import Agent, Run, Workspace
from agents.transcripts import message_index_of_step
from dreams import stats as verdicts
from dreams.models import Experiment, FailurePattern, PatternRun, Proposal, Replay
from dreams.rebase import stale_filter
from reviews.models import Decision, ReviewComment
from reviews.replays import OUTCOMES, filter_replay_rows, replay_rows
from reviews.trajectories import align

S = Proposal.Status
QUEUE_PAGE_SIZE = 25
REPLAY_PAGE_SIZE = 50
QUEUE_STATUSES = [
    (S.READY, "Ready"),
    (S.CHANGES_REQUESTED, "Changes requested"),
    (S.REPLAYING, "Replaying"),
    (S.DRAFTED, "Drafted"),
    (S.APPROVED, "Approved"),
    (S.ROLLING_OUT, "Rolling out"),
    (S.REJECTED, "Rejected"),
    (S.SUPERSEDED, "Superseded"),
]
FLAG_CHOICES = [
    ("any", "Any flag"),
    ("none", "No flags"),
    ("protected_section", "Protected section"),
    ("possible_injection", "Possible injection"),
    ("policy_value", "Changes a policy value"),
    ("relaxes_check", "Relaxes a check"),
    ("off_recording", "Off-recording"),
    ("unverifiable", "Unverifiable"),
    ("growth", "Growth"),
]
VERDICT_CHOICES = list(verdicts.VERDICTS.items())
SORTS = {
    "value": ("-expected_value", "-id"),
    "age": ("ready_at", "created_at", "id"),
    "agent": ("agent__name", "-expected_value", "-id"),
}
FLAG_TEXT = {
    "protected_section": "Touches a section marked protected; an admin must approve.",
    "possible_injection": "Copies text from run content (user or tool output); check it is an instruction, not data.",
    "growth": "Grows the instructions a lot; prefer a shorter edit.",
    "off_recording": "Many replays left the recording; their results are less certain.",
    "unverifiable": "Many replays hit a write tool and stopped; they count neither as pass nor fail.",
}


@dataclass
class QueueFilters:
    agent: str = ""
    status: str = S.READY
    flag: str = ""
    sort: str = "value"
    assigned: str = ""
    stale: bool = False
    verdict: str = ""
    page: int = 1

    @classmethod
    def from_query(cls, query: Any) -> "QueueFilters":
        status = query.get("status") or S.READY
        if status != "all" and status not in {s for s, _ in QUEUE_STATUSES}:
            status = S.READY
        sort = query.get("sort") if query.get("sort") in SORTS else "value"
        flag = query.get("flag") if query.get("flag") in {f for f, _ in FLAG_CHOICES} else ""
        assigned = query.get("assigned") if query.get("assigned") in ("me", "nobody") else ""
        stale = query.get("stale") in ("1", "true", "yes")
        verdict = query.get("verdict") if query.get("verdict") in verdicts.VERDICTS else ""
        try:
            page = max(1, int(query.get("page") or 1))
        except ValueError:
            page = 1
        return cls(
            agent=(query.get("agent") or "")[:80],
            status=status,
            flag=flag,
            sort=sort,
            assigned=assigned,
            stale=stale,
            verdict=verdict,
            page=page,
        )

    def query(self, **overrides: Any) -> str:
        """The filters as a query string (for shareable links), with some values replaced."""

        values = {
            "agent": self.agent,
            "status": self.status,
            "flag": self.flag,
            "sort": self.sort,
            "assigned": self.assigned,
            "stale": "1" if self.stale else "",
            "verdict": self.verdict,
        }
        values.update(overrides)
        defaults = {"status": S.READY, "sort": "value"}
        return urlencode({k: v for k, v in values.items() if v and defaults.get(k) != v})


def latest_experiment_stats() -> Subquery:
    return Subquery(
        Experiment.objects.filter(proposal=OuterRef("pk")).order_by("-id").values("stats")[:1]
    )


def latest_verdict() -> Subquery:
    """The stored verdict of the proposal's latest experiment (text, for filtering)."""
    return Subquery(
        Experiment.objects.filter(proposal=OuterRef("pk"))
        .order_by("-id")
        .annotate(verdict_text=KeyTextTransform("verdict", "stats"))
        .values("verdict_text")[:1]
    )


def approval_count() -> Subquery:
    return Subquery(
        Decision.objects.current_approvals()
        .filter(proposal=OuterRef("pk"))
        .order_by()
        .values("proposal")
        .annotate(n=Count("id"))
        .values("n")[:1]
    )


def _flag_filter(flag: str) -> Q:
    if flag == "any":
        return ~Q(flags=[])
    if flag == "none":
        return Q(flags=[])
    # The codes are a fixed vocabulary, so a match on the quoted code is exact and works on
    # both PostgreSQL and SQLite (SQLite has no JSON containment).
    return Q(flags_text__contains=f'"{flag}"')


def queue_scope(
    *, workspace: Workspace, filters: QueueFilters, user: Person | None = None
) -> QuerySet[Proposal]:
    """The workspace's proposals narrowed by the queue's agent, assignee and flag filters."""
    scoped = Proposal.objects.filter(agent__workspace=workspace)
    if filters.agent:
        scoped = scoped.filter(agent__slug=filters.agent)
    if filters.assigned == "me" and user is not None:
        scoped = scoped.filter(assignee=user)
    elif filters.assigned == "nobody":
        scoped = scoped.filter(assignee__isnull=True)
    if filters.flag:
        if filters.flag not in ("any", "none"):
            scoped = scoped.annotate(flags_text=Cast("flags", TextField()))
        scoped = scoped.filter(_flag_filter(filters.flag))
    if filters.verdict:
        scoped = scoped.annotate(verdict_text=latest_verdict()).filter(
            verdict_text__in=verdicts.verdict_aliases(filters.verdict)
        )
    return scoped


def queue_rows(*, scoped: QuerySet[Proposal], filters: QueueFilters) -> QuerySet[Proposal]:
    """The queue's rows in its order, with latest stats, approvals and staleness annotated."""
    rows = scoped if filters.status == "all" else scoped.filter(status=filters.status)
    if filters.stale:
        rows = rows.filter(stale_filter())
    return (
        rows.select_related("agent", "assignee", "candidate_version", "base_version")
        .annotate(
            stats=latest_experiment_stats(),
            approvals=approval_count(),
            stale=ExpressionWrapper(stale_filter(), output_field=BooleanField()),
        )
        .defer("rationale", "metadata")
        .prefetch_related(
            Prefetch("patterns", queryset=FailurePattern.objects.only("id", "title", "count"))
        )
        .order_by(*SORTS[filters.sort])
    )


def review_queue(
    *, workspace: Workspace, filters: QueueFilters, user: Person | None = None
) -> dict[str, Any]:
    """The queue page: one page of proposals with their latest stats, plus counts per status."""
    scoped = queue_scope(workspace=workspace, filters=filters, user=user)
    counts = dict(scoped.order_by().values_list("status").annotate(n=Count("id")))
    rows = queue_rows(scoped=scoped, filters=filters)
    paginator = Paginator(rows, QUEUE_PAGE_SIZE)
    if not filters.stale:
        # The per-status counts already hold the total: spare the paginator its COUNT(*).
        paginator.count = (
            sum(counts.values()) if filters.status == "all" else counts.get(filters.status, 0)
        )
    page = paginator.get_page(filters.page)
    items = [QueueRow.build(p) for p in page.object_list]
    return {
        "page": page,
        "rows": items,
        "tabs": [
            (s, label, counts.get(s, 0), filters.query(status=s))
            for s, label in QUEUE_STATUSES
            if counts.get(s) or s == S.READY or s == filters.status
        ]
        + [("all", "All", sum(counts.values()), filters.query(status="all"))],
        "base_query": filters.query(),
        "agents": list(Agent.objects.filter(workspace=workspace).values_list("slug", "name")),
        "filters": filters,
        "flag_choices": FLAG_CHOICES,
        "verdict_choices": VERDICT_CHOICES,
    }


@dataclass
class QueueRow:
    """One queue line: pass rates from the held-out target runs, paired counts from all runs."""

    proposal: Proposal
    target: dict[str, Any] = field(default_factory=dict)
    regression: dict[str, Any] = field(default_factory=dict)
    overall: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    fidelity: float | None = None

    @property
    def verdict_label(self) -> str:
        return verdicts.VERDICTS.get(self.verdict, "")

    @property
    def verdict_help(self) -> str:
        return verdicts.VERDICT_HELP.get(self.verdict, "")

    @classmethod
    def build(cls, proposal: Proposal) -> "QueueRow":
        stats = getattr(proposal, "stats", None) or {}
        target = stats.get("target") or {}
        overall = stats.get("overall") or target
        return cls(
            proposal=proposal,
            target=target or overall,
            regression=stats.get("regression") or {},
            overall=overall,
            verdict=verdicts.normalize_verdict(stats.get("verdict")),
            fidelity=stats.get("fidelity"),
        )


# ---------------------------------------------------------------------------- proposal page


METRIC_SETS = [
    ("target", "Target runs"),
    ("regression", "Regression sample"),
    ("overall", "Overall"),
]


def metric_rows(stats: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The metrics table's rows: target, regression, each pinned run set, overall."""
    rows = [
        (key, label, stats[key])
        for key, label in METRIC_SETS
        if key != "overall" and isinstance(stats.get(key), dict)
    ]
    rows += [
        (f"set-{block.get('id')}", f"Run set: {block.get('name', '')}", block)
        for block in stats.get("run_sets") or []
        if isinstance(block, dict)
    ]
    if isinstance(stats.get("overall"), dict):
        rows.append(("overall", "Overall", stats["overall"]))
    return rows


def proposal_evidence(
    *, proposal: Proposal, outcome: str = "", replay_page: int = 1
) -> dict[str, Any]:
    """Everything the proposal page shows below the diff, in a fixed number of queries."""
    experiments = list(
        Experiment.objects.filter(proposal=proposal)
        .select_related("baseline_version", "candidate_version")
        .order_by("-id")
    )
    experiment = experiments[0] if experiments else None
    stats = (experiment.stats if experiment else None) or {}
    example_runs = (
        PatternRun.objects.select_related("run")
        .only(
            "id",
            "pattern_id",
            "split",
            "divergence_step",
            "run__id",
            "run__external_id",
            "run__status",
        )
        .order_by("id")
    )
    patterns = list(
        proposal.patterns.all()
        .order_by("-count", "id")
        .prefetch_related(Prefetch("pattern_runs", queryset=example_runs[:3], to_attr="examples"))
    )
    matrix = []
    for pattern in patterns:
        block = (stats.get("patterns") or {}).get(str(pattern.pk))
        if block:
            matrix.append(
                {
                    "pattern": pattern,
                    "fixed": block.get("fixes", 0),
                    "broken": block.get("regressions", 0),
                    "still_failing": block.get("still_failing", 0),
                    "unchanged_pass": block.get("unchanged_pass", 0),
                    "n": block.get("n", 0),
                }
            )
    rows = replay_rows(experiment=experiment) if experiment else []
    progress = None
    if experiment is not None and proposal.status == S.REPLAYING:
        done = sum(
            1
            for row in rows
            for r in row.baseline + row.candidate
            if r.status != Replay.Status.PENDING
        )
        total = sum(len(row.baseline) + len(row.candidate) for row in rows)
        progress = {"done": done, "total": total, "share": done / total if total else 0.0}
    outcome_counts = {key: len(filter_replay_rows(rows, key)) for key, _ in OUTCOMES}
    shown = filter_replay_rows(rows, outcome)
    paginator = Paginator(shown, REPLAY_PAGE_SIZE)
    decisions = list(
        Decision.objects.filter(proposal=proposal).with_current().select_related("reviewer")
    )
    comments = list(
        ReviewComment.objects.filter(proposal=proposal).select_related("author", "resolved_by")
    )
    replies: dict[int, list[ReviewComment]] = {}
    for c in comments:
        if c.reply_to_id:
            replies.setdefault(c.reply_to_id, []).append(c)
    threads = [c for c in comments if c.reply_to_id is None]
    for c in threads:
        c.thread_replies = replies.get(c.pk, [])
    revisions = list(
        Proposal.objects.filter(Q(pk=proposal.revision_of_id) | Q(revision_of=proposal))
        .only("id", "revision", "status", "created_at")
        .order_by("revision")
    )
    return {
        "experiment": experiment,
        "experiments": experiments,
        "replay_progress": progress,
        "stats": stats,
        "metric_rows": metric_rows(stats),
        "patterns": patterns,
        "matrix": matrix,
        "replay_page": paginator.get_page(replay_page),
        "replay_total": len(rows),
        "outcome": outcome,
        "outcomes": [(key, label, outcome_counts[key]) for key, label in OUTCOMES],
        "decisions": decisions,
        "approvals": [d for d in decisions if d.is_current_approval],  # type: ignore[attr-defined]
        "comments": threads,
        "diff_threads": [c for c in threads if c.anchored],
        "open_threads": sum(1 for c in threads if c.anchored and not c.resolved_at),
        "revisions": revisions,
        "flag_notes": [
            {
                "code": f.get("code", ""),
                "message": f.get("message", ""),
                "help": FLAG_TEXT.get(f.get("code", ""), ""),
            }
            for f in proposal.flags
            if isinstance(f, dict)
        ],
    }


def replay_pair(*, experiment: Experiment, run_id: int) -> dict[str, Any]:
    """Recorded run and its baseline/candidate replays (first replicate shown; all listed)."""
    run = Run.objects.select_related("config_version").get(pk=run_id)
    replays = list(
        Replay.objects.filter(experiment=experiment, run_id=run_id).order_by("arm", "replicate")
    )
    baseline = [r for r in replays if r.arm == Replay.Arm.BASELINE]
    candidate = [r for r in replays if r.arm == Replay.Arm.CANDIDATE]
    membership = (
        PatternRun.objects.filter(run_id=run_id, pattern__proposals__experiments=experiment)
        .only("divergence_step", "divergence_explanation")
        .first()
    )
    first_baseline = baseline[0] if baseline else None
    first_candidate = candidate[0] if candidate else None
    recorded_step = membership.divergence_step if membership else None
    alignment = align(
        run.messages or [],
        {
            "baseline": (first_baseline.messages or []) if first_baseline else None,
            "candidate": (first_candidate.messages or []) if first_candidate else None,
        },
        stored_steps={
            "baseline": first_baseline.divergence_step if first_baseline else None,
            "candidate": first_candidate.divergence_step if first_candidate else None,
        },
    )
    return {
        "alignment": alignment,
        "run": run,
        "baseline": first_baseline,
        "candidate": first_candidate,
        "replicates": replays,
        "recorded_divergence": recorded_step,
        "recorded_explanation": membership.divergence_explanation if membership else "",
        # Markers are message indices; divergences are stored as steps (assistant turns).
        "recorded_divergence_message": message_index_of_step(run.messages, recorded_step),
        "baseline_divergence_message": alignment.divergence.get("baseline"),
        "candidate_divergence_message": alignment.divergence.get("candidate"),
    }


def assignable_reviewers(*, workspace: Workspace) -> list[Any]:
    from django.contrib.auth import get_user_model

    return list(
        get_user_model()
        .objects.filter(
            memberships__workspace=workspace, memberships__role__in=["reviewer", "admin"]
        )
        .order_by("username")
        .only("id", "username")
    )


def page_numbers(page: Page[Any]) -> list[int | None]:
    """Page links with gaps: 1 … 4 5 [6] 7 8 … 40."""
    total, current = page.paginator.num_pages, page.number
    wanted = {1, total, *range(current - 2, current + 3)}
    out: list[int | None] = []
    for n in range(1, total + 1):
        if n in wanted:
            out.append(n)
        elif out and out[-1] is not None:
            out.append(None)
    return out


def queue_neighbours(*, proposal: Proposal) -> dict[str, int | None]:
    """Previous and next proposal in the default queue order (ready, highest expected value first)."""
    if proposal.status != S.READY:
        return {"previous": None, "next": None}
    ready = Proposal.objects.filter(agent__workspace_id=proposal.agent.workspace_id, status=S.READY)
    value, pk = proposal.expected_value, proposal.pk
    after = Q(expected_value__lt=value) | Q(expected_value=value, id__lt=pk)
    before = Q(expected_value__gt=value) | Q(expected_value=value, id__gt=pk)
    following = ready.filter(after).order_by("-expected_value", "-id").values_list("id", flat=True)
    preceding = ready.filter(before).order_by("expected_value", "id").values_list("id", flat=True)
    return {"previous": preceding.first(), "next": following.first()}


def last_reviewed_revision(*, proposal: Proposal, user: Actor) -> Proposal | None:
    """The latest earlier revision of this proposal that `user` decided or commented on."""
    chain: list[int] = []
    current = proposal.revision_of_id
    while current is not None and len(chain) < 50:
        chain.append(current)
        current = (
            Proposal.objects.filter(pk=current).values_list("revision_of_id", flat=True).first()
        )
    person = user_of(user)
    if not chain or person is None:
        return None
    touched = set(
        Decision.objects.filter(proposal_id__in=chain, reviewer=person).values_list(
            "proposal_id", flat=True
        )
    ) | set(
        ReviewComment.objects.filter(proposal_id__in=chain, author=person).values_list(
            "proposal_id", flat=True
        )
    )
    for pk in chain:  # newest first
        if pk in touched:
            return Proposal.objects.select_related("candidate_version").get(pk=pk)
    return None
