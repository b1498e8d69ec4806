"""Every periodic task is in one schedule (settings.CELERY_BEAT_SCHEDULE), and beat installs it."""

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from config.celery import app

PERIODIC = {
    "dreams.enqueue_due_cycles",
    "dreams.resume_stale_cycles",
    "dreams.resume_stale_experiments",
    "dreams.poll_replay_batches",
    "dreams.managed.sync_all",
    "reviews.send_daily_digest",
    "reviews.resume_webhooks",
    "rollouts.check_rollouts",
    "otel.settle_traces",
}


def test_the_one_schedule_names_every_periodic_task_and_each_is_registered():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert tasks == PERIODIC
    app.loader.import_default_modules()  # autodiscovery: one tasks.py per app
    assert set(app.tasks) >= PERIODIC


@pytest.mark.django_db
def test_beat_writes_the_schedule_into_its_tables_at_start_up():
    assert not PeriodicTask.objects.filter(task__in=PERIODIC).exists()  # nothing at migrate

    # What `celery -A config beat` does first (setup_schedule → update_from_dict), entry by entry:
    # the scheduler's own sync would close the test's database connection.
    scheduler = DatabaseScheduler(app=app, lazy=True)
    for name, entry in app.conf.beat_schedule.items():
        scheduler.Entry.from_entry(name, app=app, **entry)

    installed = dict(PeriodicTask.objects.values_list("task", "name"))
    assert set(installed) >= PERIODIC
    digest = PeriodicTask.objects.select_related("crontab").get(task="reviews.send_daily_digest")
    assert digest.crontab.hour == str(settings.REVERIE_DIGEST_HOUR)


def test_canary_checks_are_routed_to_their_own_queue():
    for name in ("rollouts.check_rollouts", "rollouts.evaluate_rollout"):
        assert app.amqp.router.route({}, name)["queue"].name == "canary"
