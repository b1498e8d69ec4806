"""Stale bases on the pages: the queue and the proposal page say so; Rebase replays again."""

import pytest

from dreams.models import Proposal
from tests.factories import ConfigVersionFactory, reviewable_proposal

pytestmark = pytest.mark.django_db


def _move_stable(agent, proposal, **fields):
    base = proposal.base_version
    newer = ConfigVersionFactory(
        agent=agent,
        number=99,
        system_prompt=fields.get("system_prompt", base.system_prompt),
        memory_documents=fields.get("memory", base.memory_documents),
    )
    agent.stable_version = newer
    agent.save(update_fields=["stable_version"])


def test_queue_and_page_mark_a_stale_proposal_and_rebase_makes_a_new_revision(
    client, agent, reviewer
):
    proposal = reviewable_proposal(agent=agent)
    client.force_login(reviewer)
    assert "stale base" not in client.get("/").content.decode()
    _move_stable(agent, proposal, system_prompt=proposal.base_version.system_prompt + "\nHi.\n")
    assert "stale base" in client.get("/").content.decode()
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert 'id="stale-banner"' in page and "Rebase onto v99" in page

    response = client.post(f"/proposals/{proposal.pk}/rebase/")
    new = Proposal.objects.get(revision_of=proposal)
    assert response.status_code == 302 and response["Location"] == f"/proposals/{new.pk}/"
    assert new.base_version.number == 99
    assert 'id="stale-banner"' not in client.get(f"/proposals/{new.pk}/").content.decode()


def test_a_conflicting_rebase_shows_the_conflict_on_the_page(client, agent, reviewer):
    proposal = reviewable_proposal(agent=agent)
    _move_stable(agent, proposal, memory={"policies/refunds.md": "# Refund policy\n\n- 7 days.\n"})
    client.force_login(reviewer)
    client.post(f"/proposals/{proposal.pk}/rebase/")
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert 'id="rebase-conflict"' in page and "&lt;&lt;&lt;&lt;&lt;&lt;&lt; proposal" in page
    assert Proposal.objects.get(pk=proposal.pk).status == "changes_requested"


def test_a_viewer_cannot_rebase(client, agent, viewer):
    proposal = reviewable_proposal(agent=agent)
    _move_stable(agent, proposal, system_prompt="x")
    client.force_login(viewer)
    assert client.post(f"/proposals/{proposal.pk}/rebase/").status_code == 403
