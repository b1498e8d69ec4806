from django.apps import AppConfig


class DreamsConfig(AppConfig):
    name = "dreams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery's autodiscovery only finds dreams/tasks.py; the connector's tasks live deeper.
        from dreams.managed import tasks  # noqa: F401
