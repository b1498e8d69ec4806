from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("agents.api_urls")),
    path("api/v1/", include("dreams.api_urls")),
    path("api/v1/", include("reviews.api_urls")),
    path("api/v1/", include("reviews.api_urls_rollouts")),
    path("rollouts/", include("reviews.urls_rollouts")),
    path("", include("reviews.urls")),
    path("", include("agents.urls")),
]
