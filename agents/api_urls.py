from django.urls import path

from agents import api, routing_api, run_sets_api

urlpatterns = [
    # First: the hottest route (polled by production agents) resolves without trying the others.
    path("agents/<slug:slug>/config", routing_api.AgentConfig.as_view(), name="api-agent-config"),
    path("agents", api.AgentListCreate.as_view(), name="api-agents"),
    path("agents/<slug:slug>", api.AgentDetail.as_view(), name="api-agent"),
    path("agents/<slug:slug>/versions", api.ConfigVersionListCreate.as_view(), name="api-versions"),
    path(
        "agents/<slug:slug>/versions/<int:number>",
        api.ConfigVersionDetail.as_view(),
        name="api-version",
    ),
    path(
        "agents/<slug:slug>/run-sets",
        run_sets_api.RunSetListCreate.as_view(),
        name="api-run-sets",
    ),
    path(
        "agents/<slug:slug>/run-sets/<int:pk>",
        run_sets_api.RunSetDetail.as_view(),
        name="api-run-set",
    ),
    path(
        "agents/<slug:slug>/run-sets/<int:pk>/runs",
        run_sets_api.RunSetRuns.as_view(),
        name="api-run-set-runs",
    ),
    path("runs", api.RunListIngest.as_view(), name="api-runs"),
    path("runs/<int:pk>", api.RunDetail.as_view(), name="api-run"),
    path("feedback", api.FeedbackCreate.as_view(), name="api-feedback"),
]
