"""agents.recount_steps: re-derives a run's step count, twice is harmless, a gone run is skipped."""

import pytest

from agents.models import Run
from agents.tasks import recount_steps
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


def test_recounting_fixes_a_wrong_step_count_and_is_idempotent(agent):
    run = RunFactory(agent=agent, step_count=7)

    recount_steps.delay(run.pk)
    recount_steps.delay(run.pk)

    assert Run.objects.get(pk=run.pk).step_count == 1


def test_recounting_a_deleted_run_does_nothing():
    recount_steps.delay(424242)  # no error, no retry

    assert not Run.objects.exists()
