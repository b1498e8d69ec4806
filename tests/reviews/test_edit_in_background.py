"""The embedded worker: with it running (the demo), saving an edit returns before its replays
run and the proposal page's poll swaps the finished page in; without it (tests, commands) the
replays run inside the request as before."""

import threading

import pytest

from config.celery import start_embedded_worker, stop_embedded_worker
from dreams.models import Proposal
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.django_db(transaction=True)  # the worker thread has its own connection


@pytest.fixture
def paused_worker():
    worker = start_embedded_worker()
    worker.pause()
    yield worker
    stop_embedded_worker()


def _edit(client, proposal):
    return client.post(
        f"/proposals/{proposal.pk}/edit/",
        {
            "system_prompt": proposal.candidate_version.system_prompt + " Be brief.",
            "note": "shorter",
            "lock_version": proposal.lock_version,
        },
    )


def test_with_the_embedded_worker_an_edit_returns_while_its_replays_wait(
    client, reviewer, agent, paused_worker
):
    proposal = reviewable_proposal(agent=agent, runs=1)
    client.force_login(reviewer)
    assert _edit(client, proposal).status_code == 302
    new = Proposal.objects.get(revision_of=proposal)
    assert new.status == "replaying"  # the request did not replay it

    polled = client.get(
        f"/proposals/{new.pk}/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="replay-progress"
    )
    assert polled.status_code == 200
    assert b'id="replay-progress"' in polled.content and b"<main" not in polled.content

    paused_worker.resume()
    paused_worker.join_idle()
    new.refresh_from_db()
    assert new.status == "ready"
    done = client.get(
        f"/proposals/{new.pk}/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="replay-progress"
    )
    # Finished: the whole page body swaps in (no reload), with the evidence table.
    assert done.headers["HX-Retarget"] == "main.page"
    assert done.headers["HX-Reselect"] == "main.page"
    assert done.headers["HX-Reswap"] == "outerHTML"
    assert b'class="table metrics"' in done.content and b'id="replay-progress"' not in done.content
    assert b"Replays finished" in done.content  # the flash says what just happened


def test_without_the_worker_the_edit_replays_inside_the_request(client, reviewer, agent):
    proposal = reviewable_proposal(agent=agent, runs=1)
    client.force_login(reviewer)
    # The request runs in a thread of its own, as a server's would: a browser test earlier in
    # this process may have left Playwright's event loop on the main thread.
    answers: list[int] = []
    request = threading.Thread(target=lambda: answers.append(_edit(client, proposal).status_code))
    request.start()
    request.join(timeout=120)
    assert answers == [302]
    assert Proposal.objects.get(revision_of=proposal).status == "ready"
