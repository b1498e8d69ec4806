"""Resolving a rebase conflict in place: the proposal page's editor and the API turn the
author's resolution into a new revision on the stable version that replays, approvals reset."""

import pytest
from rest_framework.test import APIClient

from agents.models import ConfigVersion
from dreams import rebase
from dreams.models import Experiment, Proposal
from reviews.models import Decision
from tests.factories import ConfigVersionFactory, reviewable_proposal

pytestmark = pytest.mark.django_db

DOC = "policies/refunds.md"
RESOLVED = "# Refund policy\n\n- 14 days from delivery.\n- Check the window first.\n"


@pytest.fixture
def conflicted(agent, reviewer, second_reviewer):
    proposal = reviewable_proposal(agent=agent, runs=3)
    Decision.objects.create(
        proposal=proposal, reviewer=second_reviewer, kind="approve", lock_version=0
    )
    newer = ConfigVersionFactory(
        agent=agent,
        number=ConfigVersion.objects.filter(agent=agent).count() + 10,
        system_prompt=proposal.base_version.system_prompt + "\nSign as Ada.\n",
        memory_documents={DOC: "# Refund policy\n\n- 14 days.\n"},
    )
    agent.stable_version = newer
    agent.save(update_fields=["stable_version"])
    result = rebase.rebase_proposal(proposal_id=proposal.pk, actor=reviewer)
    assert result.pk == proposal.pk and result.status == "changes_requested"
    return result


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_resolution_over_the_api_becomes_a_new_revision_that_replays(
    agent, reviewer, conflicted, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api(reviewer).post(
            f"/api/v1/proposals/{conflicted.pk}/rebase/resolve",
            {"documents": {DOC: RESOLVED}},
            format="json",
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["revision_of"] == conflicted.pk and body["stale"] is False
    assert body["base_version"] == agent.stable_version.number
    after = body["documents"]["after"]
    assert after[DOC] == RESOLVED
    assert "Sign as Ada." in after["system_prompt"]  # the clean part of the merge is kept
    assert body["approvals"] == 0 and body["status"] == "replaying" and callbacks
    assert body["rebase_conflict"] is None
    old = Proposal.objects.get(pk=conflicted.pk)
    assert old.status == "superseded"
    new_experiment = Experiment.objects.get(proposal_id=body["id"])
    old_targets = set(
        Experiment.objects.filter(proposal=old).first().target_runs.values_list("pk", flat=True)
    )
    assert set(new_experiment.target_runs.values_list("pk", flat=True)) == old_targets


def test_markers_left_or_a_document_missing_are_400s_naming_the_document(reviewer, conflicted):
    client = api(reviewer)
    url = f"/api/v1/proposals/{conflicted.pk}/rebase/resolve"
    marked = conflicted.metadata["rebase_conflict"]["documents"][0]["merged"]
    left = client.post(url, {"documents": {DOC: marked}}, format="json")
    assert left.status_code == 400
    assert "conflict markers" in left.json()["error"]["fields"][f"documents.{DOC}"][0]
    missing = client.post(url, {"documents": {}}, format="json")
    assert f"documents.{DOC}" in missing.json()["error"]["fields"]
    other = client.post(url, {"documents": {DOC: RESOLVED, "x.md": "y"}}, format="json")
    assert "documents.x.md" in other.json()["error"]["fields"]
    assert Proposal.objects.get(pk=conflicted.pk).status == "changes_requested"


def test_nothing_to_resolve_or_a_moved_stable_is_a_409(agent, reviewer, conflicted):
    fresh = reviewable_proposal(agent=agent, runs=2)
    client = api(reviewer)
    none = client.post(
        f"/api/v1/proposals/{fresh.pk}/rebase/resolve", {"documents": {}}, format="json"
    )
    assert none.status_code == 409 and none.json()["error"]["code"] == "no_conflict"
    moved = ConfigVersionFactory(
        agent=agent, number=999, system_prompt="Moved.", memory_documents={DOC: "other"}
    )
    agent.stable_version = moved
    agent.save(update_fields=["stable_version"])
    again = client.post(
        f"/api/v1/proposals/{conflicted.pk}/rebase/resolve",
        {"documents": {DOC: RESOLVED}},
        format="json",
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "stable_moved"


def test_the_proposal_page_offers_an_editor_and_keeps_a_bad_resolution(
    client, reviewer, viewer, conflicted
):
    client.force_login(reviewer)
    page = client.get(f"/proposals/{conflicted.pk}/").content.decode()
    assert 'id="resolve-form"' in page and "&lt;&lt;&lt;&lt;&lt;&lt;&lt; proposal" in page
    bad = client.post(
        f"/proposals/{conflicted.pk}/resolve/", {"resolve-0": "<<<<<<< proposal\nmine\n"}
    )
    assert bad.status_code == 400
    text = bad.content.decode()
    assert 'id="resolve-error"' in text and "mine" in text
    done = client.post(f"/proposals/{conflicted.pk}/resolve/", {"resolve-0": RESOLVED})
    new = Proposal.objects.get(revision_of=conflicted)
    assert done["Location"] == f"/proposals/{new.pk}/"
    assert new.candidate_version.memory_documents[DOC] == RESOLVED

    client.force_login(viewer)
    assert 'id="resolve-form"' not in client.get(f"/proposals/{conflicted.pk}/").content.decode()
