"""The admin shows rollouts and webhook deliveries read-only: changes go through the services."""

import pytest

from reviews import rollouts
from tests.reviews.rollout_fixtures import approved_proposal

pytestmark = pytest.mark.django_db


def test_rollouts_are_listed_in_the_admin_and_cannot_be_edited_there(admin_client, agent, owner):
    rollout = rollouts.start_rollout(
        proposal_id=approved_proposal(agent, actor=owner).pk, actor=owner
    )

    listing = admin_client.get("/admin/reviews/rollout/")
    detail = admin_client.get(f"/admin/reviews/rollout/{rollout.pk}/change/")
    edit = admin_client.post(
        f"/admin/reviews/rollout/{rollout.pk}/change/", {"status": "completed"}
    )
    delete = admin_client.post(f"/admin/reviews/rollout/{rollout.pk}/delete/", {"post": "yes"})

    assert listing.status_code == 200 and agent.name in listing.content.decode()
    assert detail.status_code == 200 and "5" in detail.content.decode()
    assert edit.status_code == 403 and delete.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status != "completed"


def test_webhook_deliveries_page_renders(admin_client):
    assert admin_client.get("/admin/reviews/webhookdelivery/").status_code == 200
