from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents import slots
        from reviews import notifications, views

        notifications.connect_receivers()
        slots.register("agent-actions", views.agent_actions)
        slots.register("agent-versions", views.agent_versions)
