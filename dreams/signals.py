"""Signals that let higher apps (reviews) react to dreaming events without `dreams` importing them.

They carry ids only; receivers enqueue work (notifications), they hold no business logic.
"""

from django.dispatch import Signal

cycle_finished = Signal()  # kwargs: cycle_id
proposal_ready = Signal()  # kwargs: proposal_id
experiment_finished = Signal()  # kwargs: experiment_id
proposal_decided = Signal()  # kwargs: proposal_id, status (approved, rejected, superseded, …)
