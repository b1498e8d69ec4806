"""Comments on a line or hunk of the diff: shown at the line and in the activity, resolved like
review threads; and "changes since the revision I last reviewed"."""

import pytest

from agents.models import AuditEvent
from reviews import services
from reviews.models import ReviewComment
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db


@pytest.fixture
def proposal(agent):
    return reviewable_proposal(agent=agent, runs=1)


DOC = "policies/refunds.md"


def test_a_line_comment_shows_on_its_line_and_in_the_activity(client, reviewer, proposal):
    client.force_login(reviewer)
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert 'data-line="R4"' in page and 'id="line-comment-form"' in page

    response = client.post(
        f"/proposals/{proposal.pk}/comment/",
        {
            "body": "Which window?",
            "document": DOC,
            "line": "R4",
            "quote": "- Check the window first.",
        },
    )
    thread = ReviewComment.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"#c-{thread.pk}")
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    # At the line (the thread row follows the line's row) and in the activity with a link to it.
    row = page.index('id="doc-policies-refunds-md-R4"')
    assert row < page.index(f'id="c-{thread.pk}"') < page.index('id="discussion"')
    assert f'href="#c-{thread.pk}" class="thread-link">{DOC} line 4</a>' in page
    assert "1 open review thread" in page
    event = AuditEvent.objects.filter(action="proposal.comment").latest("id")
    assert event.after == {"document": DOC, "line": "R4"}


def test_threads_resolve_and_a_reply_reopens_them(client, reviewer, second_reviewer, proposal):
    thread = services.comment_on_proposal(
        proposal_id=proposal.pk, author=reviewer, body="Hunk-wide note", document=DOC, line="H0"
    )
    client.force_login(second_reviewer)
    client.post(f"/proposals/{proposal.pk}/threads/{thread.pk}/resolve/", {"resolved": "1"})
    thread.refresh_from_db()
    assert thread.resolved_at and thread.resolved_by == second_reviewer
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert "resolved by second" in page or "resolved by " + second_reviewer.username in page
    assert "open review thread" not in page
    assert AuditEvent.objects.filter(action="proposal.thread_resolve").exists()

    client.post(f"/proposals/{proposal.pk}/comment/", {"body": "Not yet", "reply_to": thread.pk})
    thread.refresh_from_db()
    assert thread.resolved_at is None
    assert thread.replies.get().body == "Not yet" and thread.replies.get().line == "H0"


def test_a_comment_anchor_must_be_a_line_or_hunk(reviewer, proposal):
    with pytest.raises(services.DecisionRefused):
        services.comment_on_proposal(
            proposal_id=proposal.pk, author=reviewer, body="x", document=DOC, line="drop table"
        )
    with pytest.raises(services.DecisionRefused):
        services.comment_on_proposal(proposal_id=proposal.pk, author=reviewer, body="x", line="R1")


def test_changes_since_the_revision_i_last_reviewed(client, reviewer, owner, proposal):
    services.request_changes(proposal_id=proposal.pk, reviewer=reviewer, comment="Say 14 days")
    proposal.refresh_from_db()
    cand = proposal.candidate_version
    memory = dict(cand.memory_documents)
    memory[DOC] = memory[DOC].replace("30 days from delivery", "14 days from delivery")
    revised = services.edit_proposal(
        proposal_id=proposal.pk,
        editor=owner,
        system_prompt=cand.system_prompt,
        memory_documents=memory,
        note="14 days",
    )
    client.force_login(reviewer)
    page = client.get(f"/proposals/{revised.pk}/").content.decode()
    assert 'id="since-link"' in page and f"since={proposal.pk}" in page

    since = client.get(f"/proposals/{revised.pk}/?since={proposal.pk}").content.decode()
    # Only the 30 → 14 edit, not the whole change against the base version.
    assert "Showing the changes since" in since
    assert "<del>30</del>" in since and "<ins>14</ins>" in since
    change = since.split('id="change"')[1].split('id="why"')[0]
    assert '<span class="fix">+1</span> <span class="regr">−1</span>' in change
    assert "System prompt" not in change  # the prompt edit predates the reviewed revision


def test_the_api_posts_and_lists_line_comments_and_replies(reviewer, proposal):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(reviewer)
    url = f"/api/v1/proposals/{proposal.pk}/comments"
    posted = client.post(url, {"body": "Why?", "document": DOC, "line": "R4"}, format="json")
    assert posted.status_code == 201 and posted.json()["line"] == "R4"
    reply = client.post(url, {"body": "Because.", "reply_to": posted.json()["id"]}, format="json")
    assert reply.status_code == 201 and reply.json()["reply_to"] == posted.json()["id"]
    bad = client.post(url, {"body": "x", "document": DOC, "line": "nowhere"}, format="json")
    assert bad.status_code == 400
    listed = client.get(url).json()["results"]
    assert [(c["line"], c["resolved_at"]) for c in listed] == [("R4", None), ("R4", None)]
