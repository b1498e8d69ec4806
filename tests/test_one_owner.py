"""One owner per concept: where two copies used to give two answers, they now agree.

Each test names the former disagreement it pins down.
"""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from dreams import scheduling, spend
from dreams.experiments import judging_runs, start_proposal_experiment
from dreams.llm.base import BudgetExceeded, CallContext
from dreams.llm.budget import BudgetGuard
from dreams.models import DreamCycle, ModelCall, Proposal
from reviews.services import edit_proposal
from tests.factories import DreamCycleFactory, ProposalFactory, RunFactory

pytestmark = pytest.mark.django_db


def _call(agent: Any, purpose: str, *, tokens: int = 0, cost: str = "0", **links: Any) -> ModelCall:
    return ModelCall.objects.create(
        agent=agent, purpose=purpose, model="m", input_tokens=tokens, cost_usd=cost, **links
    )


# -- one spend definition ------------------------------------------------------------------


def test_the_agent_page_and_the_api_report_the_same_dreaming_spend(client, api, viewer, agent):
    """Was: the page summed every purpose, the API only dream and hosted-dream calls."""
    _call(agent, "dream", cost="0.10")
    _call(agent, "replay", cost="0.25")
    _call(agent, "judge", cost="0.05")
    RunFactory(agent=agent, cost_usd="2.00")

    client.force_login(viewer)
    page = client.get(reverse("agent-spend", args=[agent.slug])).context["spend"]
    body = api.get(f"/api/v1/agents/{agent.slug}/dreaming-spend?days=30").json()

    assert page["dreaming"] == Decimal("0.40") == Decimal(body["dreaming_cost_usd"])
    assert page["production"] == Decimal("2.00") == Decimal(body["production_cost_usd"])


# -- one token counter behind both caps ------------------------------------------------------


def test_the_scheduler_and_the_gateway_count_the_same_monthly_tokens(agent):
    """Was: the scheduler counted dream calls only, so it started cycles that the gateway's
    monthly cap (every purpose) then refused call by call."""
    agent.monthly_token_budget = 1_000
    agent.save()
    _call(agent, "replay", tokens=5_000)

    assert scheduling.blocked_reason(agent=agent, now=timezone.now()) == "monthly budget spent"
    with pytest.raises(BudgetExceeded, match="monthly"):
        BudgetGuard().check(CallContext(agent=agent, purpose="dream"), estimate=1)


def test_a_cycles_cap_counts_its_proposals_replays_between_steps_as_the_gateway_does(agent):
    """Was: the check between a cycle's steps counted the cycle's own calls only, the gateway
    also its proposals' experiments."""
    agent.cycle_token_budget = 1_000
    agent.save()
    cycle = DreamCycleFactory(agent=agent, status=DreamCycle.Status.RUNNING, finished_at=None)
    proposal = ProposalFactory(agent=agent, cycle=cycle, status=Proposal.Status.REPLAYING)
    experiment = start_proposal_experiment(proposal)
    _call(agent, "replay", tokens=2_000, experiment=experiment)

    assert spend.cycle_usage(cycle)["tokens"] == 2_000
    with pytest.raises(spend.CapReached) as reached:
        spend.ensure_cycle_budget(cycle=cycle)
    assert reached.value.code == "cycle_token_cap"
    with pytest.raises(BudgetExceeded, match="cycle"):
        BudgetGuard().check(CallContext(agent=agent, purpose="dream", cycle=cycle), estimate=1)


# -- one experiment starter ------------------------------------------------------------------


def test_an_edit_before_any_replay_is_judged_on_the_held_out_runs(agent, reviewer):
    """Was: an edit copied the previous experiment's targets, and with no experiment yet it
    replayed on no runs at all; the cycle judged the same proposal on its held-out runs."""
    studied = [RunFactory(agent=agent, status="failure") for _ in range(4)]
    heldout = studied[2:]
    cycle = DreamCycleFactory(agent=agent)
    cycle.runs.set(studied)
    proposal = ProposalFactory(
        agent=agent,
        cycle=cycle,
        base_version=agent.stable_version,
        status=Proposal.Status.CHANGES_REQUESTED,
        metadata={"heldout_run_ids": [r.pk for r in heldout]},
    )
    assert judging_runs(proposal) == heldout  # not the four runs the cycle studied

    revision = edit_proposal(
        proposal_id=proposal.pk,
        editor=reviewer,
        system_prompt="Always look the order up before refunding.",
        memory_documents={},
    )

    experiment = revision.experiments.get()
    assert list(experiment.target_runs.order_by("id")) == heldout
    # And an edit of that revision keeps the same runs (they judged the text it replaces).
    assert judging_runs(revision) == heldout


def test_a_rebase_and_an_edit_judge_on_the_runs_that_judged_the_text_they_replace(agent):
    runs = [RunFactory(agent=agent, status="failure") for _ in range(3)]
    first = ProposalFactory(agent=agent, base_version=agent.stable_version)
    experiment = start_proposal_experiment(first)
    experiment.target_runs.set(runs[:2])
    later = ProposalFactory(
        agent=agent, revision_of=first, metadata={"target_run_ids": [runs[2].pk]}
    )

    assert judging_runs(later) == runs[:2]


# -- negative feedback and documents on the models they describe ----------------------------


def test_every_step_reads_the_same_negative_comments_from_the_run(agent):
    """Was: grading took the latest non-blank comment, pattern grouping the first non-empty
    one in query order (a whitespace-only comment included)."""
    from agents.models import Feedback
    from dreams import patterns

    run = RunFactory(agent=agent, status="failure", outcome_reason="")
    old = Feedback.objects.create(run=run, rating="negative", comment="Refunded without a check")
    blank = Feedback.objects.create(run=run, rating="negative", comment="   ")
    Feedback.objects.create(run=run, rating="positive", comment="polite")
    Feedback.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    Feedback.objects.filter(pk=blank.pk).update(created_at=timezone.now() - timedelta(hours=1))
    run.refresh_from_db()

    assert run.negative_comments() == ["Refunded without a check"]
    assert run.negative_comment() == "Refunded without a check"
    assert patterns.signature(run).endswith("feedback refunded without a check")


def test_a_versions_documents_are_its_prompt_then_its_memory(agent):
    from agents.models import SYSTEM_PROMPT_DOCUMENT

    version = agent.stable_version
    assert version.documents == {
        SYSTEM_PROMPT_DOCUMENT: version.system_prompt,
        **version.memory_documents,
    }
