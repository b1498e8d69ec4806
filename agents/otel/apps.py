from django.apps import AppConfig


class OtelConfig(AppConfig):
    name = "agents.otel"
    label = "otel"
    verbose_name = "OpenTelemetry capture"
    default_auto_field = "django.db.models.BigAutoField"
