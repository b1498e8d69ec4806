"""Beat entries written under the old task names (reviews.check_rollouts, and the entries the
apps created at migrate time) give way to the one schedule in settings.CELERY_BEAT_SCHEDULE,
which beat writes into its tables at start-up."""

from django.db import migrations

OLD_NAMES = {
    "reviews.check_rollouts": "rollouts.check_rollouts",
    "reviews.evaluate_rollout": "rollouts.evaluate_rollout",
}


def forwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for old, new in OLD_NAMES.items():
        PeriodicTask.objects.filter(task=old).update(task=new)
    # The settings entry was keyed by the task name: its row is now a duplicate of the new key.
    PeriodicTask.objects.filter(name="reviews.check_rollouts").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rollouts", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
