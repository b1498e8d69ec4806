"""Dreams pages, included at the site root (their URLs predate the app split)."""

from django.urls import path

from dreams import views

urlpatterns = [
    path("agents/<slug:slug>/dream/", views.dream_now, name="agent-dream"),
    path("agents/<slug:slug>/spend/", views.agent_spend, name="agent-spend"),
    path("dreams/", views.dreams_list, name="dreams"),
    path("dreams/<int:pk>/", views.cycle_page, name="cycle-detail"),
    path("dreams/<int:pk>/report.md", views.cycle_markdown, name="cycle-markdown"),
    path("dreams/<int:pk>/cancel/", views.cycle_cancel, name="cycle-cancel"),
    path("dreams/<int:pk>/rerun/", views.cycle_rerun, name="cycle-rerun"),
    path("experiments/<int:pk>/cancel/", views.experiment_cancel, name="experiment-cancel"),
    path("experiments/<int:pk>/rerun/", views.experiment_rerun, name="experiment-rerun"),
]
