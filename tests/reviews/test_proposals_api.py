"""Proposals over REST: the queue's filters and order, evidence, decisions with the page's
rules, comments, assignment, stale bases and rebase."""

import pytest
from rest_framework.test import APIClient

from agents import services as agent_services
from agents.models import AuditEvent, ConfigVersion
from dreams.models import Proposal
from reviews.models import Decision, ReviewComment
from tests.factories import ConfigVersionFactory, reviewable_proposal

pytestmark = pytest.mark.django_db


def session(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)  # a session member, as the browser's fetches are
    return client


@pytest.fixture
def proposal(agent):
    return reviewable_proposal(agent=agent, runs=3)


def _stable(agent, version):
    agent.stable_version = version
    agent.save(update_fields=["stable_version"])


def test_list_follows_the_queue_order_and_filters_with_a_cursor(agent, reviewer, outsider):
    low = reviewable_proposal(agent=agent, expected_value=1.0, title="Low")
    high = reviewable_proposal(agent=agent, expected_value=5.0, title="High")
    flagged = reviewable_proposal(
        agent=agent, expected_value=3.0, flags=[{"code": "growth", "message": "grows"}]
    )
    Proposal.objects.filter(pk=low.pk)  # noqa: B018 - kept for readability of the three rows
    client = session(reviewer)

    first = client.get("/api/v1/proposals", {"page_size": 2}).json()
    assert [p["id"] for p in first["results"]] == [high.pk, flagged.pk]
    second = client.get(first["next"]).json()
    assert [p["id"] for p in second["results"]] == [low.pk]
    assert second["next"] is None

    only_flagged = client.get("/api/v1/proposals", {"flag": "growth"}).json()["results"]
    assert [p["id"] for p in only_flagged] == [flagged.pk]
    assert session(outsider).get("/api/v1/proposals").json()["results"] == []


def test_a_bad_filter_is_a_400_in_the_standard_error_shape(reviewer):
    response = session(reviewer).get("/api/v1/proposals", {"status": "nope"})
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "invalid" and "status" in body["fields"]


def test_detail_has_documents_diff_flags_verdict_and_replays(reviewer, proposal):
    body = session(reviewer).get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["documents"]["before"]["system_prompt"] == proposal.base_version.system_prompt
    assert body["documents"]["after"]["policies/refunds.md"].startswith("# Refund policy")
    documents = {d["document"]: d for d in body["diff"]}
    assert "+- Check the window first." in documents["policies/refunds.md"]["unified"]
    assert body["verdict"] and body["stats"]["overall"]
    assert body["experiment"]["status"] == "completed"
    outcomes = {r["outcome"] for r in body["replays"]}
    assert {"fixed", "regressed"} <= outcomes
    assert body["stale"] is False


def test_another_workspace_gets_404_not_the_proposal(outsider, proposal, outsider_api):
    assert session(outsider).get(f"/api/v1/proposals/{proposal.pk}").status_code == 404
    assert outsider_api.get(f"/api/v1/proposals/{proposal.pk}").json()["error"]["code"]


def test_approve_over_the_api_records_the_actor_in_the_audit_log(reviewer, proposal):
    response = session(reviewer).post(
        f"/api/v1/proposals/{proposal.pk}/decisions",
        {"action": "approve", "comment": "ok", "lock_version": proposal.lock_version},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "approved"
    event = AuditEvent.objects.get(action="proposal.approve", target_id=str(proposal.pk))
    assert event.actor == reviewer


def test_two_approvals_are_needed_when_the_agent_says_so(
    agent, reviewer, second_reviewer, proposal
):
    agent.required_approvals = 2
    agent.save(update_fields=["required_approvals"])
    url = f"/api/v1/proposals/{proposal.pk}/decisions"
    first = session(reviewer).post(url, {"action": "approve"}, format="json").json()
    assert first["status"] == "ready" and first["approvals"] == 1
    again = session(reviewer).post(url, {"action": "approve"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate"
    second = session(second_reviewer).post(url, {"action": "approve"}, format="json").json()
    assert second["status"] == "approved" and second["approvals"] == 2


def test_a_flagged_proposal_needs_an_admin(agent, reviewer, owner):
    flagged = reviewable_proposal(
        agent=agent, flags=[{"code": "protected_section", "message": "touches it"}]
    )
    url = f"/api/v1/proposals/{flagged.pk}/decisions"
    refused = session(reviewer).post(url, {"action": "approve"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "flagged"
    assert session(owner).post(url, {"action": "approve"}, format="json").status_code == 200


def test_reject_needs_a_comment_named_as_a_field(reviewer, proposal):
    response = session(reviewer).post(
        f"/api/v1/proposals/{proposal.pk}/decisions", {"action": "reject"}, format="json"
    )
    assert response.status_code == 400
    assert "comment" in response.json()["error"]["fields"]
    assert Proposal.objects.get(pk=proposal.pk).status == "ready"


def test_the_loser_of_a_race_gets_409_and_nothing_is_recorded(reviewer, owner, proposal):
    lock = proposal.lock_version
    url = f"/api/v1/proposals/{proposal.pk}/decisions"
    won = session(owner).post(
        url, {"action": "reject", "comment": "no", "lock_version": lock}, format="json"
    )
    lost = session(reviewer).post(url, {"action": "approve", "lock_version": lock}, format="json")
    assert won.status_code == 200 and lost.status_code == 409
    assert lost.json()["error"]["fields"]["status"] == ["rejected"]
    assert not Decision.objects.filter(kind="approve").exists()


def test_viewers_and_personless_keys_cannot_decide(viewer, proposal, api, workspace, owner):
    url = f"/api/v1/proposals/{proposal.pk}/decisions"
    assert session(viewer).post(url, {"action": "approve"}, format="json").status_code == 403
    assert api.post(url, {"action": "approve"}, format="json").status_code == 403
    _, raw = agent_services.create_api_key(
        workspace=workspace, name="ci", created_by=owner, scope="admin"
    )
    keyed = APIClient()
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert keyed.post(url, {"action": "approve"}, format="json").json()["status"] == "approved"
    assert Decision.objects.get(proposal=proposal).reviewer == owner


def test_comments_and_assignment(reviewer, second_reviewer, viewer, proposal):
    client = session(reviewer)
    posted = client.post(
        f"/api/v1/proposals/{proposal.pk}/comments", {"body": "Why line 3?"}, format="json"
    )
    assert posted.status_code == 201 and posted.json()["author"] == reviewer.username
    listed = client.get(f"/api/v1/proposals/{proposal.pk}/comments").json()["results"]
    assert [c["body"] for c in listed] == ["Why line 3?"]
    assigned = client.post(
        f"/api/v1/proposals/{proposal.pk}/assignment",
        {"assignee": second_reviewer.username},
        format="json",
    )
    assert assigned.json()["assignee"] == second_reviewer.username
    bad = client.post(
        f"/api/v1/proposals/{proposal.pk}/assignment", {"assignee": viewer.username}, format="json"
    )
    assert bad.status_code == 400 and "assignee" in bad.json()["error"]["fields"]
    assert ReviewComment.objects.count() == 1
    assert AuditEvent.objects.filter(action="proposal.assign", actor=reviewer).exists()


# -- stale bases ---------------------------------------------------------------------------


def _move_stable(agent, proposal, *, system_prompt=None, memory=None):
    base = proposal.base_version
    newer = ConfigVersionFactory(
        agent=agent,
        number=ConfigVersion.objects.filter(agent=agent).count() + 10,
        system_prompt=system_prompt if system_prompt is not None else base.system_prompt,
        memory_documents=memory if memory is not None else base.memory_documents,
    )
    _stable(agent, newer)
    return newer


def test_a_proposal_on_an_old_stable_is_stale_and_cannot_be_approved(agent, reviewer, proposal):
    _move_stable(
        agent, proposal, system_prompt=proposal.base_version.system_prompt + "\nBe brief.\n"
    )
    client = session(reviewer)
    listed = client.get("/api/v1/proposals", {"stale": "1"}).json()["results"]
    assert [p["id"] for p in listed] == [proposal.pk] and listed[0]["stale"] is True
    assert client.get(f"/api/v1/proposals/{proposal.pk}").json()["stale"] is True
    refused = client.post(
        f"/api/v1/proposals/{proposal.pk}/decisions", {"action": "approve"}, format="json"
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "stale_base"


def test_rebase_merges_both_changes_and_replays_with_approvals_reset(
    agent, reviewer, second_reviewer, proposal, django_capture_on_commit_callbacks
):
    agent.required_approvals = 2
    agent.save(update_fields=["required_approvals"])
    session(second_reviewer).post(
        f"/api/v1/proposals/{proposal.pk}/decisions", {"action": "approve"}, format="json"
    )
    newer = _move_stable(
        agent, proposal, system_prompt=proposal.base_version.system_prompt + "\nSign as Ada.\n"
    )
    with django_capture_on_commit_callbacks() as callbacks:
        response = session(reviewer).post(f"/api/v1/proposals/{proposal.pk}/rebase")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["revision_of"] == proposal.pk and body["base_version"] == newer.number
    after = body["documents"]["after"]
    assert "Sign as Ada." in after["system_prompt"]
    assert after["system_prompt"].startswith(
        proposal.candidate_version.system_prompt.rstrip("\n")[:40]
    )
    assert "Check the window first." in after["policies/refunds.md"]
    assert body["approvals"] == 0 and body["stale"] is False
    assert body["status"] == "replaying" and callbacks  # its experiment is enqueued
    assert Proposal.objects.get(pk=proposal.pk).status == "superseded"


def test_a_rebase_conflict_requests_changes_and_shows_the_conflict(agent, reviewer, proposal):
    _move_stable(agent, proposal, memory={"policies/refunds.md": "# Refund policy\n\n- 14 days.\n"})
    response = session(reviewer).post(f"/api/v1/proposals/{proposal.pk}/rebase")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "changes_requested"
    conflict = body["rebase_conflict"]["documents"][0]
    assert conflict["document"] == "policies/refunds.md"
    assert "<<<<<<< proposal" in conflict["merged"] and "- 14 days." in conflict["merged"]


def test_rebasing_a_current_proposal_is_a_409(reviewer, proposal):
    response = session(reviewer).post(f"/api/v1/proposals/{proposal.pk}/rebase")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_stale"
