"""Rollout pages; the coordinator includes this module at /rollouts/."""

from django.urls import path

from rollouts import views

urlpatterns = [
    path("", views.rollout_list, name="rollout-list"),
    path("start/<int:proposal_id>/", views.rollout_start, name="rollout-start"),
    path("<int:pk>/", views.rollout_detail, name="rollout-detail"),
    path("<int:pk>/approve/", views.rollout_approve, name="rollout-approve"),
    path("<int:pk>/halt/", views.rollout_halt, name="rollout-halt"),
    path("<int:pk>/roll-back/", views.rollout_roll_back, name="rollout-roll-back"),
    path("agents/<slug:slug>/split/", views.agent_split_fragment, name="agent-split"),
]
