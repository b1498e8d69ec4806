from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView


@csrf_exempt  # answers every method with the same 404; it changes nothing
def api_not_found(request: HttpRequest) -> JsonResponse:
    body = {"error": {"code": "not_found", "message": "No such API endpoint.", "fields": {}}}
    return JsonResponse(body, status=404)


urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/otel/", include("agents.otel.urls")),  # OTLP/HTTP: protobuf, not in the schema
    path("api/v1/", include("agents.api_urls")),
    path("api/v1/", include("dreams.api_urls")),
    path("api/v1/", include("reviews.api_urls")),
    path("api/v1/", include("rollouts.api_urls")),
    # Any other /api/ path answers in the API's error shape, not with the HTML 404 page.
    re_path(r"^api/", api_not_found),
    path("rollouts/", include("rollouts.urls")),
    path("", include("agents.urls")),
    path("", include("dreams.urls")),
    path("", include("reviews.urls")),
]
