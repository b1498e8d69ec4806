"""Recorded, baseline and candidate trajectories aligned turn by turn, for the replay view.

A turn is one assistant step and the user / tool-result messages that led to it; steps come
from `agents.transcripts.step_message_indices` (the one step ↔ message mapping), so turn k of
every column is step k. A column's first divergence is the first message that differs from
the recording (ignoring tool-call ids, which a replay mints afresh); identical stretches of
turns are collapsed.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from agents.transcripts import message_index_of_step, step_message_indices

COLUMNS = ("recorded", "baseline", "candidate")
KEEP_OPEN = 1  # identical turns kept visible next to a divergence (context)
_IDS = ("id", "tool_use_id", "cache_control", "citations")


def _comparable(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = [
            {k: v for k, v in b.items() if k not in _IDS} if isinstance(b, dict) else b
            for b in content
        ]
    else:
        blocks = []
    return json.dumps([message.get("role"), blocks], sort_keys=True, default=str)


def turns(messages: list[dict[str, Any]]) -> list[list[int]]:
    """Message indices of each turn: turn k ends with assistant step k; a trailing group of
    user / tool-result messages after the last step is one more turn."""
    out: list[list[int]] = []
    start = 0
    for index in step_message_indices(messages):
        out.append(list(range(start, index + 1)))
        start = index + 1
    if start < len(messages):
        out.append(list(range(start, len(messages))))
    return out


@dataclass
class Cell:
    """One column's messages in one turn; `divergence` is the message index to highlight."""

    messages: list[tuple[int, dict[str, Any]]]
    divergence: int | None = None
    same_as_recorded: bool = True


@dataclass
class TurnRow:
    step: int
    cells: dict[str, Cell | None]
    identical: bool = True

    @property
    def ordered(self) -> list[tuple[str, Cell | None]]:
        return [(name, self.cells.get(name)) for name in COLUMNS]


@dataclass
class Stretch:
    rows: list[TurnRow] = field(default_factory=list)
    collapsed: bool = False

    @property
    def first_step(self) -> int:
        return self.rows[0].step

    @property
    def last_step(self) -> int:
        return self.rows[-1].step


@dataclass
class Alignment:
    stretches: list[Stretch]
    divergence: dict[str, int | None]  # message index of each replay's first divergence
    divergence_step: dict[str, int | None]


def _first_divergence(recorded: list[dict[str, Any]], replay: list[dict[str, Any]]) -> int | None:
    for index, message in enumerate(replay):
        if index >= len(recorded) or _comparable(message) != _comparable(recorded[index]):
            return index
    return None


def align(
    recorded: list[dict[str, Any]],
    replays: dict[str, list[dict[str, Any]] | None],
    *,
    stored_steps: dict[str, int | None] | None = None,
) -> Alignment:
    """Align the recording and each replay (`{"baseline": messages, "candidate": …}`)."""
    columns: dict[str, list[dict[str, Any]]] = {"recorded": recorded or []}
    columns.update({k: v for k, v in replays.items() if v is not None})
    grouped = {name: turns(messages) for name, messages in columns.items()}
    divergence: dict[str, int | None] = {}
    divergence_step: dict[str, int | None] = {}
    for name, messages in columns.items():
        if name == "recorded":
            continue
        at = _first_divergence(columns["recorded"], messages)
        stopped_early = len(messages) < len(columns["recorded"])
        if at is None and stopped_early and stored_steps and stored_steps.get(name) is not None:
            # A replay that stopped inside the recording: the grader's step says where.
            at = message_index_of_step(messages, stored_steps[name])
        divergence[name] = at
        divergence_step[name] = next(
            (k for k, group in enumerate(grouped[name]) if at is not None and at in group), None
        )
    recorded_at = {index: _comparable(m) for index, m in enumerate(columns["recorded"])}
    rows: list[TurnRow] = []
    for step in range(max(len(g) for g in grouped.values()) if grouped else 0):
        cells: dict[str, Cell | None] = {}
        for name, groups in grouped.items():
            if step >= len(groups):
                cells[name] = None
                continue
            numbered = [(i, columns[name][i]) for i in groups[step]]
            same = name == "recorded" or all(
                recorded_at.get(i) == _comparable(m) for i, m in numbered
            )
            at = divergence.get(name)
            cells[name] = Cell(
                messages=numbered,
                divergence=at if at is not None and at in groups[step] else None,
                same_as_recorded=same,
            )
        present = [c for c in cells.values() if c is not None]
        identical = len(present) == len(columns) and all(c.same_as_recorded for c in present)
        rows.append(TurnRow(step=step, cells=cells, identical=identical))
    return Alignment(
        stretches=_stretches(rows), divergence=divergence, divergence_step=divergence_step
    )


def _stretches(rows: list[TurnRow]) -> list[Stretch]:
    """Runs of identical turns longer than the context kept open are collapsed."""
    out: list[Stretch] = []
    run: list[TurnRow] = []

    def flush(*, before_change: bool) -> None:
        if not run:
            return
        tail = KEEP_OPEN if before_change else 0
        if len(run) > tail + 1:
            out.append(Stretch(rows=run[: len(run) - tail], collapsed=True))
            if tail:
                out.append(Stretch(rows=run[len(run) - tail :]))
        else:
            out.append(Stretch(rows=list(run)))
        run.clear()

    for row in rows:
        if row.identical:
            run.append(row)
            continue
        flush(before_change=True)
        if out and not out[-1].collapsed:
            out[-1].rows.append(row)
        else:
            out.append(Stretch(rows=[row]))
    flush(before_change=False)
    return out
