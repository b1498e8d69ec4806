"""Applying approved proposals to the live Managed Agent with content_sha256 preconditions."""

import hashlib

import pytest

from agents.models import Agent, AuditEvent
from agents.services import create_config_version
from dreams.managed import hosted
from dreams.managed.apply import ApplyError, apply_approved_memory
from dreams.managed.models import MemoryApplication
from dreams.managed.sync import sync_link
from dreams.models import Proposal
from dreams.proposals import create_proposal, transition_proposal
from tests.fake_managed import chat_turns, failed_outcome

pytestmark = pytest.mark.django_db

DREAMT = {
    "/policies/refunds.md": "Refunds within 30 days. Always offer the refund form.",
    "/policies/shipping.md": "Ships in 2 days; tell the customer the tracking link.",
    "/policies/escalation.md": "Escalate angry customers to a person.",
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _approve(proposal: Proposal, actor) -> Proposal:
    transition_proposal(proposal_id=proposal.pk, to=Proposal.Status.READY)
    return transition_proposal(proposal_id=proposal.pk, to=Proposal.Status.APPROVED, actor=actor)


@pytest.fixture
def dreamt_proposal(managed_link, fake_managed, django_capture_on_commit_callbacks):
    """A hosted-dream proposal: refunds + shipping changed, escalation added, old note removed."""
    fake_managed.add_session(
        agent_id=managed_link.managed_agent_id,
        turns=chat_turns("Refund?", "No."),
        outcome=failed_outcome(),
    )
    sync_link(link_id=managed_link.pk)
    with django_capture_on_commit_callbacks(execute=True):
        dream = hosted.start_hosted_dream(agent=managed_link.agent)
    dream.refresh_from_db()
    fake_managed.dream_completed(dream.dream_id, memories=DREAMT)
    dream = hosted.poll(hosted_id=dream.pk)
    return Proposal.objects.get(pk=dream.proposal_id)


def test_approval_applies_the_memory_diff_to_the_live_store(
    managed_link, fake_managed, dreamt_proposal, reviewer
):
    _approve(dreamt_proposal, reviewer)
    store = managed_link.memory_store_id
    before_requests = len(fake_managed.requests)

    application = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)

    assert application.status == MemoryApplication.Status.APPLIED
    assert fake_managed.store_contents(store) == DREAMT
    assert [(w["op"], w["path"]) for w in application.written] == [
        ("update", "/policies/refunds.md"),
        ("update", "/policies/shipping.md"),
        ("create", "/policies/escalation.md"),
        ("delete", "/notes/old.md"),
    ]
    assert application.written[0]["content_sha256"] == _sha(DREAMT["/policies/refunds.md"])
    # Each update carried the base version's hash as its precondition.
    updates = [
        r
        for r in fake_managed.requests[before_requests:]
        if r["method"] == "POST" and r["body"] and "precondition" in r["body"]
    ]
    assert [u["body"]["precondition"]["content_sha256"] for u in updates] == [
        _sha("Refunds within 30 days."),
        _sha("Ships in 2 days."),
    ]
    deletes = [r for r in fake_managed.requests if r["method"] == "DELETE"]
    assert deletes[0]["query"]["expected_content_sha256"] == [_sha("Legacy note.")]
    agent = Agent.objects.get(pk=managed_link.agent_id)
    assert agent.stable_version_id == dreamt_proposal.candidate_version_id
    actions = set(
        AuditEvent.objects.filter(target_id=str(dreamt_proposal.pk)).values_list(
            "action", flat=True
        )
    )
    assert {"managed.apply.start", "managed.apply.applied"} <= actions
    # Applying is the whole rollout for a Managed Agent: the proposal is rolled out.
    assert Proposal.objects.get(pk=dreamt_proposal.pk).status == Proposal.Status.ROLLED_OUT
    with pytest.raises(ApplyError, match="only approved"):
        apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)


def test_a_concurrent_live_change_stops_the_apply_with_a_conflict(
    managed_link, fake_managed, dreamt_proposal, reviewer
):
    _approve(dreamt_proposal, reviewer)
    store = managed_link.memory_store_id
    fake_managed.edit_live(store, "/policies/shipping.md", "Ships in 5 days (carrier strike).")
    fake_managed.requests.clear()

    application = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)

    assert application.status == MemoryApplication.Status.CONFLICT
    # Exactly one memory was written before the conflict; nothing after it.
    assert [(w["op"], w["path"]) for w in application.written] == [
        ("update", "/policies/refunds.md")
    ]
    refunds_id = fake_managed.memory_id(store, "/policies/refunds.md")
    shipping_id = fake_managed.memory_id(store, "/policies/shipping.md")
    assert fake_managed.writes() == [
        ("POST", f"/v1/memory_stores/{store}/memories/{refunds_id}"),
        ("POST", f"/v1/memory_stores/{store}/memories/{shipping_id}"),  # refused with 409
    ]
    assert fake_managed.store_contents(store) == {
        "/policies/refunds.md": DREAMT["/policies/refunds.md"],
        "/policies/shipping.md": "Ships in 5 days (carrier strike).",
        "/notes/old.md": "Legacy note.",
    }
    assert application.conflict["path"] == "/policies/shipping.md"
    assert application.conflict["live_content"] == "Ships in 5 days (carrier strike)."
    assert application.conflict["expected_sha256"] == _sha("Ships in 2 days.")
    assert application.conflict["live_sha256"] == _sha("Ships in 5 days (carrier strike).")
    agent = Agent.objects.get(pk=managed_link.agent_id)
    assert agent.stable_version_id != dreamt_proposal.candidate_version_id
    assert Proposal.objects.get(pk=dreamt_proposal.pk).status == Proposal.Status.APPROVED
    event = AuditEvent.objects.get(action="managed.apply.conflict")
    assert event.after["written"] == ["update /policies/refunds.md"]
    assert event.after["conflict_path"] == "/policies/shipping.md"


def test_after_a_conflict_is_resolved_a_new_attempt_finishes_the_diff(
    managed_link, fake_managed, dreamt_proposal, reviewer
):
    _approve(dreamt_proposal, reviewer)
    store = managed_link.memory_store_id
    fake_managed.edit_live(store, "/policies/shipping.md", "Ships in 5 days.")
    first = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)
    fake_managed.edit_live(store, "/policies/shipping.md", "Ships in 2 days.")  # reverted

    second = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)

    assert first.status == MemoryApplication.Status.CONFLICT
    assert second.status == MemoryApplication.Status.APPLIED
    assert fake_managed.store_contents(store) == DREAMT
    assert MemoryApplication.objects.filter(proposal=dreamt_proposal).count() == 2


def test_a_system_prompt_change_creates_a_new_managed_agent_version(
    managed_link, fake_managed, reviewer
):
    agent = managed_link.agent
    base = agent.stable_version
    base_docs = fake_managed.store_contents(managed_link.memory_store_id)
    base = create_config_version(
        agent=agent, system_prompt=base.system_prompt, memory_documents=base_docs
    )
    candidate = create_config_version(
        agent=agent,
        system_prompt=base.system_prompt + "\nAlways offer the refund form.",
        memory_documents=base_docs,
        parent=base,
    )
    proposal = create_proposal(
        agent=agent, base_version=base, candidate_version=candidate, title="Prompt edit"
    )
    _approve(proposal, reviewer)

    application = apply_approved_memory(proposal_id=proposal.pk, actor=reviewer)

    assert application.status == MemoryApplication.Status.APPLIED
    assert (application.agent_version_before, application.agent_version_after) == (1, 2)
    remote = fake_managed.agent(managed_link.managed_agent_id)
    assert remote["version"] == 2 and remote["system"] == candidate.system_prompt
    assert application.written == []


def test_only_approved_proposals_are_applied(managed_link, fake_managed, dreamt_proposal, reviewer):
    with pytest.raises(ApplyError, match="only approved"):
        apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)
    assert fake_managed.writes() == []


def test_the_apply_endpoint_answers_409_with_the_conflict(
    client, managed_link, fake_managed, dreamt_proposal, reviewer, viewer
):
    _approve(dreamt_proposal, reviewer)
    store = managed_link.memory_store_id
    fake_managed.edit_live(store, "/policies/refunds.md", "Refunds within 14 days.")
    url = f"/api/v1/managed/proposals/{dreamt_proposal.pk}/apply"

    client.force_login(viewer)
    assert client.post(url).status_code == 403
    client.force_login(reviewer)
    response = client.post(url)

    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "conflict" and body["written"] == []
    assert body["conflict"]["live_content"] == "Refunds within 14 days."
    assert "/policies/escalation.md" not in fake_managed.store_contents(store)
    assert client.get(url).json()[0]["status"] == "conflict"


def test_a_memory_deleted_live_is_a_conflict_not_a_silent_create(
    managed_link, fake_managed, dreamt_proposal, reviewer
):
    _approve(dreamt_proposal, reviewer)
    store = managed_link.memory_store_id
    refunds = fake_managed.memory_id(store, "/policies/refunds.md")
    del fake_managed.memories[store][refunds]

    application = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)

    assert application.status == MemoryApplication.Status.CONFLICT
    assert application.written == []
    assert application.conflict["path"] == "/policies/refunds.md"
    assert application.conflict["live_content"] is None
    assert "/policies/refunds.md" not in fake_managed.store_contents(store)


def test_without_an_api_key_the_attempt_fails_and_writes_nothing(
    managed_link, fake_managed, dreamt_proposal, reviewer, monkeypatch
):
    _approve(dreamt_proposal, reviewer)
    monkeypatch.delenv("REVERIE_TEST_MANAGED_KEY")
    fake_managed.requests.clear()

    application = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)

    assert application.status == MemoryApplication.Status.FAILED
    assert "ManagedNotConfigured" in application.error
    assert fake_managed.requests == []


def test_the_last_approval_in_the_review_queue_writes_the_memory(
    managed_link, fake_managed, dreamt_proposal, owner, django_capture_on_commit_callbacks
):
    from reviews.services import approve_proposal

    transition_proposal(proposal_id=dreamt_proposal.pk, to=Proposal.Status.READY)

    with django_capture_on_commit_callbacks(execute=True):
        # An admin: the dream's growth is flagged, so only an admin may approve it.
        approve_proposal(proposal_id=dreamt_proposal.pk, reviewer=owner)

    application = MemoryApplication.objects.get(proposal=dreamt_proposal)
    assert application.status == MemoryApplication.Status.APPLIED
    live = fake_managed.store_contents(managed_link.memory_store_id)
    assert live == DREAMT
    dreamt_proposal.refresh_from_db()
    assert dreamt_proposal.status == Proposal.Status.ROLLED_OUT


def test_a_retried_partial_apply_rereads_the_live_hashes_and_finishes(
    managed_link, fake_managed, dreamt_proposal, reviewer
):
    """An outage after the first write; the retry must not re-send the old hash of that write."""
    _approve(dreamt_proposal, reviewer)
    store = managed_link.memory_store_id
    shipping_id = fake_managed.memory_id(store, "/policies/shipping.md")
    fake_managed.fail_next("POST", f"/v1/memory_stores/{store}/memories/{shipping_id}")

    first = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)
    fake_managed.requests.clear()
    second = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)

    assert first.status == MemoryApplication.Status.FAILED
    assert [w["path"] for w in first.written] == ["/policies/refunds.md"]
    assert second.status == MemoryApplication.Status.APPLIED, second.conflict
    assert fake_managed.store_contents(store) == DREAMT
    # The refunds memory was found already written: no second write, no 409.
    refunds_id = fake_managed.memory_id(store, "/policies/refunds.md")
    assert ("POST", f"/v1/memory_stores/{store}/memories/{refunds_id}") not in fake_managed.writes()
    assert second.written[0] == {
        "op": "update",
        "path": "/policies/refunds.md",
        "memory_id": refunds_id,
        "content_sha256": _sha(DREAMT["/policies/refunds.md"]),
        "already_live": True,
    }
    assert [w["path"] for w in second.written] == [
        "/policies/refunds.md",
        "/policies/shipping.md",
        "/policies/escalation.md",
        "/notes/old.md",
    ]
    assert Proposal.objects.get(pk=dreamt_proposal.pk).status == Proposal.Status.ROLLED_OUT


def test_a_retry_after_the_delete_and_create_went_through_finishes_without_writing(
    managed_link, fake_managed, dreamt_proposal, reviewer
):
    _approve(dreamt_proposal, reviewer)
    store = managed_link.memory_store_id
    for path, text in DREAMT.items():  # every write already landed (the worker died after them)
        if path in fake_managed.store_contents(store):
            fake_managed.edit_live(store, path, text)
    fake_managed.handle(
        "POST",
        f"/v1/memory_stores/{store}/memories",
        {},
        {"path": "/policies/escalation.md", "content": DREAMT["/policies/escalation.md"]},
    )
    old_note = fake_managed.memory_id(store, "/notes/old.md")
    del fake_managed.memories[store][old_note]
    fake_managed.requests.clear()

    application = apply_approved_memory(proposal_id=dreamt_proposal.pk, actor=reviewer)

    assert application.status == MemoryApplication.Status.APPLIED
    assert all(w["already_live"] for w in application.written)
    assert fake_managed.writes() == []
    assert fake_managed.store_contents(store) == DREAMT
