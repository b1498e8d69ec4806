"""The admin shows rollouts read-only: changes go through the services."""

import pytest

from rollouts import services
from tests.rollouts.fixtures import approved_proposal

pytestmark = pytest.mark.django_db


def test_rollouts_are_listed_in_the_admin_and_cannot_be_edited_there(admin_client, agent, owner):
    rollout = services.start_rollout(
        proposal_id=approved_proposal(agent, actor=owner).pk, actor=owner
    )

    listing = admin_client.get("/admin/rollouts/rollout/")
    detail = admin_client.get(f"/admin/rollouts/rollout/{rollout.pk}/change/")
    edit = admin_client.post(
        f"/admin/rollouts/rollout/{rollout.pk}/change/", {"status": "completed"}
    )
    delete = admin_client.post(f"/admin/rollouts/rollout/{rollout.pk}/delete/", {"post": "yes"})

    assert listing.status_code == 200 and agent.name in listing.content.decode()
    assert detail.status_code == 200 and "5" in detail.content.decode()
    assert edit.status_code == 403 and delete.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status != "completed"
