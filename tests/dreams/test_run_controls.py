"""Cancel and re-run from the pages: the cycle page's and the proposal page's buttons go through
the API's services, show only when the state allows them, need a reviewer, and say in their
flash what happened."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from agents.models import Membership
from dreams import cycles
from dreams.models import DreamCycle, Experiment, Replay
from tests.dreams.test_recovery import _experiment, seeded  # noqa: F401
from tests.factories import (
    DreamCycleFactory,
    ExperimentFactory,
    MembershipFactory,
    ProposalFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def _flashes(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def running_cycle(agent):
    return DreamCycleFactory(agent=agent, status=DreamCycle.Status.RUNNING, finished_at=None)


@pytest.fixture
def running_experiment(agent):
    proposal = ProposalFactory(agent=agent, status="replaying")
    return ExperimentFactory(proposal=proposal, status=Experiment.Status.RUNNING, stats={})


# -- the cycle page ----------------------------------------------------------------------------


def test_the_cycle_page_shows_cancel_while_it_runs_and_re_run_after(client, reviewer, agent):
    cycle = DreamCycleFactory(agent=agent, status=DreamCycle.Status.RUNNING, finished_at=None)
    client.force_login(reviewer)
    page = client.get(reverse("cycle-detail", args=[cycle.pk])).content.decode()
    assert 'id="cycle-cancel"' in page and 'id="cycle-rerun"' not in page
    assert 'hx-confirm="Cancel this dream cycle?' in page
    assert reverse("cycle-cancel", args=[cycle.pk]) in page

    DreamCycle.objects.filter(pk=cycle.pk).update(status=DreamCycle.Status.FAILED)
    page = client.get(reverse("cycle-detail", args=[cycle.pk])).content.decode()
    assert 'id="cycle-rerun"' in page and 'id="cycle-cancel"' not in page


def test_cancel_from_the_cycle_page_cancels_through_the_service(client, reviewer, running_cycle):
    client.force_login(reviewer)
    response = client.post(
        reverse("cycle-cancel", args=[running_cycle.pk]), headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("cycle-detail", args=[running_cycle.pk])
    running_cycle.refresh_from_db()
    assert running_cycle.status == DreamCycle.Status.CANCELLED
    assert running_cycle.error == "Cancelled by hand."  # the API's reason
    assert _flashes(response) == [
        f"Dream cycle {running_cycle.pk} cancelled; its runs can be studied again."
    ]

    page = client.get(response["HX-Redirect"]).content.decode()  # htmx reloads: the flash
    assert f"Dream cycle {running_cycle.pk} cancelled; its runs can be studied again." in page

    again = client.post(reverse("cycle-cancel", args=[running_cycle.pk]))
    assert _flashes(again) == [f"Dream cycle {running_cycle.pk} is cancelled: nothing to cancel."]


# Committed for real (transaction=True): the eager task runs when the service's transaction
# commits, inside the request, as in the embedded mode, so the flash can say how it went.
@pytest.mark.django_db(transaction=True)
def test_re_run_from_the_cycle_page_starts_a_new_cycle_and_says_how_it_went(
    client,
    seeded,  # noqa: F811
):
    reviewer = UserFactory(username="rita")
    MembershipFactory(user=reviewer, workspace=seeded.workspace, role=Membership.Role.REVIEWER)
    cycle = cycles.start_cycle(agent=seeded, trigger=DreamCycle.Trigger.MANUAL, enqueue=False)
    cycles.cancel_cycle(cycle=cycle, reason="test")
    client.force_login(reviewer)
    response = client.post(reverse("cycle-rerun", args=[cycle.pk]))
    fresh = DreamCycle.objects.exclude(pk=cycle.pk).get(agent=seeded)
    assert response.status_code == 302
    assert response["Location"] == reverse("cycle-detail", args=[fresh.pk])
    assert fresh.status == DreamCycle.Status.SUCCEEDED, fresh.error
    drafted = fresh.proposals.count()
    assert _flashes(response) == [
        f"Dream cycle {fresh.pk} finished: {drafted} proposal{'s' if drafted != 1 else ''} drafted."
    ]


def test_re_run_of_an_active_cycle_is_refused_with_an_error_flash(client, reviewer, running_cycle):
    client.force_login(reviewer)
    response = client.post(reverse("cycle-rerun", args=[running_cycle.pk]))
    assert _flashes(response) == [
        f"Could not re-run dream cycle {running_cycle.pk}: Cycle {running_cycle.pk} is still "
        "running."
    ]
    assert DreamCycle.objects.count() == 1


def test_a_viewer_sees_no_cycle_controls_and_cannot_post_them(client, viewer, running_cycle):
    client.force_login(viewer)
    page = client.get(reverse("cycle-detail", args=[running_cycle.pk])).content.decode()
    assert 'id="cycle-cancel"' not in page
    assert client.post(reverse("cycle-cancel", args=[running_cycle.pk])).status_code == 403
    assert client.post(reverse("cycle-rerun", args=[running_cycle.pk])).status_code == 403
    running_cycle.refresh_from_db()
    assert running_cycle.status == DreamCycle.Status.RUNNING


def test_a_non_member_cannot_cancel_or_re_run_a_cycle(client, outsider, running_cycle):
    client.force_login(outsider)
    assert client.post(reverse("cycle-cancel", args=[running_cycle.pk])).status_code == 404
    assert client.post(reverse("cycle-rerun", args=[running_cycle.pk])).status_code == 404
    running_cycle.refresh_from_db()
    assert running_cycle.status == DreamCycle.Status.RUNNING


def test_the_controls_need_a_post_and_a_login(client, reviewer, running_cycle):
    url = reverse("cycle-cancel", args=[running_cycle.pk])
    assert client.post(url).status_code == 302  # to the login page
    client.force_login(reviewer)
    assert client.get(url).status_code == 405
    running_cycle.refresh_from_db()
    assert running_cycle.status == DreamCycle.Status.RUNNING


def test_the_controls_refuse_a_post_without_the_csrf_token(reviewer, running_cycle):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    assert client.post(reverse("cycle-cancel", args=[running_cycle.pk])).status_code == 403
    running_cycle.refresh_from_db()
    assert running_cycle.status == DreamCycle.Status.RUNNING


# -- the proposal page -------------------------------------------------------------------------


def test_the_proposal_page_shows_cancel_for_a_running_experiment(
    client, reviewer, running_experiment
):
    client.force_login(reviewer)
    url = reverse("proposal-detail", args=[running_experiment.proposal_id])
    page = client.get(url).content.decode()
    assert 'id="experiment-cancel"' in page and 'id="experiment-rerun"' not in page

    Experiment.objects.filter(pk=running_experiment.pk).update(status=Experiment.Status.COMPLETED)
    page = client.get(url).content.decode()
    assert 'id="experiment-cancel"' not in page and 'id="experiment-rerun"' not in page

    Experiment.objects.filter(pk=running_experiment.pk).update(status=Experiment.Status.FAILED)
    page = client.get(url).content.decode()
    assert 'id="experiment-rerun"' in page and 'id="experiment-cancel"' not in page


def test_cancel_from_the_proposal_page_cancels_through_the_service(
    client, reviewer, running_experiment
):
    client.force_login(reviewer)
    response = client.post(
        reverse("experiment-cancel", args=[running_experiment.pk]), headers={"HX-Request": "true"}
    )
    assert response["HX-Redirect"] == reverse(
        "proposal-detail", args=[running_experiment.proposal_id]
    )
    running_experiment.refresh_from_db()
    assert running_experiment.status == Experiment.Status.FAILED
    assert running_experiment.stop_reason == "cancelled"
    assert "Re-run experiment" in running_experiment.error  # names the real control
    assert _flashes(response) == [
        f"Experiment {running_experiment.pk} cancelled; the replays already done are kept, and "
        "Re-run experiment replays the rest."
    ]
    page = client.get(reverse("proposal-detail", args=[running_experiment.proposal_id]))
    assert 'id="experiment-rerun"' in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_re_run_from_the_proposal_page_replays_and_says_how_it_went(
    client,
    seeded,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    reviewer = UserFactory(username="rita")
    MembershipFactory(user=reviewer, workspace=seeded.workspace, role=Membership.Role.REVIEWER)
    experiment = _experiment(seeded, django_capture_on_commit_callbacks, execute=True)
    # Some replays failed (their model was unavailable), so the experiment failed.
    failed = list(experiment.replays.values_list("pk", flat=True)[:3])
    Replay.objects.filter(pk__in=failed).update(status=Replay.Status.FAILED, error="down")
    proposal = ProposalFactory(
        agent=seeded,
        status="ready",
        base_version=experiment.baseline_version,
        candidate_version=experiment.candidate_version,
    )
    Experiment.objects.filter(pk=experiment.pk).update(
        status=Experiment.Status.FAILED, error="3 replays failed", proposal=proposal
    )
    experiment.refresh_from_db()
    client.force_login(reviewer)
    page = client.get(reverse("proposal-detail", args=[experiment.proposal_id])).content.decode()
    assert 'id="experiment-rerun"' in page
    response = client.post(reverse("experiment-rerun", args=[experiment.pk]))
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.COMPLETED, experiment.error
    assert _flashes(response)[-1] == f"Experiment {experiment.pk} ran again: completed."

    again = client.post(reverse("experiment-rerun", args=[experiment.pk]))
    assert _flashes(again)[-1].startswith(f"Could not re-run: Experiment {experiment.pk} is")


def test_a_viewer_sees_no_experiment_controls_and_cannot_post_them(
    client, viewer, running_experiment
):
    client.force_login(viewer)
    page = client.get(reverse("proposal-detail", args=[running_experiment.proposal_id]))
    assert 'id="experiment-cancel"' not in page.content.decode()
    assert (
        client.post(reverse("experiment-cancel", args=[running_experiment.pk])).status_code == 403
    )
    assert client.post(reverse("experiment-rerun", args=[running_experiment.pk])).status_code == 403
    running_experiment.refresh_from_db()
    assert running_experiment.status == Experiment.Status.RUNNING


def test_a_non_member_cannot_cancel_or_re_run_an_experiment(client, outsider, running_experiment):
    client.force_login(outsider)
    assert (
        client.post(reverse("experiment-cancel", args=[running_experiment.pk])).status_code == 404
    )
    assert client.post(reverse("experiment-rerun", args=[running_experiment.pk])).status_code == 404
    running_experiment.refresh_from_db()
    assert running_experiment.status == Experiment.Status.RUNNING
