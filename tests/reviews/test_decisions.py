import threading

import pytest
from django.db import close_old_connections

from agents.models import AuditEvent, ConfigVersion
from dreams.models import Proposal
from reviews import services
from reviews.models import Decision
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db


@pytest.fixture
def proposal(agent):
    return reviewable_proposal(agent=agent, runs=1)


def _status(proposal) -> str:
    return Proposal.objects.get(pk=proposal.pk).status


def test_approving_moves_the_proposal_to_approved_and_audits_it(client, reviewer, proposal):
    client.force_login(reviewer)
    response = client.post(
        f"/proposals/{proposal.pk}/decide/",
        {"action": "approve", "lock_version": proposal.lock_version, "comment": "Looks right"},
    )
    assert response.status_code == 302
    assert _status(proposal) == "approved"
    event = AuditEvent.objects.get(action="proposal.approve", target_id=str(proposal.pk))
    assert event.actor == reviewer and event.after == {"status": "approved"}
    assert event.comment == "Looks right"
    assert Decision.objects.get(proposal=proposal).kind == "approve"


def test_reject_without_comment_is_refused_with_a_visible_message(client, reviewer, proposal):
    client.force_login(reviewer)
    response = client.post(
        f"/proposals/{proposal.pk}/decide/", {"action": "reject", "comment": "  "}
    )
    assert response.status_code == 400
    assert "A comment is required" in response.content.decode()
    assert _status(proposal) == "ready"
    assert not Decision.objects.exists()


def test_reject_with_comment_rejects(client, reviewer, proposal):
    client.force_login(reviewer)
    client.post(f"/proposals/{proposal.pk}/decide/", {"action": "reject", "comment": "Too broad"})
    assert _status(proposal) == "rejected"
    assert AuditEvent.objects.get(action="proposal.reject").comment == "Too broad"


def test_request_changes_needs_a_comment(reviewer, proposal):
    with pytest.raises(services.DecisionRefused):
        services.request_changes(proposal_id=proposal.pk, reviewer=reviewer, comment="")
    services.request_changes(proposal_id=proposal.pk, reviewer=reviewer, comment="Shorter please")
    assert _status(proposal) == "changes_requested"


def test_two_approvals_needed_when_agent_requires_two(agent, reviewer, second_reviewer, proposal):
    agent.required_approvals = 2
    agent.save(update_fields=["required_approvals"])
    services.approve_proposal(proposal_id=proposal.pk, reviewer=reviewer)
    assert _status(proposal) == "ready"
    assert AuditEvent.objects.filter(action="proposal.approval").count() == 1
    with pytest.raises(services.DecisionRefused):
        services.approve_proposal(proposal_id=proposal.pk, reviewer=reviewer)
    services.approve_proposal(proposal_id=proposal.pk, reviewer=second_reviewer)
    assert _status(proposal) == "approved"


def test_author_of_an_edit_cannot_be_one_of_two_approvers(
    agent, reviewer, second_reviewer, owner, proposal, settings
):
    # The factory's candidate doubles a one-line prompt; growth is not what this test is about.
    settings.REVERIE_DREAM_MAX_GROWTH_PCT = 1000
    agent.required_approvals = 2
    agent.save(update_fields=["required_approvals"])
    edited = services.edit_proposal(
        proposal_id=proposal.pk,
        editor=reviewer,
        system_prompt=proposal.candidate_version.system_prompt.replace("a", "A", 1),
        memory_documents=proposal.candidate_version.memory_documents,
    )
    assert edited.flags == []
    Proposal.objects.filter(pk=edited.pk).update(status="ready")
    with pytest.raises(services.DecisionRefused, match="another reviewer"):
        services.approve_proposal(proposal_id=edited.pk, reviewer=reviewer)
    services.approve_proposal(proposal_id=edited.pk, reviewer=second_reviewer)
    services.approve_proposal(proposal_id=edited.pk, reviewer=owner)
    assert _status(edited) == "approved"


def test_flagged_proposal_needs_an_admin(reviewer, owner, agent):
    flagged = reviewable_proposal(
        agent=agent, runs=1, flags=[{"code": "protected_section", "message": "Compliance"}]
    )
    with pytest.raises(services.DecisionRefused, match="admin"):
        services.approve_proposal(proposal_id=flagged.pk, reviewer=reviewer)
    services.approve_proposal(proposal_id=flagged.pk, reviewer=owner)
    assert _status(flagged) == "approved"


def test_stale_form_gets_409_and_learns_who_decided(client, reviewer, second_reviewer, proposal):
    old_version = proposal.lock_version
    services.reject_proposal(proposal_id=proposal.pk, reviewer=second_reviewer, comment="No")
    client.force_login(reviewer)
    response = client.post(
        f"/proposals/{proposal.pk}/decide/", {"action": "approve", "lock_version": old_version}
    )
    assert response.status_code == 409
    html = response.content.decode()
    assert "sam-reviewer rejected it" in html and "not recorded" in html
    assert _status(proposal) == "rejected"


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_deciding_at_once_exactly_one_wins(reviewer, second_reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    version = proposal.lock_version
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(fn, user, **kwargs):
        try:
            barrier.wait()
            fn(proposal_id=proposal.pk, reviewer=user, expected_lock_version=version, **kwargs)
            outcomes.append("won")
        except services.InvalidTransition:
            outcomes.append("lost")
        finally:
            close_old_connections()

    threads = [
        threading.Thread(target=decide, args=(services.approve_proposal, reviewer)),
        threading.Thread(
            target=decide,
            args=(services.reject_proposal, second_reviewer),
            kwargs={"comment": "no"},
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost", "won"]
    assert Decision.objects.filter(proposal=proposal).count() == 1
    assert _status(proposal) in ("approved", "rejected")


def test_edit_creates_a_new_revision_and_supersedes_the_old(client, reviewer, proposal):
    client.force_login(reviewer)
    text = proposal.candidate_version.system_prompt.replace("Always call", "Always, always call")
    response = client.post(
        f"/proposals/{proposal.pk}/edit/",
        {
            "system_prompt": text,
            "doc-0": "# Refund policy\n\n- 30 days.\n- Edited.\n",
            "note": "tighter wording",
            "lock_version": proposal.lock_version,
        },
    )
    assert response.status_code == 302
    new = Proposal.objects.get(revision_of=proposal)
    assert new.revision == 2 and new.author == reviewer and new.source == "human"
    assert new.candidate_version.system_prompt == text
    assert new.candidate_version.memory_documents["policies/refunds.md"].endswith("Edited.\n")
    assert new.candidate_version.parent_id == proposal.base_version_id
    # The agent fixture's v1, the proposal's base v2 and candidate v3, and the edit's v4.
    assert ConfigVersion.objects.filter(agent=proposal.agent).count() == 4
    assert new.candidate_version.number == 4
    assert _status(proposal) == "superseded"
    # No experiments engine in this build: the new revision waits in `drafted`.
    assert new.status in ("drafted", "replaying")
    assert AuditEvent.objects.filter(action="proposal.edit", target_id=str(proposal.pk)).exists()
    old_page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert "Superseded by" in old_page and f"#{new.pk}" in old_page


def test_edit_without_changes_is_refused(client, reviewer, proposal):
    client.force_login(reviewer)
    response = client.post(
        f"/proposals/{proposal.pk}/edit/",
        {
            "system_prompt": proposal.candidate_version.system_prompt,
            "doc-0": proposal.candidate_version.memory_documents["policies/refunds.md"],
        },
    )
    assert response.status_code == 400
    assert "Nothing changed" in response.content.decode()


def test_assigning_requires_a_reviewer_assignee(client, owner, reviewer, viewer, proposal):
    client.force_login(owner)
    client.post(f"/proposals/{proposal.pk}/assign/", {"assignee": reviewer.pk})
    assert Proposal.objects.get(pk=proposal.pk).assignee == reviewer
    assert AuditEvent.objects.get(action="proposal.assign").after == {"assignee": "riley-reviewer"}
    with pytest.raises(services.DecisionRefused):
        services.assign_proposal(proposal_id=proposal.pk, actor=owner, assignee=viewer)


def test_comment_is_shown_escaped(client, reviewer, proposal):
    client.force_login(reviewer)
    client.post(f"/proposals/{proposal.pk}/comment/", {"body": "<b>bold</b> claim"})
    html = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt; claim" in html


def test_an_edit_that_touches_protected_text_is_flagged_for_an_admin(agent, reviewer, proposal):
    protected = "<!-- protected -->\nNever share card numbers.\n<!-- /protected -->\n"
    base = proposal.base_version
    ConfigVersion.objects.filter(pk=base.pk).update(system_prompt=protected + base.system_prompt)
    proposal.refresh_from_db()

    edited = services.edit_proposal(
        proposal_id=proposal.pk,
        editor=reviewer,
        system_prompt=proposal.base_version.system_prompt.replace("card numbers", "anything"),
        memory_documents=proposal.candidate_version.memory_documents,
    )

    assert "protected_section" in [f["code"] for f in edited.flags]
