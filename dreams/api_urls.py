from django.urls import path

from dreams.managed import api as managed_api

urlpatterns: list = [
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
