"""Browser: cancel a running dream cycle and re-run it from its page; cancel a stuck experiment
and re-run it from its proposal's page. Each button asks for a confirmation (dismissed: nothing
happens), then reloads the page with a flash that says what happened."""

import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection

from agents.models import Agent, Membership
from dreams import cycles
from dreams.models import DreamCycle, Experiment, Replay
from tests.dreams.test_recovery import _experiment
from tests.factories import MembershipFactory, ProposalFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def desk(transactional_db):
    call_command("seed_demo", runs=60, no_dream=True, stdout=io.StringIO())
    agent = Agent.objects.select_related("stable_version", "workspace").get(slug="refunds-desk")
    MembershipFactory(
        user=UserFactory(username="rita-reviewer"),
        workspace=agent.workspace,
        role=Membership.Role.REVIEWER,
    )
    return agent


def off_the_event_loop(function, *args):
    """Run an experiment in another thread: this one runs Playwright's event loop."""
    out = {}

    def target() -> None:
        try:
            out["value"] = function(*args, execute=True)
        finally:
            connection.close()

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(timeout=300)
    return out["value"]


def flash(page) -> str:
    return page.locator(".flashes").inner_text()


def test_cancel_and_re_run_a_cycle_and_an_experiment_from_their_pages(
    page, login, shot, live_server, desk, django_capture_on_commit_callbacks
):
    cycle = cycles.start_cycle(agent=desk, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)
    login("rita-reviewer")
    page.goto(f"{live_server.url}/dreams/{cycle.pk}/")
    assert not page.locator("#cycle-rerun").count()

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#cycle-cancel")
    page.wait_for_timeout(300)
    cycle.refresh_from_db()
    assert cycle.status == DreamCycle.Status.QUEUED  # not confirmed: nothing sent

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#cycle-cancel")
    assert f"Dream cycle {cycle.pk} cancelled" in flash(page)
    cycle.refresh_from_db()
    assert cycle.status == DreamCycle.Status.CANCELLED
    assert not page.locator("#cycle-cancel").count()
    shot("cycle-cancelled")

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation(timeout=180_000):  # the eager cycle runs inside the request
        page.click("#cycle-rerun")
    fresh = DreamCycle.objects.exclude(pk=cycle.pk).get(agent=desk)
    assert page.url == f"{live_server.url}/dreams/{fresh.pk}/"
    assert fresh.status == DreamCycle.Status.SUCCEEDED, fresh.error
    assert f"Dream cycle {fresh.pk} finished" in flash(page)

    # An experiment stuck with failed replays: its worker died (the page offers Cancel).
    experiment = off_the_event_loop(_experiment, desk, django_capture_on_commit_callbacks)
    failed = list(experiment.replays.values_list("pk", flat=True)[:3])
    Replay.objects.filter(pk__in=failed).update(status=Replay.Status.FAILED, error="down")
    proposal = ProposalFactory(
        agent=desk,
        status="ready",
        base_version=experiment.baseline_version,
        candidate_version=experiment.candidate_version,
    )
    Experiment.objects.filter(pk=experiment.pk).update(
        status=Experiment.Status.RUNNING, finished_at=None, proposal=proposal
    )
    page.goto(f"{live_server.url}/proposals/{proposal.pk}/")
    assert not page.locator("#experiment-rerun").count()
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#experiment-cancel")
    assert f"Experiment {experiment.pk} cancelled" in flash(page)
    assert "Re-run experiment" in page.content()  # the failure message names the control
    experiment.refresh_from_db()
    assert experiment.stop_reason == "cancelled"
    shot("experiment-cancelled")

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation(timeout=180_000):  # the eager replays run inside the request
        page.click("#experiment-rerun")
    assert f"Experiment {experiment.pk} ran again: completed." in flash(page)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.COMPLETED
    assert not experiment.replays.filter(status=Replay.Status.FAILED).exists()
    assert not page.locator("#experiment-rerun").count()
    assert not page.locator("#experiment-cancel").count()
