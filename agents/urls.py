from django.urls import path

from agents import views

urlpatterns = [
    path("agents/", views.agents_overview, name="agents"),
    path("runs/", views.runs_page, name="runs"),
    path("runs/<int:pk>/", views.run_page, name="run-detail"),
    path("runs/<int:pk>/feedback/", views.run_feedback, name="run-feedback"),
    path("workspace/", views.switch_workspace, name="switch-workspace"),
]
