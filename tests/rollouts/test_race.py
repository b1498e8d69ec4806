"""Approve-advance racing a halt ends in one consistent state (real threads, row locks)."""

import random
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections

from agents.models import Agent, AuditEvent
from dreams.models import Proposal
from rollouts import services
from rollouts.models import Rollout, RolloutStage
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs row locks (PostgreSQL)"),
]


def race(*calls):
    """Run the calls in threads released together; return what each returned or raised."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, fn):
        try:
            barrier.wait()
            results[index] = fn()
        except Exception as exc:  # noqa: BLE001 - the outcome is what we assert on
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def new_rollout(agent, owner, *, seed, canary_success):
    proposal = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=50, min_duration=timedelta(minutes=1)
    )
    age_stage(rollout, minutes=5)
    rng = random.Random(seed)
    seed_runs(agent=agent, version=rollout.from_version, n=400, success=0.9, rng=rng)
    seed_runs(agent=agent, version=rollout.to_version, n=120, success=canary_success, rng=rng)
    return rollout


def assert_consistent(rollout_id):
    """The agent's routing, the stages, the proposal and the audit log all tell one story."""
    rollout = Rollout.objects.get(pk=rollout_id)
    agent = Agent.objects.get(pk=rollout.agent_id)
    stages = list(rollout.stages.order_by("index"))
    running = [s for s in stages if s.status == RolloutStage.Status.RUNNING]
    halts = AuditEvent.objects.filter(action="rollout.halt", target_id=str(rollout_id)).count()
    approvals = AuditEvent.objects.filter(
        action="rollout.stage_approve", target_id=str(rollout_id)
    ).count()
    assert rollout.current_stage == approvals
    if rollout.status == Rollout.Status.HALTED:
        assert halts == 1 and not running
        assert agent.canary_version_id is None and agent.canary_percent == 0
        assert stages[rollout.current_stage].status == RolloutStage.Status.HALTED
        assert Proposal.objects.get(pk=rollout.proposal_id).status == Proposal.Status.HALTED
    else:
        assert halts == 0 and [s.index for s in running] == [rollout.current_stage]
        assert agent.canary_version_id == rollout.to_version_id
        assert agent.canary_percent == stages[rollout.current_stage].percent
    return rollout


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_approval_racing_the_automatic_halt_never_advances_a_regressed_canary(agent, owner, seed):
    rollout = new_rollout(agent, owner, seed=seed, canary_success=0.6)
    approve, evaluate = race(
        lambda: services.approve_stage(rollout_id=rollout.pk, actor=owner),
        lambda: services.evaluate_rollout(rollout_id=rollout.pk),
    )
    final = assert_consistent(rollout.pk)
    assert final.status == Rollout.Status.HALTED and final.current_stage == 0
    # Whoever got the lock first halted; the other saw the halted rollout.
    assert isinstance(approve, Rollout | services.InvalidRolloutState), approve
    assert evaluate is None or evaluate.comparison.should_halt


@pytest.mark.parametrize("seed", [5, 6, 7, 8])
def test_approval_racing_a_manual_halt_ends_in_one_of_two_consistent_states(agent, owner, seed):
    rollout = new_rollout(agent, owner, seed=seed, canary_success=0.9)
    approve, halt = race(
        lambda: services.approve_stage(rollout_id=rollout.pk, actor=owner),
        lambda: services.halt_rollout(rollout_id=rollout.pk, actor=owner, reason="operator"),
    )
    final = assert_consistent(rollout.pk)
    assert final.status == Rollout.Status.HALTED  # the halt always lands, before or after
    if isinstance(approve, Exception):
        assert isinstance(approve, services.InvalidRolloutState) and final.current_stage == 0
    else:
        assert final.current_stage == 1  # approved first, then halted at stage 2
    assert isinstance(halt, Rollout)
