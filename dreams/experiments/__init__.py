"""Experiments: replay a candidate against the baseline and judge it with paired statistics.

`lifecycle` (start, run, chunk, finish), `execution` (replaying slots), `evidence`
(paired outcomes, stopping rules, stats), `sampling` (the regression sample).
"""

from dreams.experiments.evidence import compute_stats, early_stop_check
from dreams.experiments.lifecycle import (
    ExperimentNotRerun,
    can_cancel,
    can_rerun,
    cancel_experiment,
    fail_experiment,
    finish_experiment,
    get_experiment_for,
    judging_runs,
    replay_chunk,
    rerun_experiment,
    run_experiment,
    stale_experiments,
    start_experiment,
    start_proposal_experiment,
)
from dreams.experiments.sampling import sample_regression_runs

__all__ = [
    "ExperimentNotRerun",
    "can_cancel",
    "can_rerun",
    "cancel_experiment",
    "get_experiment_for",
    "stale_experiments",
    "compute_stats",
    "early_stop_check",
    "fail_experiment",
    "finish_experiment",
    "replay_chunk",
    "rerun_experiment",
    "run_experiment",
    "sample_regression_runs",
    "start_experiment",
    "start_proposal_experiment",
    "judging_runs",
]
