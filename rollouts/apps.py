from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    """Progressive delivery: rollouts and stages, canary analysis, automatic halt."""

    name = "rollouts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents import slots
        from rollouts import views

        slots.register("proposal-actions", views.proposal_actions)
        slots.register("agent-panels", views.agent_split_panel)
