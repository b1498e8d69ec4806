from django.urls import path

from reviews import views

urlpatterns = [
    path("", views.queue, name="home"),
    path("proposals/<int:pk>/", views.proposal_page, name="proposal-detail"),
    path("proposals/<int:pk>/replays/<int:run_id>/", views.replay_detail, name="replay-detail"),
    path("proposals/<int:pk>/decide/", views.decide, name="proposal-decide"),
    path("proposals/<int:pk>/edit/", views.edit_page, name="proposal-edit"),
    path("proposals/<int:pk>/rebase/", views.rebase_page, name="proposal-rebase"),
    path("proposals/<int:pk>/resolve/", views.resolve_conflict, name="proposal-resolve"),
    path("proposals/<int:pk>/assign/", views.assign, name="proposal-assign"),
    path("proposals/<int:pk>/run-set/", views.save_run_set, name="proposal-run-set"),
    path("proposals/<int:pk>/comment/", views.comment, name="proposal-comment"),
    path(
        "proposals/<int:pk>/threads/<int:comment_id>/resolve/",
        views.resolve_thread,
        name="proposal-thread-resolve",
    ),
    path("agents/<slug:slug>/propose/", views.propose_page, name="agent-propose"),
]
