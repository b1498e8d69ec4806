import pytest
from django.urls import reverse

from dreams.models import Proposal
from tests.factories import (
    AgentFactory,
    ConfigVersionFactory,
    experiment_stats,
    reviewable_proposal,
)

pytestmark = pytest.mark.django_db


def _rows(html: str) -> int:
    return html.count('class="queue-row"')


def test_queue_is_the_home_page_and_orders_by_expected_value(client, reviewer, agent):
    low = reviewable_proposal(agent=agent, title="Low value edit", expected_value=0.5, runs=1)
    high = reviewable_proposal(agent=agent, title="High value edit", expected_value=4.0, runs=1)
    client.force_login(reviewer)
    html = client.get("/").content.decode()
    assert html.index(high.title) < html.index(low.title)
    assert _rows(html) == 2


def test_queue_shows_fixes_regressions_pass_rates_and_p_value_from_stats(client, reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    proposal.experiments.update(stats=experiment_stats(fixes=5, regressions=1))
    client.force_login(reviewer)
    html = client.get("/").content.decode()
    # Target 0/8 → 5/8 (5 fixes); the regression sample loses 1 of 10; overall +5 / −1.
    assert '+5</span> / <span class="regr">−1' in html and "0% → <strong>62%</strong>" in html
    assert "1 broken of 10" in html
    assert "0.031" in html


def test_queue_filters_by_agent_and_keeps_other_workspaces_out(
    client, reviewer, agent, other_workspace
):
    other_agent = AgentFactory(workspace=agent.workspace, slug="billing", name="Billing")
    reviewable_proposal(agent=agent, title="Support edit", runs=1)
    reviewable_proposal(agent=other_agent, title="Billing edit", runs=1)
    stranger = AgentFactory(workspace=other_workspace, slug="x", name="Stranger")
    reviewable_proposal(agent=stranger, title="Foreign edit", runs=1)
    client.force_login(reviewer)
    html = client.get("/?agent=billing").content.decode()
    assert "Billing edit" in html and "Support edit" not in html
    assert "Foreign edit" not in client.get("/?status=all").content.decode()


def test_queue_filters_by_flag_code(client, reviewer, agent):
    reviewable_proposal(
        agent=agent,
        title="Flagged edit",
        runs=1,
        flags=[{"code": "possible_injection", "message": "copied from a tool result"}],
    )
    reviewable_proposal(agent=agent, title="Clean edit", runs=1)
    client.force_login(reviewer)
    flagged = client.get("/?flag=possible_injection").content.decode()
    assert "Flagged edit" in flagged and "Clean edit" not in flagged
    clean = client.get("/?flag=none").content.decode()
    assert "Clean edit" in clean and "Flagged edit" not in clean
    assert "Clean edit" not in client.get("/?flag=protected_section").content.decode()


def test_queue_counts_per_status_and_status_tab(client, reviewer, agent):
    reviewable_proposal(agent=agent, runs=1)
    rejected = reviewable_proposal(agent=agent, title="Old rejected", runs=1)
    Proposal.objects.filter(pk=rejected.pk).update(status="rejected")
    client.force_login(reviewer)
    response = client.get("/")
    tabs = {code: n for code, _, n, _ in response.context["tabs"]}
    assert tabs["ready"] == 1 and tabs["rejected"] == 1 and tabs["all"] == 2
    assert "Old rejected" in client.get("/?status=rejected").content.decode()


def test_queue_htmx_request_returns_only_the_results_partial(client, reviewer, agent):
    reviewable_proposal(agent=agent, runs=1)
    client.force_login(reviewer)
    html = client.get("/?sort=age", headers={"HX-Request": "true"}).content.decode()
    assert html.lstrip().startswith('<div id="queue-results">')
    assert "<html" not in html


def test_queue_sorts_by_age_oldest_first(client, reviewer, agent):
    from datetime import timedelta

    from django.utils import timezone

    newer = reviewable_proposal(agent=agent, title="Newer one", runs=1, expected_value=9)
    older = reviewable_proposal(agent=agent, title="Older one", runs=1, expected_value=1)
    Proposal.objects.filter(pk=older.pk).update(ready_at=timezone.now() - timedelta(days=3))
    client.force_login(reviewer)
    html = client.get("/?sort=age").content.decode()
    assert html.index(older.title) < html.index(newer.title)


def test_queue_paginates(client, reviewer, agent):
    base = ConfigVersionFactory(agent=agent)
    Proposal.objects.bulk_create(
        [
            Proposal(
                agent=agent,
                base_version=base,
                candidate_version=base,
                title=f"P{i}",
                status="ready",
            )
            for i in range(30)
        ]
    )
    client.force_login(reviewer)
    first = client.get("/").content.decode()
    second = client.get("/?page=2").content.decode()
    assert _rows(first) == 25 and _rows(second) == 5


def test_empty_queue_explains_what_will_appear(client, reviewer, agent):
    client.force_login(reviewer)
    html = client.get("/").content.decode()
    assert "Nothing to review" in html


def test_anonymous_visitor_is_sent_to_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_queue_shows_partial_approvals(client, reviewer, agent):
    from reviews.services import approve_proposal

    agent.required_approvals = 2
    agent.save(update_fields=["required_approvals"])
    proposal = reviewable_proposal(agent=agent, runs=1)
    approve_proposal(proposal_id=proposal.pk, reviewer=reviewer)
    client.force_login(reviewer)
    assert "1 of 2 approvals" in client.get("/").content.decode()


def test_queue_warns_about_a_high_off_recording_share(client, reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    stats = experiment_stats()
    stats["overall"]["off_recording_share"] = 0.35
    proposal.experiments.update(stats=stats)
    client.force_login(reviewer)
    assert "off-recording 35%" in client.get("/").content.decode()


def test_queue_filters_proposals_assigned_to_me(client, reviewer, second_reviewer, agent):
    from reviews.services import assign_proposal

    mine = reviewable_proposal(agent=agent, runs=1, title="Mine to review")
    theirs = reviewable_proposal(agent=agent, runs=1, title="Someone else's")
    reviewable_proposal(agent=agent, runs=1, title="Up for grabs")
    assign_proposal(proposal_id=mine.pk, actor=reviewer, assignee=reviewer)
    assign_proposal(proposal_id=theirs.pk, actor=reviewer, assignee=second_reviewer)
    client.force_login(reviewer)
    html = client.get("/?assigned=me").content.decode()
    assert "Mine to review" in html and "Someone else" not in html and "Up for grabs" not in html
    html = client.get("/?assigned=nobody").content.decode()
    assert "Up for grabs" in html and "Mine to review" not in html
