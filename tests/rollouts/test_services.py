"""Rollout services: start, minimums before advancing, completion, halt, roll back."""

import random
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction

from agents.models import AuditEvent
from dreams.models import Proposal
from dreams.proposals import InvalidTransition
from rollouts import services
from rollouts.models import Rollout, RolloutStage
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs

pytestmark = pytest.mark.django_db


def start(agent, owner, **kwargs):
    proposal = approved_proposal(agent, actor=owner)
    kwargs.setdefault("min_runs", 20)
    kwargs.setdefault("min_duration", timedelta(minutes=30))
    return services.start_rollout(proposal_id=proposal.pk, actor=owner, **kwargs)


def test_starting_a_rollout_routes_the_first_stage_to_the_candidate(agent, owner):
    rollout = start(agent, owner)
    agent.refresh_from_db()
    assert agent.canary_version_id == rollout.to_version_id
    assert agent.canary_percent == 5
    assert agent.stable_version_id == rollout.from_version_id
    assert [s.percent for s in rollout.stages.all()] == [5, 25, 100]
    first = rollout.stages.get(index=0)
    assert first.status == RolloutStage.Status.RUNNING and first.approved_by == owner
    assert Proposal.objects.get(pk=rollout.proposal_id).status == Proposal.Status.ROLLING_OUT
    event = AuditEvent.objects.get(action="rollout.start")
    assert event.after["canary_percent"] == 5 and event.actor == owner


def test_the_agents_configured_stages_are_used(agent, owner):
    agent.rollout_stages = [10, 50, 100]
    agent.save(update_fields=["rollout_stages"])
    rollout = start(agent, owner)
    assert [s.percent for s in rollout.stages.all()] == [10, 50, 100]


def test_a_proposal_that_is_not_approved_cannot_roll_out(agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    Proposal.objects.filter(pk=proposal.pk).update(status=Proposal.Status.READY)
    with pytest.raises(InvalidTransition):
        services.start_rollout(proposal_id=proposal.pk, actor=owner)
    agent.refresh_from_db()
    assert agent.canary_version_id is None and not Rollout.objects.exists()


def test_an_agent_has_one_active_rollout_at_a_time(agent, owner):
    first = start(agent, owner)
    with pytest.raises(services.RolloutError):
        start(agent, owner)
    # The database holds the rule too, even if a service forgot to check.
    with pytest.raises(IntegrityError), transaction.atomic():
        Rollout.objects.create(
            agent=agent,
            proposal=first.proposal,
            from_version=first.from_version,
            to_version=first.to_version,
            status=Rollout.Status.AWAITING_APPROVAL,
        )


def test_a_stage_cannot_advance_before_its_minimum_runs_and_duration(agent, owner):
    rollout = start(agent, owner, min_runs=20, min_duration=timedelta(minutes=30))
    with pytest.raises(services.StageNotReady) as excinfo:
        services.approve_stage(rollout_id=rollout.pk, actor=owner)
    assert any("0 of 20 canary runs" in r for r in excinfo.value.reasons)
    assert any("minimum duration" in r for r in excinfo.value.reasons)

    age_stage(rollout, minutes=1)
    rng = random.Random(1)
    seed_runs(agent=agent, version=rollout.to_version, n=20, success=0.9, rng=rng)
    with pytest.raises(services.StageNotReady) as excinfo:  # runs are there, time is not
        services.approve_stage(rollout_id=rollout.pk, actor=owner)
    assert excinfo.value.reasons == [r for r in excinfo.value.reasons if "duration" in r]

    age_stage(rollout, minutes=31)
    rollout = services.approve_stage(rollout_id=rollout.pk, actor=owner)
    agent.refresh_from_db()
    assert rollout.current_stage == 1 and agent.canary_percent == 25
    assert rollout.stages.get(index=0).status == RolloutStage.Status.PASSED


def test_runs_from_before_the_stage_do_not_count_towards_its_minimum(agent, owner):
    rollout = start(agent, owner, min_runs=10, min_duration=timedelta(0))
    age_stage(rollout, minutes=5)
    stage = rollout.stages.get(index=0)
    seed_runs(
        agent=agent,
        version=rollout.to_version,
        n=10,
        success=1.0,
        rng=random.Random(2),
        started_at=stage.started_at - timedelta(minutes=10),
    )
    with pytest.raises(services.StageNotReady):
        services.approve_stage(rollout_id=rollout.pk, actor=owner)


def test_approving_the_final_stage_makes_the_candidate_stable(agent, owner, reviewer):
    rollout = start(agent, owner, min_runs=0, min_duration=timedelta(0))
    services.approve_stage(rollout_id=rollout.pk, actor=reviewer)
    with pytest.raises(services.InvalidRolloutState):
        services.complete_rollout(rollout_id=rollout.pk, actor=reviewer)  # not the final stage yet
    services.approve_stage(rollout_id=rollout.pk, actor=reviewer)
    agent.refresh_from_db()
    assert agent.canary_percent == 100
    rollout = services.complete_rollout(rollout_id=rollout.pk, actor=reviewer)
    agent.refresh_from_db()
    assert rollout.status == Rollout.Status.COMPLETED
    assert agent.stable_version_id == rollout.to_version_id
    assert agent.canary_version_id is None and agent.canary_percent == 0
    assert Proposal.objects.get(pk=rollout.proposal_id).status == Proposal.Status.ROLLED_OUT
    assert list(
        AuditEvent.objects.filter(target_type="rollout")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["rollout.start", "rollout.stage_approve", "rollout.stage_approve", "rollout.complete"]
    with pytest.raises(services.InvalidRolloutState):
        services.approve_stage(rollout_id=rollout.pk, actor=reviewer)


def test_halting_returns_all_traffic_to_stable_at_once(agent, owner):
    rollout = start(agent, owner)
    rollout = services.halt_rollout(rollout_id=rollout.pk, actor=owner, reason="looks off")
    agent.refresh_from_db()
    assert rollout.status == Rollout.Status.HALTED and rollout.halt_reason == "looks off"
    assert agent.canary_version_id is None and agent.canary_percent == 0
    assert agent.stable_version_id == rollout.from_version_id
    stages = {s.index: s.status for s in rollout.stages.all()}
    assert stages == {0: "halted", 1: "skipped", 2: "skipped"}
    assert Proposal.objects.get(pk=rollout.proposal_id).status == Proposal.Status.HALTED
    event = AuditEvent.objects.get(action="rollout.halt")
    assert event.comment == "looks off" and event.after["canary_percent"] == 0
    with pytest.raises(services.InvalidRolloutState):
        services.halt_rollout(rollout_id=rollout.pk, actor=owner, reason="again")


def test_rolling_back_a_completed_rollout_restores_the_old_stable(agent, owner):
    rollout = start(agent, owner, min_runs=0, min_duration=timedelta(0))
    for _ in range(3):
        services.approve_stage(rollout_id=rollout.pk, actor=owner)
    rollout = services.roll_back(rollout_id=rollout.pk, actor=owner, reason="support tickets up")
    agent.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK
    assert agent.stable_version_id == rollout.from_version_id
    assert AuditEvent.objects.filter(
        action="rollout.roll_back", comment="support tickets up"
    ).exists()


def test_rolling_back_an_active_rollout_stops_it(agent, owner):
    rollout = start(agent, owner)
    rollout = services.roll_back(rollout_id=rollout.pk, actor=owner)
    agent.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK and agent.canary_version_id is None
    # A new rollout can start once the old one is over.
    assert start(agent, owner).is_active


def test_the_periodic_check_flags_a_stage_ready_for_approval(agent, owner):
    rollout = start(agent, owner, min_runs=5, min_duration=timedelta(minutes=1))
    age_stage(rollout, minutes=2)
    services.evaluate_rollout(rollout_id=rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).status == Rollout.Status.RUNNING
    seed_runs(agent=agent, version=rollout.to_version, n=5, success=1.0, rng=random.Random(3))
    services.evaluate_rollout(rollout_id=rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).status == Rollout.Status.AWAITING_APPROVAL
    rollout = services.approve_stage(rollout_id=rollout.pk, actor=owner)
    assert rollout.status == Rollout.Status.RUNNING and rollout.current_stage == 1


def test_the_scheduled_task_checks_every_active_rollout(agent, owner):
    from rollouts.tasks import check_rollouts

    rollout = start(agent, owner, min_runs=0, min_duration=timedelta(0))
    assert check_rollouts.delay().get() == 1
    assert Rollout.objects.get(pk=rollout.pk).status == Rollout.Status.AWAITING_APPROVAL


def test_a_proposal_drafted_on_an_older_stable_cannot_roll_out(agent, owner):
    stale = approved_proposal(agent, actor=owner)
    newer = approved_proposal(agent, actor=owner)
    rollout = services.start_rollout(
        proposal_id=newer.pk, actor=owner, min_runs=0, min_duration=timedelta(0)
    )
    for _ in range(3):
        services.approve_stage(rollout_id=rollout.pk, actor=owner)
    with pytest.raises(services.RolloutError, match="not the proposal's base"):
        services.start_rollout(proposal_id=stale.pk, actor=owner)
    assert Proposal.objects.get(pk=stale.pk).status == Proposal.Status.APPROVED


def test_halted_and_rolled_back_are_distinct_outcomes_on_the_proposal(agent, owner):
    halted = start(agent, owner)
    services.halt_rollout(rollout_id=halted.pk, actor=owner, reason="error spike")
    assert Proposal.objects.get(pk=halted.proposal_id).status == Proposal.Status.HALTED

    rolled = start(agent, owner)
    services.roll_back(rollout_id=rolled.pk, actor=owner, reason="wrong tone")
    assert Proposal.objects.get(pk=rolled.proposal_id).status == Proposal.Status.ROLLED_BACK
    with pytest.raises(InvalidTransition):  # a rolled-back proposal stays closed
        from reviews.services import approve_proposal

        approve_proposal(proposal_id=rolled.proposal_id, reviewer=owner)


def test_a_halted_rollout_restarts_from_stage_one_after_a_new_approval(agent, owner):
    from reviews.models import Decision
    from reviews.services import approve_proposal

    first = start(agent, owner)
    proposal = Proposal.objects.get(pk=first.proposal_id)
    Decision.objects.create(
        proposal=proposal, reviewer=owner, kind=Decision.Kind.APPROVE, lock_version=0
    )
    services.halt_rollout(rollout_id=first.pk, actor=owner, reason="error spike")
    with pytest.raises(InvalidTransition):
        services.start_rollout(proposal_id=proposal.pk, actor=owner)  # no new approval yet

    # The approval given before the halt does not count: the same reviewer approves again.
    approved = approve_proposal(proposal_id=proposal.pk, reviewer=owner, comment="fixed the tool")
    assert approved.status == Proposal.Status.APPROVED
    again = services.start_rollout(proposal_id=proposal.pk, actor=owner)

    assert again.pk != first.pk and again.current_stage == 0
    assert [s.status for s in again.stages.order_by("index")] == ["running", "pending", "pending"]
    assert set(proposal.rollouts.values_list("status", flat=True)) == {"halted", "running"}
