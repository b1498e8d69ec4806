"""Experiments on the seeded demo data, through the real SDK and the simulated model."""

import io

import pytest
from django.core.management import call_command

from agents import services
from agents.models import Agent
from dreams.experiments import start_experiment
from dreams.models import Experiment, ModelCall, Replay
from tests.factories import runs_tagged

pytestmark = pytest.mark.django_db

WINDOW_GUIDANCE = (
    "\n## Refund window\n"
    "Before issuing any refund, always check the refund window with check_refund_policy, "
    "and politely decline orders that are not eligible.\n"
)
UNRELATED_GUIDANCE = "\n## Sign-off\nAlways end your message with 'Happy trails!'.\n"


@pytest.fixture
def demo_agent(db):
    call_command("seed_demo", no_dream=True, stdout=io.StringIO())
    return Agent.objects.select_related("stable_version").get(slug="refunds-desk")


def candidate_with(agent, extra: str):
    stable = agent.stable_version
    return services.create_config_version(
        agent=agent,
        system_prompt=stable.system_prompt + extra,
        memory_documents=stable.memory_documents,
        tools=stable.tools,
        model=stable.model,
        parent=stable,
    )


def run_experiment_on(agent, candidate, target, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        experiment = start_experiment(
            agent=agent,
            baseline_version=agent.stable_version,
            candidate_version=candidate,
            target_runs=target,
        )
    experiment.refresh_from_db()
    return experiment


def test_window_guidance_fixes_most_past_window_failures_without_regressions(
    demo_agent, django_capture_on_commit_callbacks
):
    target = runs_tagged(demo_agent, "past_window")
    assert len(target) >= 10
    candidate = candidate_with(demo_agent, WINDOW_GUIDANCE)

    experiment = run_experiment_on(
        demo_agent, candidate, target, django_capture_on_commit_callbacks
    )

    assert experiment.status == Experiment.Status.COMPLETED, experiment.error
    stats = experiment.stats
    assert stats["fidelity"] >= 0.9
    assert stats["target"]["fixes"] >= 0.8 * len(target)
    assert stats["regression"]["regressions"] == 0
    assert stats["overall"]["regressions"] == 0
    assert stats["verdict"] == "improves"
    assert stats["target"]["mcnemar_p"] < 0.001
    assert stats["target"]["off_recording_share"] == 0
    fixed = Replay.objects.filter(experiment=experiment, arm="candidate", run_set="target").first()
    assert [c["source"] for c in fixed.tool_calls][:2] == ["recording", "sandbox"]
    assert ModelCall.objects.filter(experiment=experiment, purpose="replay").exists()
    agreement = stats["judge_agreement"]
    assert agreement["n"] > 0 and agreement["agreement"] == 1.0, agreement


def test_unrelated_candidate_fixes_nothing(demo_agent, django_capture_on_commit_callbacks):
    target = runs_tagged(demo_agent, "past_window")
    candidate = candidate_with(demo_agent, UNRELATED_GUIDANCE)

    experiment = run_experiment_on(
        demo_agent, candidate, target, django_capture_on_commit_callbacks
    )

    stats = experiment.stats
    assert stats["fidelity"] >= 0.9
    assert stats["overall"]["fixes"] == 0
    assert stats["overall"]["regressions"] == 0
    assert stats["verdict"] == "no_change"


VERIFY_GUIDANCE = (
    "\nAlways look up the order with lookup_order before issuing any refund, "
    "even if the customer asks you to skip it.\n"
)
RESOLVE_GUIDANCE = (
    "\nDo not escalate just because a customer is upset; resolve standard refunds yourself.\n"
)


@pytest.fixture
def small_demo_agent(db):
    call_command("seed_demo", runs=120, no_dream=True, stdout=io.StringIO())
    return Agent.objects.select_related("stable_version").get(slug="refunds-desk")


def test_verification_guidance_fixes_unverified_refunds_through_the_read_only_sandbox(
    small_demo_agent, django_capture_on_commit_callbacks
):
    target = runs_tagged(small_demo_agent, "unverified")
    candidate = candidate_with(small_demo_agent, VERIFY_GUIDANCE)

    experiment = run_experiment_on(
        small_demo_agent, candidate, target, django_capture_on_commit_callbacks
    )

    block = experiment.stats["target"]
    assert block["fixes"] == len(target) and experiment.stats["overall"]["regressions"] == 0
    # The new lookup was never recorded: the demo's read-only sandbox answers it from the order
    # snapshot, and the refund that follows matches the recorded call exactly.
    assert block["off_recording_share"] == 0.0
    replay = Replay.objects.filter(experiment=experiment, arm="candidate", run_set="target").first()
    assert [(c["name"], c["source"]) for c in replay.tool_calls] == [
        ("lookup_order", "sandbox"),
        ("issue_refund", "recording"),
    ]


def test_resolve_guidance_on_escalated_runs_stops_at_the_unrecorded_refund(
    small_demo_agent, django_capture_on_commit_callbacks
):
    target = runs_tagged(small_demo_agent, "angry")
    candidate = candidate_with(small_demo_agent, RESOLVE_GUIDANCE)

    experiment = run_experiment_on(
        small_demo_agent, candidate, target, django_capture_on_commit_callbacks
    )

    block = experiment.stats["target"]
    # The candidate stops escalating and looks the order up (sandbox), then wants to issue a
    # refund that was never recorded: a write with new arguments is never executed in replay,
    # so the run is unverifiable rather than an invented fix.
    assert block["fixes"] == 0 and block["unverifiable_share"] == 1.0
    replay = Replay.objects.filter(experiment=experiment, arm="candidate", run_set="target").first()
    assert [(c["name"], c["source"]) for c in replay.tool_calls] == [
        ("lookup_order", "sandbox"),
        ("issue_refund", "unverifiable"),
    ]
    assert replay.verdict == Replay.Verdict.UNVERIFIABLE
