"""Permission table for get_proposal_for_user (reviews/access.py)."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from reviews.access import get_proposal_for_user
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db

TABLE = [
    # (who, write, outcome)
    ("owner", False, "ok"),
    ("owner", True, "ok"),
    ("reviewer", False, "ok"),
    ("reviewer", True, "ok"),
    ("viewer", False, "ok"),
    ("viewer", True, 403),
    ("outsider", False, 404),
    ("outsider", True, 404),
    ("anonymous", False, 404),
]


@pytest.mark.parametrize(("who", "write", "outcome"), TABLE)
def test_permission_table(request, agent, who, write, outcome):
    proposal = reviewable_proposal(agent=agent, runs=1)
    user = AnonymousUser() if who == "anonymous" else request.getfixturevalue(who)
    if outcome == "ok":
        found = get_proposal_for_user(user, proposal.pk, write=write)
        assert found.pk == proposal.pk
    elif outcome == 403:
        with pytest.raises(PermissionDenied):
            get_proposal_for_user(user, proposal.pk, write=write)
    else:
        with pytest.raises(Http404):
            get_proposal_for_user(user, proposal.pk, write=write)


@pytest.mark.parametrize(("who", "status"), [("viewer", 403), ("outsider", 404), ("reviewer", 302)])
def test_decide_view_goes_through_the_access_helper(request, client, agent, who, status):
    proposal = reviewable_proposal(agent=agent, runs=1)
    client.force_login(request.getfixturevalue(who))
    response = client.post(f"/proposals/{proposal.pk}/decide/", {"action": "approve"})
    assert response.status_code == status


@pytest.mark.parametrize(("who", "status"), [("viewer", 200), ("outsider", 404)])
def test_proposal_page_visibility(request, client, agent, who, status):
    proposal = reviewable_proposal(agent=agent, runs=1)
    client.force_login(request.getfixturevalue(who))
    assert client.get(f"/proposals/{proposal.pk}/").status_code == status


def test_viewer_sees_no_decision_form(client, viewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    client.force_login(viewer)
    html = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert 'id="decision-form"' not in html
    assert "reviewers and admins decide" in html


def test_outsider_cannot_open_a_replay_of_another_workspace(client, outsider, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    run_id = proposal.experiments.first().replays.first().run_id
    client.force_login(outsider)
    assert client.get(f"/proposals/{proposal.pk}/replays/{run_id}/").status_code == 404
