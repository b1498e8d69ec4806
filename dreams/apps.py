from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DreamsConfig(AppConfig):
    name = "dreams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery autodiscovery imports `dreams.tasks`; the Managed Agents package keeps its own.
        from dreams import schedules, signals
        from dreams.managed import tasks

        post_migrate.connect(schedules.ensure_schedules, sender=self)
        signals.proposal_decided.connect(
            tasks.on_proposal_decided, dispatch_uid="dreams.managed.archive_output"
        )
