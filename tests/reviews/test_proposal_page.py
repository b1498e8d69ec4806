import pytest
from django.urls import reverse

from dreams.models import Replay
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db


@pytest.fixture
def proposal(agent):
    return reviewable_proposal(agent=agent, runs=3)


def test_proposal_page_shows_word_level_diff_metrics_and_chart(client, reviewer, proposal):
    client.force_login(reviewer)
    response = client.get(reverse("proposal-detail", args=[proposal.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    # The added verification section appears as added lines, with word highlights in the memory doc.
    assert "<ins>" in html and "Always call lookup_order before issuing any refund" in html
    assert "policies/refunds.md" in html
    assert "<svg" in html and "Target runs" in html
    assert "McNemar" in html
    assert "simulated model" in html


def test_split_view_renders_pairs(client, reviewer, proposal):
    client.force_login(reviewer)
    html = client.get(
        reverse("proposal-detail", args=[proposal.pk]) + "?view=split"
    ).content.decode()
    assert "diff-split" in html


def test_replay_filter_by_outcome_returns_only_that_outcome(client, reviewer, proposal):
    client.force_login(reviewer)
    url = reverse("proposal-detail", args=[proposal.pk]) + "?outcome=fixed"
    response = client.get(url, headers={"HX-Request": "true", "HX-Target": "replay-list"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="replay-list">')
    # 3 target runs alternate fixed/still failing: runs 0 and 2 are fixed.
    assert html.count('class="replay-row"') == 2


def test_replay_detail_shows_three_trajectories_with_divergence(client, reviewer, proposal):
    client.force_login(reviewer)
    replay = Replay.objects.filter(experiment__proposal=proposal, arm="candidate").first()
    url = reverse("replay-detail", args=[proposal.pk, replay.run_id])
    html = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Recorded" in html and "Baseline replay" in html and "Candidate replay" in html
    assert "diverges here" in html
    assert "<html" not in html


def test_proposal_page_links_to_neighbours_in_queue_order(client, reviewer, agent):
    top = reviewable_proposal(agent=agent, runs=1, expected_value=5)
    middle = reviewable_proposal(agent=agent, runs=1, expected_value=3)
    bottom = reviewable_proposal(agent=agent, runs=1, expected_value=1)
    client.force_login(reviewer)
    context = client.get(reverse("proposal-detail", args=[middle.pk])).context
    assert context["neighbours"] == {"previous": top.pk, "next": bottom.pk}
    assert client.get(reverse("proposal-detail", args=[top.pk])).context["neighbours"] == {
        "previous": None,
        "next": middle.pk,
    }


def test_proposal_without_experiment_says_so(client, reviewer, agent):
    from tests.factories import ProposalFactory

    proposal = ProposalFactory(agent=agent, status="drafted")
    client.force_login(reviewer)
    html = client.get(reverse("proposal-detail", args=[proposal.pk])).content.decode()
    assert "No experiment has replayed this proposal yet" in html
    assert 'id="approve-button"' not in html


def test_flag_explanations_and_admin_note_are_shown(client, reviewer, agent):
    proposal = reviewable_proposal(
        agent=agent,
        runs=1,
        flags=[{"code": "protected_section", "message": "Edits the Compliance section"}],
    )
    client.force_login(reviewer)
    html = client.get(reverse("proposal-detail", args=[proposal.pk])).content.decode()
    assert "Edits the Compliance section" in html
    assert "only a workspace admin can decide" in html
    assert 'id="approve-button" disabled' in html


def test_viewer_cannot_open_the_edit_page(client, viewer, proposal):
    client.force_login(viewer)
    assert client.get(reverse("proposal-edit", args=[proposal.pk])).status_code == 403


def test_editor_sees_why_they_cannot_approve_their_own_revision(client, reviewer, agent):
    from dreams.models import Proposal
    from reviews.services import edit_proposal

    agent.required_approvals = 2
    agent.save(update_fields=["required_approvals"])
    original = reviewable_proposal(agent=agent, runs=1)
    edited = edit_proposal(
        proposal_id=original.pk,
        editor=reviewer,
        system_prompt="Shorter prompt.",
        memory_documents=original.candidate_version.memory_documents,
    )
    Proposal.objects.filter(pk=edited.pk).update(status="ready")
    client.force_login(reviewer)
    html = client.get(reverse("proposal-detail", args=[edited.pk])).content.decode()
    assert "You edited this revision" in html
    assert 'id="approve-button" disabled' in html


def test_simulated_user_turns_are_marked_in_the_trajectory_and_the_list(client, reviewer, proposal):
    replay = Replay.objects.filter(experiment__proposal=proposal, arm="candidate").first()
    replay.messages = [
        *replay.messages,
        {"role": "user", "content": [{"type": "text", "text": "<b>Yes</b>, go ahead."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Done."}]},
    ]
    replay.simulated_turns = [len(replay.messages) - 2]
    replay.save(update_fields=["messages", "simulated_turns"])
    client.force_login(reviewer)

    url = reverse("replay-detail", args=[proposal.pk, replay.run_id])
    html = client.get(url, headers={"HX-Request": "true"}).content.decode()
    listing = client.get(reverse("proposal-detail", args=[proposal.pk])).content.decode()

    marked = f'id="cand-{replay.simulated_turns[0]}"'
    assert marked in html
    tag = html[: html.index(marked)].rsplit("<div", 1)[1]
    assert "is-simulated-user" in tag
    assert html.count("is-simulated-user") == 1  # only that turn, in the candidate column
    assert "1 simulated user turn" in html
    assert "&lt;b&gt;Yes&lt;/b&gt;" in html  # run text stays escaped
    assert "sim. user" in listing
