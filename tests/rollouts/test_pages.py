"""Rollout pages: list, live rollout page and its htmx partial, actions and permissions."""

import random
from datetime import timedelta

import pytest

from rollouts import services
from rollouts.models import Rollout
from tests.rollouts.fixtures import age_stage, approved_proposal, seed_runs

pytestmark = pytest.mark.django_db


@pytest.fixture
def rollout(agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    return services.start_rollout(
        proposal_id=proposal.pk, actor=owner, min_runs=10, min_duration=timedelta(minutes=30)
    )


def test_the_list_offers_approved_proposals_and_lists_rollouts(
    client, reviewer, agent, owner, rollout
):
    waiting = approved_proposal(agent, actor=owner)
    client.force_login(reviewer)
    page = client.get("/rollouts/").content.decode()
    assert f"/rollouts/start/{waiting.pk}/" in page
    assert f"/rollouts/{rollout.pk}/" in page


def test_starting_from_the_list_redirects_to_the_rollout(client, reviewer, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    client.force_login(reviewer)
    response = client.post(f"/rollouts/start/{proposal.pk}/")
    rollout = Rollout.objects.get(proposal=proposal)
    assert response.status_code == 302 and response["Location"] == f"/rollouts/{rollout.pk}/"


def test_approve_is_disabled_and_says_why_until_the_minimums_are_met(
    client, reviewer, rollout, agent
):
    client.force_login(reviewer)
    page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "disabled>Approve next stage" in page
    assert "0 of 10 canary runs so far" in page and "left of the minimum duration" in page
    age_stage(rollout, minutes=31)
    seed_runs(agent=agent, version=rollout.to_version, n=10, success=1.0, rng=random.Random(1))
    page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert f'action="/rollouts/{rollout.pk}/approve/"' in page and "disabled>Approve" not in page


def test_the_htmx_poll_returns_only_the_live_partial(client, reviewer, rollout):
    client.force_login(reviewer)
    response = client.get(f"/rollouts/{rollout.pk}/", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="rollout-live"')
    assert 'hx-trigger="every 5s"' in body and "<html" not in body
    assert "Traffic split" in body


def test_posting_approve_too_early_leaves_the_stage_and_shows_why(client, reviewer, rollout):
    client.force_login(reviewer)
    response = client.post(f"/rollouts/{rollout.pk}/approve/", follow=True)
    assert "cannot advance yet" in response.content.decode()
    assert Rollout.objects.get(pk=rollout.pk).current_stage == 0


def test_halt_from_the_page_returns_traffic_to_stable(client, reviewer, rollout, agent):
    client.force_login(reviewer)
    client.post(f"/rollouts/{rollout.pk}/halt/", {"reason": "halted by hand", "confirm": "1"})
    agent.refresh_from_db()
    assert agent.canary_version_id is None
    page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "Halted" in page and "hx-trigger" not in page


def test_a_viewer_sees_the_rollout_but_cannot_act(client, viewer, rollout):
    client.force_login(viewer)
    page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "Approve next stage" not in page
    assert client.post(f"/rollouts/{rollout.pk}/halt/").status_code == 403
    assert Rollout.objects.get(pk=rollout.pk).is_active


def test_another_workspace_cannot_see_or_touch_the_rollout(client, outsider, rollout):
    client.force_login(outsider)
    assert client.get(f"/rollouts/{rollout.pk}/").status_code == 404
    assert client.post(f"/rollouts/{rollout.pk}/halt/").status_code == 404
    assert client.get(f"/rollouts/agents/{rollout.agent.slug}/split/").status_code == 404


def test_the_agent_split_partial_shows_the_current_percentages(client, viewer, rollout, agent):
    client.force_login(viewer)
    page = client.get(f"/rollouts/agents/{agent.slug}/split/").content.decode()
    assert (
        "v1" in page and "95%" in page and f"v{rollout.to_version.number}" in page and "5%" in page
    )


def test_the_rollout_page_makes_a_fixed_number_of_queries(
    client, reviewer, rollout, agent, django_assert_max_num_queries
):
    age_stage(rollout, minutes=5)
    rng = random.Random(2)
    seed_runs(agent=agent, version=rollout.from_version, n=300, success=0.9, rng=rng)
    seed_runs(agent=agent, version=rollout.to_version, n=60, success=0.9, rng=rng)
    client.force_login(reviewer)
    with django_assert_max_num_queries(40):
        page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert "Sequential test: look 1 on the first 50 canary runs" in page
    assert "next look is at 100" in page
    assert "Canary check: <strong>ok</strong>" in page


def test_the_proposal_page_offers_the_rollout_through_its_slot(client, reviewer, agent, owner):
    proposal = approved_proposal(agent, actor=owner)
    client.force_login(reviewer)
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert f'action="/rollouts/start/{proposal.pk}/"' in page and "csrfmiddlewaretoken" in page


def test_the_agent_page_loads_the_traffic_split_through_its_slot(client, reviewer, agent):
    client.force_login(reviewer)
    page = client.get(f"/agents/{agent.slug}/").content.decode()
    assert f'hx-get="/rollouts/agents/{agent.slug}/split/"' in page


def test_halt_and_roll_back_ask_for_a_reason_and_a_confirmation(client, reviewer, rollout, agent):
    from agents.models import AuditEvent

    client.force_login(reviewer)
    page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert 'id="halt-reason"' in page and 'id="halt-check"' in page and "required" in page
    assert f'href="/proposals/{rollout.proposal_id}/"' in page  # the rollout links its proposal

    client.post(f"/rollouts/{rollout.pk}/halt/", {"reason": "spike"})  # not confirmed
    client.post(f"/rollouts/{rollout.pk}/roll-back/", {"confirm": "1"})  # no reason
    assert Rollout.objects.get(pk=rollout.pk).status == Rollout.Status.RUNNING

    client.post(f"/rollouts/{rollout.pk}/halt/", {"reason": "error spike", "confirm": "1"})
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.HALTED and rollout.halt_reason == "error spike"
    assert AuditEvent.objects.get(action="rollout.halt").comment == "error spike"
    proposal_page = client.get(f"/proposals/{rollout.proposal_id}/").content.decode()
    assert f'href="/rollouts/{rollout.pk}/"' in proposal_page  # and the proposal its rollout
    assert 'id="reapprove-button"' in proposal_page


def test_approvals_given_before_a_halt_are_not_counted_on_pages_or_the_api(
    client, api, agent, owner, reviewer
):
    """Two approvals required; both were given before the halt, one is given again after."""
    from dreams.models import Proposal
    from reviews.models import Decision
    from reviews.services import approve_proposal

    agent.required_approvals = 2
    agent.save(update_fields=["required_approvals"])
    proposal = approved_proposal(agent)  # no author: both may approve
    for person in (owner, reviewer):
        Decision.objects.create(
            proposal=proposal, reviewer=person, kind=Decision.Kind.APPROVE, lock_version=0
        )
    rollout = services.start_rollout(proposal_id=proposal.pk, actor=owner, min_runs=0)
    services.halt_rollout(rollout_id=rollout.pk, actor=owner, reason="error spike")
    approve_proposal(proposal_id=proposal.pk, reviewer=owner, comment="fixed")
    assert Proposal.objects.get(pk=proposal.pk).status == Proposal.Status.HALTED  # 1 of 2

    client.force_login(reviewer)
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert "Approvals: <strong>1 of 2</strong> · olive-owner</p>" in page
    assert "2 of 2" not in page
    queue = client.get("/?status=all").content.decode()
    assert "1 of 2 approvals" in queue and "2 of 2" not in queue
    assert api.get(f"/api/v1/proposals/{proposal.pk}").json()["approvals"] == 1
    listed = api.get("/api/v1/proposals", {"status": "halted"}).json()["results"]
    assert [p["approvals"] for p in listed] == [1]
