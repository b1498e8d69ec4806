from django.urls import path

from agents import views

urlpatterns = [
    path("", views.home, name="home"),
    path("runs/<int:pk>/", views.run_page, name="run-detail"),
    path("workspace/", views.switch_workspace, name="switch-workspace"),
]
