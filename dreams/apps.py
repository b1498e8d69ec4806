from django.apps import AppConfig


class DreamsConfig(AppConfig):
    name = "dreams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents import slots
        from dreams import views

        slots.register("agent-actions", views.agent_actions)
        slots.register("agent-cards", views.agent_cards)
        slots.register("agent-sections", views.agent_sections)
