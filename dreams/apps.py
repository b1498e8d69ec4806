from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DreamsConfig(AppConfig):
    name = "dreams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery autodiscovery imports only `dreams.tasks`; these task modules live beside it.
        from dreams import schedules, tasks_dreaming  # noqa: F401
        from dreams.managed import tasks  # noqa: F401

        post_migrate.connect(schedules.ensure_schedules, sender=self)
