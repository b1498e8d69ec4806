"""Proposal REST routes, included under /api/v1/."""

from django.urls import path

from reviews import api

urlpatterns = [
    path("proposals", api.ProposalList.as_view(), name="api-proposals"),
    path("proposals/<int:pk>", api.ProposalRead.as_view(), name="api-proposal"),
    path("proposals/<int:pk>/decisions", api.ProposalDecision.as_view(), name="api-decisions"),
    path("proposals/<int:pk>/comments", api.ProposalComments.as_view(), name="api-comments"),
    path(
        "proposals/<int:pk>/comments/<int:comment_id>/resolution",
        api.ProposalThreadResolution.as_view(),
        name="api-thread-resolution",
    ),
    path("proposals/<int:pk>/assignment", api.ProposalAssignment.as_view(), name="api-assignment"),
    path("proposals/<int:pk>/rebase", api.ProposalRebase.as_view(), name="api-rebase"),
    path(
        "proposals/<int:pk>/rebase/resolve",
        api.ProposalResolve.as_view(),
        name="api-rebase-resolve",
    ),
    path("proposals/<int:pk>/run-set", api.ProposalRunSet.as_view(), name="api-proposal-run-set"),
    path("agents/<slug:slug>/proposals", api.AgentProposals.as_view(), name="api-agent-proposals"),
]
