"""Copy that says what happened: flash messages after an edit; progress while replays run; a
favicon. ("Dream now"'s messages are tested with the dreams pages, tests/dreams/test_pages.py.)"""

import pytest

from dreams.models import Experiment, Proposal
from reviews import services
from tests.factories import ExperimentFactory, reviewable_proposal

pytestmark = pytest.mark.django_db


def _edit(client, proposal, **headers):
    text = proposal.candidate_version.system_prompt + "\nAlways be brief."
    return client.post(
        f"/proposals/{proposal.pk}/edit/",
        {"system_prompt": text, "doc-0": "# Refund policy\n\n- 30 days.\n", "note": "brief"},
        headers=headers,
    )


def test_after_an_edit_whose_replays_finished_the_flash_says_ready(
    client, reviewer, agent, monkeypatch
):
    proposal = reviewable_proposal(agent=agent, runs=1)
    real = services.edit_proposal

    def edit_and_finish(**kwargs):
        # With eager tasks the replays finish inside the request: the returned object is stale.
        new = real(**kwargs)
        Proposal.objects.filter(pk=new.pk).update(status="ready")
        ExperimentFactory(proposal=new)
        return new

    monkeypatch.setattr(services, "edit_proposal", edit_and_finish)
    client.force_login(reviewer)
    _edit(client, proposal)
    new = Proposal.objects.get(revision_of=proposal)
    text = client.get(f"/proposals/{new.pk}/").content.decode()
    assert "ready for review" in text and "stays drafted" not in text


def test_saving_an_edit_with_htmx_redirects_the_client(client, reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    client.force_login(reviewer)
    edit = client.get(f"/proposals/{proposal.pk}/edit/").content.decode()
    assert 'hx-indicator="#save-progress"' in edit and 'id="save-progress"' in edit

    response = _edit(client, proposal, HX_Request="true")
    new = Proposal.objects.get(revision_of=proposal)
    assert response.status_code == 200 and response["HX-Redirect"] == f"/proposals/{new.pk}/"


def test_a_replaying_proposal_shows_progress_and_swaps_the_page_in_when_done(
    client, reviewer, agent
):
    proposal = reviewable_proposal(agent=agent, runs=2)
    Proposal.objects.filter(pk=proposal.pk).update(status="replaying")
    Experiment.objects.filter(proposal=proposal).update(status="running")
    client.force_login(reviewer)
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    assert 'id="replay-progress"' in page and 'hx-trigger="every 2s"' in page
    assert "6 of 6 replays done" in page  # 3 runs × 2 arms, all done in the factory

    fragment = client.get(
        f"/proposals/{proposal.pk}/", headers={"HX-Request": "true", "HX-Target": "replay-progress"}
    )
    assert fragment.content.decode().lstrip().startswith('<div id="replay-progress"')
    Proposal.objects.filter(pk=proposal.pk).update(status="ready")
    done = client.get(
        f"/proposals/{proposal.pk}/", headers={"HX-Request": "true", "HX-Target": "replay-progress"}
    )
    # No reload: the finished page's body replaces the old one (htmx retarget + reselect).
    assert "HX-Refresh" not in done
    assert (done["HX-Retarget"], done["HX-Reselect"]) == ("main.page", "main.page")


def test_pages_have_a_favicon(client, reviewer):
    client.force_login(reviewer)
    assert 'rel="icon" href="/static/favicon.svg"' in client.get("/").content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")


def test_replays_that_stopped_say_so_and_stop_polling(client, reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=2)
    Proposal.objects.filter(pk=proposal.pk).update(status="replaying")
    Experiment.objects.filter(proposal=proposal).update(
        status="failed", error="Token budget exceeded; replays stopped."
    )
    client.force_login(reviewer)
    page = client.get(f"/proposals/{proposal.pk}/").content.decode()
    card = page.split('id="replay-progress"')[1].split("</div>")[0]
    assert "Replays stopped" in card and "Token budget exceeded" in card
    assert "hx-trigger" not in card and "updates by itself" not in page
    # A poll already in flight gets the whole page (with the stopped card), not another poll.
    polled = client.get(
        f"/proposals/{proposal.pk}/", headers={"HX-Request": "true", "HX-Target": "replay-progress"}
    )
    assert polled["HX-Retarget"] == "main.page" and "Replays stopped" in polled.content.decode()
