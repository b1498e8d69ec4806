"""The rollout and stage transition tables: every legal move works, every other one raises."""

from datetime import timedelta

import pytest

from rollouts import services
from rollouts.models import Rollout, RolloutStage
from rollouts.states import (
    ROLLOUT_TRANSITIONS,
    STAGE_TRANSITIONS,
    InvalidTransition,
    RolloutError,
    transition_rollout,
    transition_stage,
    transition_stages,
)
from tests.rollouts.fixtures import approved_proposal

pytestmark = pytest.mark.django_db

R = Rollout.Status
St = RolloutStage.Status
ROLLOUT_PAIRS = [(a, b) for a in R.values for b in R.values]
STAGE_PAIRS = [(a, b) for a in St.values for b in St.values]


def _rollout(agent, owner) -> Rollout:
    proposal = approved_proposal(agent, actor=owner)
    return services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=0, min_duration=timedelta(0)
    )


def test_every_rollout_and_stage_status_has_a_row_and_only_known_targets():
    assert set(ROLLOUT_TRANSITIONS) == set(R.values)
    assert set().union(*ROLLOUT_TRANSITIONS.values()) <= set(R.values)
    assert set(STAGE_TRANSITIONS) == set(St.values)
    assert set().union(*STAGE_TRANSITIONS.values()) <= set(St.values)


@pytest.mark.parametrize(("before", "after"), ROLLOUT_PAIRS)
def test_a_rollout_moves_only_as_its_table_allows(agent, owner, before, after):
    rollout = _rollout(agent, owner)
    Rollout.objects.filter(pk=rollout.pk).update(status=before)  # arrange any starting state
    rollout.refresh_from_db()
    if after in ROLLOUT_TRANSITIONS[before]:
        transition_rollout(rollout, to=after, halt_reason="why")
        stored = Rollout.objects.get(pk=rollout.pk)
        assert (stored.status, stored.halt_reason) == (after, "why")
        assert rollout.status == after
    else:
        with pytest.raises(InvalidTransition, match=f"is {before}; it cannot become {after}"):
            transition_rollout(rollout, to=after)
        assert Rollout.objects.get(pk=rollout.pk).status == before


@pytest.mark.parametrize(("before", "after"), STAGE_PAIRS)
def test_a_stage_moves_only_as_its_table_allows(agent, owner, before, after):
    stage = _rollout(agent, owner).stages.get(index=1)
    RolloutStage.objects.filter(pk=stage.pk).update(status=before)
    stage.refresh_from_db()
    if after in STAGE_TRANSITIONS[before]:
        transition_stage(stage, to=after, verdict="v")
        stored = RolloutStage.objects.get(pk=stage.pk)
        assert (stored.status, stored.verdict) == (after, "v")
    else:
        with pytest.raises(InvalidTransition):
            transition_stage(stage, to=after)
        assert RolloutStage.objects.get(pk=stage.pk).status == before


def test_an_illegal_transition_is_a_rollout_conflict_for_views(agent, owner):
    rollout = _rollout(agent, owner)
    Rollout.objects.filter(pk=rollout.pk).update(status=R.HALTED)
    rollout.refresh_from_db()
    with pytest.raises(RolloutError) as excinfo:  # views and the API answer 409 for these
        transition_rollout(rollout, to=R.RUNNING)
    assert excinfo.value.code == "invalid_rollout_state"


def test_of_two_copies_of_one_rollout_only_the_first_transition_lands(agent, owner):
    first = _rollout(agent, owner)
    second = Rollout.objects.get(pk=first.pk)  # another worker's copy, read before the change
    transition_rollout(first, to=R.HALTED)
    with pytest.raises(InvalidTransition, match="is halted; it cannot become completed"):
        transition_rollout(second, to=R.COMPLETED)
    assert Rollout.objects.get(pk=first.pk).status == R.HALTED


def test_skipping_stages_refuses_when_one_of_them_already_ran(agent, owner):
    rollout = _rollout(agent, owner)
    with pytest.raises(InvalidTransition):
        transition_stages(rollout.stages.all(), to=St.SKIPPED)  # stage 1 is running
    assert list(rollout.stages.values_list("status", flat=True)) == [
        St.RUNNING,
        St.PENDING,
        St.PENDING,
    ]
    assert transition_stages(rollout.stages.filter(index__gt=0), to=St.SKIPPED) == 2


def test_the_real_flows_walk_the_tables(agent, owner):
    """Start, approve to the end, roll back; a second rollout halted and restarted."""
    rollout = _rollout(agent, owner)
    for _ in range(3):
        services.approve_stage(rollout_id=rollout.pk, actor=owner)
    rollout.refresh_from_db()
    assert rollout.status == R.COMPLETED
    assert set(rollout.stages.values_list("status", flat=True)) == {St.PASSED}
    services.roll_back(rollout_id=rollout.pk, actor=owner, reason="undo")
    assert Rollout.objects.get(pk=rollout.pk).status == R.ROLLED_BACK
    with pytest.raises(services.InvalidRolloutState):
        services.roll_back(rollout_id=rollout.pk, actor=owner)

    agent.refresh_from_db()
    second = _rollout(agent, owner)
    services.approve_stage(rollout_id=second.pk, actor=owner)
    services.halt_rollout(rollout_id=second.pk, actor=owner, reason="errors")
    second.refresh_from_db()
    assert second.status == R.HALTED
    assert list(second.stages.values_list("status", flat=True)) == [
        St.PASSED,
        St.HALTED,
        St.SKIPPED,
    ]
    with pytest.raises(services.InvalidRolloutState):
        services.approve_stage(rollout_id=second.pk, actor=owner)
