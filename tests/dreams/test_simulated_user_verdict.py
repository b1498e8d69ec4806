"""An untrusted simulated user changes the verdict, not only the warning.

When the baseline replays that a simulated user continued disagree with their recorded
outcomes beyond the fidelity threshold, improves / regresses / no_change may not rest on
simulated turns: the verdict is recomputed on the runs no simulated user touched and is
`noise` unless those runs alone say the same. Stats, proposal page, agent page and API agree.
"""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from dreams import stats
from dreams.experiments.evidence import compute_stats
from dreams.models import Replay
from tests.factories import ExperimentFactory, ProposalFactory, ReplayFactory, RunFactory

pytestmark = pytest.mark.django_db

SIMULATED = [3]  # the message index of a simulated user turn (what Replay.simulated_turns holds)


def _pair(run_id, recorded, baseline, candidate, *, simulated):
    pair = stats.RunPair(run_id=run_id, run_set="target", recorded_pass=recorded)
    for arm, verdict in ((pair.baseline, baseline), (pair.candidate, candidate)):
        arm.verdicts.append(verdict)
        arm.off_recording.append(False)
        arm.tokens.append(1000)
        arm.cost.append(0.0)
        arm.latency_ms.append(10)
        arm.simulated.append(simulated)
        arm.user_tokens.append(100 if simulated else 0)
    return pair


def _stats(pairs):
    return stats.experiment_stats(
        pairs, patterns={}, threshold=0.9, alpha=0.05, early_stop={"stopped": False}
    )


def _untrusted_fixes(fixes_without_simulator=0):
    """54 runs replayed as recorded, no simulated user; 6 runs the simulated user continued:
    their baseline fails where the recording passed (the simulator is not this user), their
    candidate passes — six 'fixes' that are only the simulator's doing."""
    pairs = [_pair(i, True, "pass", "pass", simulated=False) for i in range(54)]
    pairs += [_pair(100 + i, True, "fail", "pass", simulated=True) for i in range(6)]
    pairs += [
        _pair(200 + i, False, "fail", "pass", simulated=False)
        for i in range(fixes_without_simulator)
    ]
    return pairs


def test_an_untrusted_simulated_user_makes_the_verdict_noise():
    result = _stats(_untrusted_fixes())

    assert result["fidelity"] >= 0.9  # the replay fidelity alone would let the verdict stand
    check = result["simulated_user"]
    assert check["trusted"] is False and check["baseline_agreement"] == 0.0
    assert result["overall"]["fixes"] == 6 and result["overall"]["mcnemar_p"] < 0.05
    assert result["verdict"] == stats.NOISE
    assert "simulated user cannot be trusted for this agent" in result["verdict_reason"]
    assert "0 of 6" in result["verdict_reason"]
    assert check["verdict_without_check"] == stats.IMPROVES
    assert stats.NOISE in stats.NEEDS_ACKNOWLEDGEMENT  # approving it takes an acknowledgement


def test_the_verdict_stands_when_the_runs_without_a_simulated_user_show_it_alone():
    result = _stats(_untrusted_fixes(fixes_without_simulator=8))

    assert result["simulated_user"]["trusted"] is False
    assert result["verdict"] == stats.IMPROVES
    assert "Counted on the 62 runs no simulated user continued" in result["verdict_reason"]
    assert "the 6 runs it continued are left out" in result["verdict_reason"]
    assert result["simulated_user"]["verdict_without_check"] == ""
    assert result["simulated_user"]["verdict_on_untouched_runs"] is True


def test_a_trusted_simulated_user_leaves_the_verdict_alone():
    pairs = [_pair(i, True, "pass", "pass", simulated=False) for i in range(54)]
    pairs += [_pair(100 + i, False, "fail", "pass", simulated=True) for i in range(6)]

    result = _stats(pairs)

    assert result["simulated_user"]["trusted"] is True
    assert result["verdict"] == stats.IMPROVES
    assert "simulated" not in result["verdict_reason"]


def test_pages_and_api_say_the_simulated_user_cannot_be_trusted(client, reviewer, agent):
    """Real replay rows through compute_stats, then the proposal page, agent page and API."""
    proposal = ProposalFactory(agent=agent)
    experiment = ExperimentFactory(proposal=proposal, stats={})
    for index in range(60):
        simulated = index >= 54
        run = RunFactory(agent=agent, status="success")
        for arm, verdict in (
            (Replay.Arm.BASELINE, "fail" if simulated else "pass"),
            (Replay.Arm.CANDIDATE, "pass"),
        ):
            ReplayFactory(
                experiment=experiment,
                run=run,
                arm=arm,
                verdict=verdict,
                simulated_turns=SIMULATED if simulated else [],
                simulated_user_tokens=120 if simulated else 0,
            )
    experiment.stats = compute_stats(experiment)
    experiment.save(update_fields=["stats"])
    assert experiment.stats["verdict"] == stats.NOISE

    client.force_login(reviewer)
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert "simulated user cannot be trusted for this agent" in page
    assert "The verdict is therefore <strong>Noise</strong>, not Improves" in page

    agent_page = client.get(reverse("agent-detail", args=[agent.slug])).content.decode()
    assert 'id="agent-simulated-user"' in agent_page
    assert "The simulator cannot be trusted here" in agent_page

    api = APIClient()
    api.force_authenticate(reviewer)
    body = api.get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["verdict"] == "noise"
    assert "simulated user cannot be trusted" in body["stats"]["verdict_reason"]
    assert body["stats"]["simulated_user"]["verdict_without_check"] == "improves"
