"""Replays of an experiment paired per run and classified (fixed, regressed, …) for the proposal page."""

from dataclasses import dataclass, field
from functools import cached_property

from dreams.models import Experiment, Replay


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

    @staticmethod
    def _passes(replays: list[ReplayLite]) -> bool | None:
        graded = [r for r in replays if r.verdict in (Replay.Verdict.PASS, Replay.Verdict.FAIL)]
        if not graded:
            return None
        return sum(r.verdict == Replay.Verdict.PASS for r in graded) * 2 > len(graded)

    @cached_property
    def baseline_pass(self) -> bool | None:
        return self._passes(self.baseline)

    @cached_property
    def candidate_pass(self) -> bool | None:
        return self._passes(self.candidate)

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
        return any(len({r.verdict for r in arm}) > 1 for arm in (self.baseline, self.candidate))

    @cached_property
    def pending(self) -> bool:
        return any(r.status == Replay.Status.PENDING for r in self.baseline + self.candidate)

    @cached_property
    def outcome(self) -> str:
        if self.pending:
            return "pending"
        if self.unverifiable:
            return "unverifiable"
        base, cand = self.baseline_pass, self.candidate_pass
        if base is None or cand is None:
            return "unverifiable"
        if not base and cand:
            return "fixed"
        if base and not cand:
            return "regressed"
        return "unchanged_pass" if base else "still_failing"

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
    ("still_failing", "Still failing"),
    ("unchanged_pass", "Unchanged pass"),
    ("off_recording", "Off-recording"),
    ("unverifiable", "Unverifiable"),
    ("pending", "Pending"),
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
    by_run: dict[int, ReplayRow] = {}
    for *fields, run_id, run_set, external_id, run_status in replays:
        row = by_run.get(run_id)
        if row is None:
            row = by_run[run_id] = ReplayRow(
                run_id=run_id,
                external_id=external_id,
                recorded_status=run_status,
                run_set=run_set,
            )
        lite = ReplayLite(*fields)
        (row.baseline if lite.arm == Replay.Arm.BASELINE else row.candidate).append(lite)
    order = {
        "regressed": 0,
        "fixed": 1,
        "unverifiable": 2,
        "still_failing": 3,
        "pending": 4,
        "unchanged_pass": 5,
    }
    return sorted(by_run.values(), key=lambda r: (order.get(r.outcome, 9), r.run_id))


def filter_replay_rows(rows: list[ReplayRow], outcome: str) -> list[ReplayRow]:
    if outcome == "off_recording":
        return [r for r in rows if r.off_recording]
    if outcome:
        return [r for r in rows if r.outcome == outcome]
    return rows
