"""Browser: saving an edit returns at once (the embedded worker replays it in the background),
the proposal page shows the replays' progress, then swaps the new numbers in without a reload."""

import re

import pytest
from playwright.sync_api import expect

from config.celery import start_embedded_worker, stop_embedded_worker
from dreams.models import Experiment, Proposal
from tests.factories import reviewable_proposal

pytestmark = pytest.mark.browser


@pytest.fixture
def embedded_worker():
    """The embedded mode's background worker, paused until the test has seen the progress (so
    the test never races the replays)."""
    worker = start_embedded_worker()
    worker.pause()
    yield worker
    stop_embedded_worker()


def test_saving_an_edit_returns_at_once_shows_progress_then_the_new_numbers(
    page, live_server, login, shot, reviewer, agent, embedded_worker
):
    proposal = reviewable_proposal(agent=agent, runs=2, title="Edit in the background")
    login("riley-reviewer")
    page.goto(f"{live_server.url}/proposals/{proposal.pk}/edit/")
    page.fill("#note", "shorter")
    page.locator("#system_prompt").press("End")
    page.locator("#system_prompt").type(" Be brief.")
    page.click("#save-button")
    page.wait_for_url(re.compile(r"/proposals/\d+/$"))
    new = Proposal.objects.get(revision_of=proposal)
    assert page.url.endswith(f"/proposals/{new.pk}/")

    # The request returned while the replays wait in the worker's queue.
    expect(page.locator("#proposal-status")).to_have_text("Replaying")
    expect(page.locator(".flashes")).to_contain_text("Replays are running")
    progress = page.locator("#replay-progress")
    expect(progress).to_be_visible()
    expect(progress).to_contain_text(re.compile(r"0 of \d+ replays done|starting"))
    assert not page.locator("table.metrics").count()
    page.evaluate("window.__samePage = 'yes'")  # a reload would forget this
    shot("edit-progress")

    embedded_worker.resume()
    # The poll (every 2 s) swaps the finished page in: status, verdict and the new numbers.
    expect(page.locator("#proposal-status")).to_have_text("Ready for review", timeout=60_000)
    expect(page.locator("#replay-progress")).to_have_count(0)
    experiment = Experiment.objects.filter(proposal=new).latest("id")
    target = experiment.stats["target"]
    metrics = page.locator("table.metrics")
    expect(metrics).to_be_visible()
    for arm in ("baseline", "candidate"):
        block = target[arm]
        if block["n"]:
            expect(metrics).to_contain_text(f"{block['passed']}/{block['n']}")
    expect(page.locator("#verdict")).to_be_visible()
    expect(page.locator(".flashes")).to_contain_text("Replays finished")
    assert page.evaluate("window.__samePage") == "yes"
    shot("edit-progress-done")
