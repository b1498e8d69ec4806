"""The runs that check an experiment for regressions: a sample of passing runs, stratified by
tool-usage profile and recency (older / newer half), allocated in proportion with at least one
run per stratum; and beside it the agent's pinned run sets, replayed every time."""

import math
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from agents.models import Agent, Run
from agents.run_sets import pinned_run_sets
from agents.transcripts import iter_tool_calls

if TYPE_CHECKING:
    from dreams.models import Experiment


def _profile(run: Run) -> str:
    return ">".join(c["name"] for c in iter_tool_calls(run.messages or [])) or "no-tools"


def sample_regression_runs(
    *, agent: Agent, exclude_ids: Iterable[int], size: int, seed: int
) -> list[Run]:
    """A stratified sample of passing runs: strata = tool-usage profile × older/newer half."""
    runs = list(
        Run.objects.filter(agent=agent, status=Run.Status.SUCCESS)
        .exclude(pk__in=list(exclude_ids))
        .only("id", "messages", "started_at")
        .order_by("started_at", "id")
    )
    if size <= 0 or not runs:
        return []
    if len(runs) <= size:
        return runs
    half = len(runs) // 2
    strata: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for index, run in enumerate(runs):
        strata[(_profile(run), 0 if index < half else 1)].append(run)
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    # Largest-remainder allocation, proportional to stratum size, at least one per stratum.
    keys = sorted(strata)
    quotas = {k: size * len(strata[k]) / len(runs) for k in keys}
    alloc = {k: min(len(strata[k]), max(1, math.floor(q))) for k, q in quotas.items()}
    by_remainder = sorted(keys, key=lambda k: (quotas[k] - math.floor(quotas[k]), k), reverse=True)
    while sum(alloc.values()) < size:
        grown = False
        for key in by_remainder:
            if sum(alloc.values()) >= size:
                break
            if alloc[key] < len(strata[key]):
                alloc[key] += 1
                grown = True
        if not grown:
            break
    while sum(alloc.values()) > size:
        key = max(keys, key=lambda k: (alloc[k], k))
        alloc[key] -= 1
    sample: list[Run] = []
    for key in keys:
        sample.extend(rng.sample(strata[key], alloc[key]))
    return sample


def pin_run_sets(*, experiment: "Experiment", taken: set[int]) -> None:
    """Add the agent's pinned run sets: their runs not already target or regression runs are
    replayed as `pinned`, and the sets as they are now are kept for the per-set results."""
    snapshot, pinned = [], {}
    for run_set, runs in pinned_run_sets(experiment.agent):
        snapshot.append({"id": run_set.pk, "name": run_set.name, "run_ids": [r.pk for r in runs]})
        pinned.update({r.pk: r for r in runs if r.pk not in taken})
    if not snapshot:
        return
    experiment.run_sets = snapshot
    experiment.save(update_fields=["run_sets"])
    experiment.pinned_runs.set(list(pinned.values()))
