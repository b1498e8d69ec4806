"""The harness check: the recorded model replays runs' own turns through the real SDK, no tokens."""

import pytest

from agents.transcripts import step_message_indices, to_canonical
from dreams.experiments import start_experiment
from dreams.harness import check_harness
from dreams.llm import Gateway
from dreams.models import Experiment, ModelCall
from dreams.replay import replay
from tests.dreams.test_tool_pairing import openai_run
from tests.factories import ConfigVersionFactory, ProposalFactory, RunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def airline_runs(agent):
    messages = to_canonical(openai_run())["messages"]
    return [
        RunFactory(agent=agent, external_id=f"air-{i}", messages=messages, status=status)
        for i, status in enumerate(["success", "failure", "success"])
    ]


def test_the_recorded_model_replays_the_runs_own_turns_through_the_sdk(agent, airline_runs):
    run = airline_runs[0]
    gateway = Gateway(backend="recorded")
    gateway.recordings.add(run)

    result = replay(run, ConfigVersionFactory(agent=agent, number=2), gateway=gateway)

    recorded = [run.messages[i]["content"] for i in step_message_indices(run.messages)]
    replayed = [m["content"] for m in result.messages if m["role"] == "assistant"]
    assert replayed[: len(recorded)] == recorded
    assert {c["source"] for c in result.tool_calls} == {"recording"}
    assert result.divergence_kind == "" and result.total_tokens == 0 and result.cost_usd == 0
    assert not ModelCall.objects.exists()  # recorded turns are not model calls


def test_in_process_the_recorded_model_replays_exactly_as_through_the_sdk(agent, airline_runs):
    version = ConfigVersionFactory(agent=agent, number=2)
    results = []
    for in_process in (False, True):
        gateway = Gateway(backend="recorded", in_process=in_process)
        for run in airline_runs:
            gateway.recordings.add(run)
        results.append([replay(run, version, gateway=gateway) for run in airline_runs])

    through_sdk, direct = results
    for a, b in zip(through_sdk, direct, strict=True):
        assert a.messages == b.messages and a.tool_calls == b.tool_calls
        assert (a.stop_reason, a.model_stop_reason, a.divergence_kind) == (
            b.stop_reason,
            b.model_stop_reason,
            b.divergence_kind,
        )


def test_a_faithful_harness_reproduces_every_recorded_outcome(agent, airline_runs):
    check = check_harness(runs=airline_runs, version=agent.stable_version)

    assert (check["fidelity"], check["can_judge"], check["tokens"]) == (1.0, True, 0)
    assert check["disagreements"] == [] and check["checked"] == 3


def test_graders_that_disagree_with_the_recordings_are_named_per_grader(agent, airline_runs):
    # The benchmark said pass, but the expectations want a call the agent never made.
    for run in airline_runs[:2]:
        run.expectations = {"expected_tools": ["update_reservation_baggages"]}
        run.save(update_fields=["expectations"])

    check = check_harness(runs=airline_runs, version=agent.stable_version)

    assert check["fidelity"] == pytest.approx(2 / 3) and not check["can_judge"]
    assert check["graders"]["expectations"] == {"n": 2, "agree": 1, "agreement": 0.5}
    (miss,) = check["disagreements"]
    assert miss["external_id"] == "air-0" and miss["grader"] == "expectations"
    assert "update_reservation_baggages" in miss["reason"] and "recorded pass" in miss["reason"]
    assert "cannot judge this agent" in check["summary"]


def test_below_the_threshold_the_experiment_spends_no_tokens_and_gives_no_verdict(
    agent, airline_runs, client, owner, django_capture_on_commit_callbacks
):
    for run in airline_runs:
        run.expectations = {"expected_answer_pattern": "no such answer"}
        run.save(update_fields=["expectations"])
    proposal = ProposalFactory(agent=agent, status="drafted")

    with django_capture_on_commit_callbacks(execute=True):
        start_experiment(
            agent=agent,
            baseline_version=proposal.base_version,
            candidate_version=proposal.candidate_version,
            target_runs=airline_runs,
            regression_runs=[],
            proposal=proposal,
        )

    experiment = Experiment.objects.get(proposal=proposal)
    assert experiment.harness_check["fidelity"] == pytest.approx(1 / 3)
    assert experiment.stats["verdict"] == "not_measurable"
    assert not ModelCall.objects.filter(purpose="replay").exists()
    client.force_login(owner)
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert "the harness cannot judge this agent" in page
    assert "air-0" in client.get(f"/agents/{agent.slug}/").content.decode()
