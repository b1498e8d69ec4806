"""`seed_demo` ends with one dream cycle, so a fresh demo's queue holds real, replayed proposals."""

from io import StringIO

import pytest
from django.core.management import call_command

from dreams.models import DreamCycle, Proposal

pytestmark = pytest.mark.django_db


def test_seed_demo_dreams_once_and_leaves_replayed_proposals_in_the_queue(
    django_capture_on_commit_callbacks,
):
    # The replays are enqueued after commit, as on a real server.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--runs", "160", stdout=StringIO())
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--runs", "160", stdout=StringIO())  # no second cycle

    cycle = DreamCycle.objects.get()
    assert cycle.status == DreamCycle.Status.SUCCEEDED
    ready = Proposal.objects.filter(cycle=cycle, status=Proposal.Status.READY)
    assert ready.exists()
    for proposal in ready:
        stats = proposal.latest_experiment.stats
        assert stats["fidelity"] >= 0.9
        assert stats["target"]["n"] > 0
