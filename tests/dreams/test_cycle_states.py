"""The dream cycle transition table: every legal move works, every other one raises."""

import pytest

from dreams import cycles
from dreams.cycles import CYCLE_TRANSITIONS, InvalidCycleTransition, transition_cycle
from dreams.models import DreamCycle

pytestmark = pytest.mark.django_db

C = DreamCycle.Status
PAIRS = [(a, b) for a in C.values for b in C.values]


def test_every_cycle_status_has_a_row_and_only_known_targets():
    assert set(CYCLE_TRANSITIONS) == set(C.values)
    assert set().union(*CYCLE_TRANSITIONS.values()) <= set(C.values)


@pytest.mark.parametrize(("before", "after"), PAIRS)
def test_a_cycle_moves_only_as_its_table_allows(agent, before, after):
    cycle = DreamCycle.objects.create(agent=agent, trigger=DreamCycle.Trigger.MANUAL, status=before)
    if after in CYCLE_TRANSITIONS[before]:
        transition_cycle(cycle, to=after, error="why")
        stored = DreamCycle.objects.get(pk=cycle.pk)
        assert (stored.status, stored.error) == (after, "why")
        assert cycle.status == after
    else:
        with pytest.raises(InvalidCycleTransition, match=f"is {before}; it cannot become {after}"):
            transition_cycle(cycle, to=after)
        assert DreamCycle.objects.get(pk=cycle.pk).status == before


def test_of_two_workers_finishing_one_cycle_only_the_first_lands(agent):
    first = DreamCycle.objects.create(agent=agent, trigger="manual", status=C.RUNNING)
    second = DreamCycle.objects.get(pk=first.pk)  # read before the first worker's change
    transition_cycle(first, to=C.SUCCEEDED)
    with pytest.raises(InvalidCycleTransition, match="is succeeded; it cannot become failed"):
        transition_cycle(second, to=C.FAILED)
    assert DreamCycle.objects.get(pk=first.pk).status == C.SUCCEEDED


def test_cancelling_a_finished_cycle_leaves_it_finished(agent, owner):
    cycle = DreamCycle.objects.create(agent=agent, trigger="manual", status=C.FAILED)
    assert cycles.cancel_cycle(cycle=cycle, actor=owner).status == C.FAILED


def test_queue_cancel_and_rerun_walk_the_table(agent, owner):
    cycle = cycles.start_cycle(agent=agent, trigger="manual", actor=owner, enqueue=False)
    assert cycle.status == C.QUEUED
    cancelled = cycles.cancel_cycle(cycle=cycle, actor=owner, reason="Not now.")
    assert (cancelled.status, cancelled.error) == (C.CANCELLED, "Not now.")
    assert cancelled.finished_at is not None and cancelled.report["status"] == C.CANCELLED
    # Running a cancelled cycle does nothing; a re-run is a new cycle.
    assert cycles.run_cycle(cycle_id=cycle.pk).status == C.CANCELLED
    fresh = cycles.rerun_cycle(cycle=cancelled, actor=owner)
    assert fresh.pk != cycle.pk and fresh.status == C.QUEUED
