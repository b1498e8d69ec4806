"""Replays of an experiment paired per run for the proposal page, classified by the statistics'
one `dreams.stats.classify` (so the list and the counts above it never disagree)."""

from dataclasses import dataclass, field
from functools import cached_property

from dreams import stats
from dreams.models import Experiment, Replay

FINISHED = (Experiment.Status.COMPLETED, Experiment.Status.STOPPED_EARLY, Experiment.Status.FAILED)


@dataclass(frozen=True, slots=True)
class ReplayLite:
    """The columns of a Replay the list needs (no messages): cheaper than model instances."""

    id: int
    arm: str
    replicate: int
    status: str
    verdict: str
    reason: str
    off_recording: bool
    unverifiable: bool
    simulated_turns: list[int]


@dataclass
class ReplayRow:
    run_id: int
    external_id: str
    recorded_status: str
    run_set: str
    baseline: list[ReplayLite] = field(default_factory=list)
    candidate: list[ReplayLite] = field(default_factory=list)
    finished: bool = False  # the experiment is over: a replay still pending was skipped

    @staticmethod
    def _arm(replays: list[ReplayLite]) -> stats.ArmReplays:
        """The statistics' view of one arm (done replays only, as `paired_outcomes` reads them)."""
        return stats.ArmReplays(
            verdicts=[r.verdict for r in replays if r.status == Replay.Status.DONE]
        )

    @cached_property
    def baseline_pass(self) -> bool | None:
        outcome = self._arm(self.baseline).outcome
        return None if outcome is None else outcome == stats.PASS

    @cached_property
    def candidate_pass(self) -> bool | None:
        outcome = self._arm(self.candidate).outcome
        return None if outcome is None else outcome == stats.PASS

    @cached_property
    def off_recording(self) -> bool:
        return any(r.off_recording for r in self.baseline + self.candidate)

    @cached_property
    def simulated_user(self) -> bool:
        """A simulated user wrote some of the user turns of a replay of this run."""
        return any(r.simulated_turns for r in self.baseline + self.candidate)

    @cached_property
    def unverifiable(self) -> bool:
        return any(
            r.unverifiable or r.verdict == Replay.Verdict.UNVERIFIABLE
            for r in self.baseline + self.candidate
        )

    @cached_property
    def flaky(self) -> bool:
        return self._arm(self.baseline).flaky or self._arm(self.candidate).flaky

    @cached_property
    def pending(self) -> bool:
        return any(r.status == Replay.Status.PENDING for r in self.baseline + self.candidate)

    @cached_property
    def outcome(self) -> str:
        """`stats.classify` of the run; `pending` while replays run, `skipped` once the
        experiment ended without them (stopped early), never "pending" forever."""
        if self.pending:
            return "skipped" if self.finished else "pending"
        return stats.classify(self._arm(self.baseline), self._arm(self.candidate))

    @property
    def reason(self) -> str:
        first = self.candidate[0] if self.candidate else None
        return first.reason if first else ""

    @property
    def reason_short(self) -> str:
        reason = self.reason
        return reason if len(reason) <= 140 else reason[:139].rstrip() + "…"


OUTCOMES = [
    ("fixed", "Fixed"),
    ("regressed", "Regressed"),
    ("flaky", "Flaky baseline"),
    ("still_failing", "Still failing"),
    ("unchanged_pass", "Unchanged pass"),
    ("off_recording", "Off-recording"),
    ("unverifiable", "Unverifiable"),
    ("pending", "Pending"),
    ("skipped", "Skipped"),
]


def replay_rows(*, experiment: Experiment) -> list[ReplayRow]:
    """Replays of one experiment paired per run; messages are not loaded here (one query)."""
    replays = (
        Replay.objects.filter(experiment=experiment)
        .order_by("run_id", "arm", "replicate")
        .values_list(
            "id",
            "arm",
            "replicate",
            "status",
            "verdict",
            "reason",
            "off_recording",
            "unverifiable",
            "simulated_turns",
            "run_id",
            "run_set",
            "run__external_id",
            "run__status",
        )
    )
    finished = experiment.status in FINISHED
    by_run: dict[int, ReplayRow] = {}
    for *fields, run_id, run_set, external_id, run_status in replays:
        row = by_run.get(run_id)
        if row is None:
            row = by_run[run_id] = ReplayRow(
                run_id=run_id,
                external_id=external_id,
                recorded_status=run_status,
                run_set=run_set,
                finished=finished,
            )
        lite = ReplayLite(*fields)
        (row.baseline if lite.arm == Replay.Arm.BASELINE else row.candidate).append(lite)
    order = {
        "regressed": 0,
        "fixed": 1,
        "flaky": 2,
        "unverifiable": 3,
        "still_failing": 4,
        "pending": 5,
        "skipped": 6,
        "unchanged_pass": 7,
    }
    return sorted(by_run.values(), key=lambda r: (order.get(r.outcome, 9), r.run_id))


def filter_replay_rows(rows: list[ReplayRow], outcome: str) -> list[ReplayRow]:
    if outcome == "off_recording":
        return [r for r in rows if r.off_recording]
    if outcome:
        return [r for r in rows if r.outcome == outcome]
    return rows
