from django.urls import path

from dreams import api

urlpatterns = [
    path("agents/<slug:slug>/dreams", api.AgentDreams.as_view(), name="api-agent-dreams"),
    path(
        "agents/<slug:slug>/dreaming-spend",
        api.AgentDreamingSpend.as_view(),
        name="api-agent-dreaming-spend",
    ),
    path("dreams/<int:pk>", api.DreamDetail.as_view(), name="api-dream"),
    path("dreams/<int:pk>/report.md", api.DreamReportMarkdown.as_view(), name="api-dream-report"),
]
