from django.urls import path

from dreams import api
from dreams.managed import api as managed_api

urlpatterns = [
    path("agents/<slug:slug>/dreams", api.AgentDreams.as_view(), name="api-agent-dreams"),
    path(
        "agents/<slug:slug>/dreaming-spend",
        api.AgentDreamingSpend.as_view(),
        name="api-agent-dreaming-spend",
    ),
    path("experiments/<int:pk>", api.ExperimentDetail.as_view(), name="api-experiment"),
    path("dreams/<int:pk>", api.DreamDetail.as_view(), name="api-dream"),
    path("dreams/<int:pk>/cancel", api.DreamCancel.as_view(), name="api-dream-cancel"),
    path("dreams/<int:pk>/rerun", api.DreamRerun.as_view(), name="api-dream-rerun"),
    path(
        "experiments/<int:pk>/cancel", api.ExperimentCancel.as_view(), name="api-experiment-cancel"
    ),
    path("experiments/<int:pk>/rerun", api.ExperimentRerun.as_view(), name="api-experiment-rerun"),
    path("dreams/<int:pk>/report.md", api.DreamReportMarkdown.as_view(), name="api-dream-report"),
    path(
        "agents/<slug:slug>/managed",
        managed_api.ManagedLinkDetail.as_view(),
        name="api-managed-link",
    ),
    path(
        "agents/<slug:slug>/managed/sync",
        managed_api.ManagedSync.as_view(),
        name="api-managed-sync",
    ),
    path(
        "agents/<slug:slug>/managed/dreams",
        managed_api.HostedDreamListCreate.as_view(),
        name="api-managed-dreams",
    ),
    path(
        "managed/proposals/<int:pk>/apply",
        managed_api.MemoryApply.as_view(),
        name="api-managed-apply",
    ),
    path("managed/webhooks", managed_api.ManagedWebhook.as_view(), name="api-managed-webhooks"),
]
