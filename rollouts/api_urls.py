"""Rollout REST routes; the coordinator includes this module under /api/v1/."""

from django.urls import path

from rollouts import api

urlpatterns = [
    path("rollouts", api.RolloutListCreate.as_view(), name="api-rollouts"),
    path("rollouts/<int:pk>", api.RolloutDetail.as_view(), name="api-rollout"),
    path(
        "rollouts/<int:pk>/approve",
        api.RolloutAction.as_view(action_name="approve"),
        name="api-rollout-approve",
    ),
    path(
        "rollouts/<int:pk>/halt",
        api.RolloutAction.as_view(action_name="halt"),
        name="api-rollout-halt",
    ),
    path(
        "rollouts/<int:pk>/roll-back",
        api.RolloutAction.as_view(action_name="roll_back"),
        name="api-rollout-roll-back",
    ),
]
