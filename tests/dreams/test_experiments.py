"""Experiments: proposal hand-off, re-runs replay only missing slots, early stop, budget, batches."""

import io

import pytest
from django.core.management import call_command

from agents import services
from agents.models import Agent, Run
from dreams import signals
from dreams.experiments import sample_regression_runs, start_experiment
from dreams.models import Experiment, ModelCall, Proposal, Replay, ReplayBatch
from dreams.proposals import create_proposal
from dreams.simulated.transport import answer
from dreams.tasks import poll_replay_batches, run_experiment_task
from tests.factories import runs_tagged
from tests.fake_anthropic import FakeAnthropic, text

pytestmark = pytest.mark.django_db

WINDOW = "\nBefore issuing any refund, always check the refund window with check_refund_policy.\n"


@pytest.fixture
def demo_agent(db):
    call_command("seed_demo", runs=80, no_dream=True, stdout=io.StringIO())
    return Agent.objects.select_related("stable_version").get(slug="refunds-desk")


def candidate_with(agent, extra):
    stable = agent.stable_version
    return services.create_config_version(
        agent=agent,
        system_prompt=stable.system_prompt + extra,
        memory_documents=stable.memory_documents,
        tools=stable.tools,
        model=stable.model,
        parent=stable,
    )


def start(agent, candidate, callbacks, **kwargs):
    with callbacks(execute=True):
        experiment = start_experiment(
            agent=agent,
            baseline_version=agent.stable_version,
            candidate_version=candidate,
            **kwargs,
        )
    experiment.refresh_from_db()
    return experiment


def test_regression_sample_is_stratified_over_tool_profiles_and_time(demo_agent):
    target = runs_tagged(demo_agent, "past_window")
    sample = sample_regression_runs(
        agent=demo_agent, exclude_ids=[r.pk for r in target], size=20, seed=1
    )

    assert len(sample) == 20
    assert all(r.status == "success" for r in Run.objects.filter(pk__in=[r.pk for r in sample]))
    profiles = {
        tuple(b["name"] for m in r.messages for b in m["content"] if b["type"] == "tool_use")
        for r in sample
    }
    assert ("lookup_order", "issue_refund") in profiles and (
        "lookup_order",
        "escalate_to_human",
    ) in profiles
    ordered = sorted(
        Run.objects.filter(agent=demo_agent, status="success"), key=lambda r: r.started_at
    )
    middle = ordered[len(ordered) // 2].started_at
    assert any(r.started_at < middle for r in sample) and any(
        r.started_at >= middle for r in sample
    )


def test_a_finished_experiment_moves_its_proposal_to_ready_and_signals(
    demo_agent, django_capture_on_commit_callbacks
):
    candidate = candidate_with(demo_agent, WINDOW)
    proposal = create_proposal(
        agent=demo_agent,
        base_version=demo_agent.stable_version,
        candidate_version=candidate,
        title="Check the window",
    )
    received = []

    def on_ready(sender, proposal_id, **kwargs):
        received.append(("ready", proposal_id))

    def on_finished(sender, experiment_id, **kwargs):
        received.append(("finished", experiment_id))

    signals.proposal_ready.connect(on_ready)
    signals.experiment_finished.connect(on_finished)
    try:
        experiment = start(
            demo_agent,
            candidate,
            django_capture_on_commit_callbacks,
            target_runs=runs_tagged(demo_agent, "past_window"),
            proposal=proposal,
        )
    finally:
        signals.proposal_ready.disconnect(on_ready)
        signals.experiment_finished.disconnect(on_finished)

    proposal.refresh_from_db()
    assert experiment.status == "completed"
    assert proposal.status == Proposal.Status.READY
    assert proposal.expected_value > 0
    assert ("ready", proposal.pk) in received and ("finished", experiment.pk) in received
    assert set(experiment.stats) >= {
        "fidelity",
        "verdict",
        "overall",
        "target",
        "regression",
        "patterns",
        "early_stop",
        "pass_hat_k",
    }


def test_rerunning_an_interrupted_experiment_replays_only_the_missing_slots(
    demo_agent, django_capture_on_commit_callbacks
):
    target = runs_tagged(demo_agent, "past_window", 3)
    experiment = start(
        demo_agent,
        candidate_with(demo_agent, WINDOW),
        django_capture_on_commit_callbacks,
        target_runs=target,
        regression_runs=runs_tagged(demo_agent, "ok", 3),
    )
    assert experiment.status == "completed"
    # A crash half-way: the experiment is still running, one slot never created, one left
    # pending (never claimed: the chunk died before reaching it).
    Experiment.objects.filter(pk=experiment.pk).update(status="running")
    lost = Replay.objects.filter(experiment=experiment, arm="candidate").order_by("id")
    lost_run_id = lost[0].run_id
    lost[0].delete()
    pending = lost[1]
    Replay.objects.filter(pk=pending.pk).update(status="pending", verdict="", claimed_at=None)
    calls_before = set(ModelCall.objects.values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        run_experiment_task.delay(experiment.pk)

    experiment.refresh_from_db()
    new_calls = ModelCall.objects.exclude(pk__in=calls_before).filter(purpose="replay")
    touched = set(new_calls.values_list("replay__run_id", flat=True))
    assert touched == {lost_run_id, pending.run_id}
    assert experiment.status == "completed"
    assert Replay.objects.filter(experiment=experiment).count() == 12
    assert not Replay.objects.filter(experiment=experiment, status="pending").exists()


def test_early_stop_when_the_regression_set_clearly_regresses(
    demo_agent, fake_gateway_settings, settings, django_capture_on_commit_callbacks
):
    settings.REVERIE_REPLAY_CHUNK_SIZE = 10
    settings.REVERIE_REGRESSION_SAMPLE_SIZE = 40

    def broken_candidate(body):
        system = body.get("system") or []
        if "BROKEN" in str(system) and not body.get("tool_choice"):
            return FakeAnthropic.message([text("I can't help with refunds.")])
        return answer(body)

    fake_gateway_settings.responder = broken_candidate
    experiment = start(
        demo_agent,
        candidate_with(demo_agent, "\nBROKEN\n"),
        django_capture_on_commit_callbacks,
        target_runs=runs_tagged(demo_agent, "past_window"),
    )

    assert experiment.status == Experiment.Status.STOPPED_EARLY
    assert "Bonferroni over 4 planned looks" in experiment.stop_reason
    assert experiment.stats["verdict"] == "regresses"
    assert experiment.stats["early_stop"]["stopped"] is True
    # Spending stopped: the target runs were never replayed.
    target_slots = Replay.objects.filter(experiment=experiment, run_set="target")
    assert target_slots.exists() and not target_slots.exclude(status="pending").exists()
    assert experiment.stats["regression"]["regressions"] >= 8


def test_running_out_of_budget_fails_the_experiment_cleanly(
    demo_agent, django_capture_on_commit_callbacks, settings
):
    # About the budget, not the harness: a harness check that refuses the sampled runs would
    # finish the experiment before it spends anything.
    settings.REVERIE_HARNESS_CHECK = False
    demo_agent.monthly_token_budget = 30_000
    demo_agent.save(update_fields=["monthly_token_budget"])

    experiment = start(
        demo_agent,
        candidate_with(demo_agent, WINDOW),
        django_capture_on_commit_callbacks,
        target_runs=runs_tagged(demo_agent, "past_window"),
    )

    assert experiment.status == Experiment.Status.FAILED
    assert "budget" in experiment.error.lower()
    spent = sum(c.total_tokens for c in ModelCall.objects.filter(agent=demo_agent))
    assert 0 < spent <= 30_000
    assert Replay.objects.filter(experiment=experiment, error__contains="BudgetExceeded").exists()


def test_batch_mode_replays_through_message_batches(
    demo_agent, fake_gateway_settings, settings, django_capture_on_commit_callbacks
):
    settings.REVERIE_REPLAY_BATCH_MODE = True
    target = runs_tagged(demo_agent, "past_window", 4)

    experiment = start(
        demo_agent,
        candidate_with(demo_agent, WINDOW),
        django_capture_on_commit_callbacks,
        target_runs=target,
        regression_runs=runs_tagged(demo_agent, "ok", 4),
    )

    # The chunk submitted its first step and ended; beat's poller takes it from there.
    assert experiment.status == "running"
    for _ in range(20):
        if not ReplayBatch.objects.filter(experiment=experiment, status="open").exists():
            break
        with django_capture_on_commit_callbacks(execute=True):
            poll_replay_batches.apply()
    experiment.refresh_from_db()
    assert experiment.status == "completed", experiment.error
    assert experiment.stats["target"]["fixes"] == 4
    batch_posts = [r for r in fake_gateway_settings.requests if r.path == "/v1/messages/batches"]
    assert 2 <= len(batch_posts) <= 5  # one batch per replay step, not one per replay
    first = batch_posts[0].body["requests"][0]["params"]
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert ModelCall.objects.filter(experiment=experiment, purpose="replay").count() > 16


def test_futility_stops_spending_once_no_improvement_can_be_significant(
    demo_agent, settings, django_capture_on_commit_callbacks
):
    settings.REVERIE_REPLAY_CHUNK_SIZE = 5
    target = runs_tagged(demo_agent, "past_window")[:12]
    assert len(target) == 12

    experiment = start(
        demo_agent,
        candidate_with(demo_agent, "\nAlways end your message with 'Happy trails!'.\n"),
        django_capture_on_commit_callbacks,
        target_runs=target,
        regression_runs=runs_tagged(demo_agent, "ok", 10),
    )

    assert experiment.status == Experiment.Status.STOPPED_EARLY
    assert experiment.stats["early_stop"]["kind"] == "futility"
    assert experiment.stop_reason.startswith("Futility: 0 fixes")
    assert experiment.stats["verdict"] != "regresses"
    assert Replay.objects.filter(experiment=experiment, status="pending").count() == 2 * 2
    assert experiment.stats["model_backend"] == "simulated"


def test_an_unreachable_model_fails_replays_cleanly_and_a_rerun_recovers(
    demo_agent, fake_gateway_settings, django_capture_on_commit_callbacks
):
    fake_gateway_settings.fail(1000, status=529)
    candidate = candidate_with(demo_agent, WINDOW)
    target = runs_tagged(demo_agent, "past_window", 2)

    experiment = start(
        demo_agent,
        candidate,
        django_capture_on_commit_callbacks,
        target_runs=target,
        regression_runs=runs_tagged(demo_agent, "ok", 2),
    )

    assert experiment.status == Experiment.Status.FAILED
    assert "ModelUnavailable" in experiment.error
    slots = Replay.objects.filter(experiment=experiment)
    assert slots.count() == 8 and not slots.exclude(status="failed").exists()
    assert all("529" in s.error for s in slots)
    assert ModelCall.objects.filter(experiment=experiment, ok=False).count() == 8

    fake_gateway_settings.script.clear()
    with django_capture_on_commit_callbacks(execute=True):
        run_experiment_task.delay(experiment.pk)
    experiment.refresh_from_db()
    assert experiment.status == "completed" and experiment.stats["target"]["fixes"] == 2


def test_replays_run_concurrently_up_to_the_agent_limit(
    demo_agent, fake_gateway_settings, django_capture_on_commit_callbacks
):
    import threading
    import time

    demo_agent.replay_concurrency = 3
    demo_agent.save(update_fields=["replay_concurrency"])
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def counting(body):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return answer(body)

    fake_gateway_settings.responder = counting
    experiment = start(
        demo_agent,
        candidate_with(demo_agent, WINDOW),
        django_capture_on_commit_callbacks,
        target_runs=runs_tagged(demo_agent, "past_window", 4),
        regression_runs=runs_tagged(demo_agent, "ok", 4),
    )

    assert experiment.status == "completed"
    assert state["max"] == 3
