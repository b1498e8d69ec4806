from django.urls import path

from reviews import views

urlpatterns = [
    path("", views.queue, name="home"),
    path("proposals/<int:pk>/", views.proposal_page, name="proposal-detail"),
    path("proposals/<int:pk>/replays/<int:run_id>/", views.replay_detail, name="replay-detail"),
    path("proposals/<int:pk>/decide/", views.decide, name="proposal-decide"),
    path("proposals/<int:pk>/edit/", views.edit_page, name="proposal-edit"),
    path("proposals/<int:pk>/rebase/", views.rebase_page, name="proposal-rebase"),
    path("proposals/<int:pk>/assign/", views.assign, name="proposal-assign"),
    path("proposals/<int:pk>/comment/", views.comment, name="proposal-comment"),
    path("agents/<slug:slug>/propose/", views.propose_page, name="agent-propose"),
]
