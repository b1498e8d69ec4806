from django.urls import path

from agents import views

urlpatterns = [
    path("agents/", views.agents_overview, name="agents"),
    path("agents/<slug:slug>/", views.agent_page, name="agent-detail"),
    path("runs/", views.runs_page, name="runs"),
    path("runs/<int:pk>/", views.run_page, name="run-detail"),
    path("runs/<int:pk>/feedback/", views.run_feedback, name="run-feedback"),
    path("audit/", views.audit_page, name="audit"),
    path("workspace/", views.switch_workspace, name="switch-workspace"),
]
