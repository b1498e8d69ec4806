from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from agents.login import LoginView, ThrottledAdminAuthenticationForm
from config.health import healthz

# The admin's sign-in is throttled like the app's.
admin.site.login_form = ThrottledAdminAuthenticationForm


@csrf_exempt  # answers every method with the same 404; it changes nothing
def api_not_found(request: HttpRequest) -> JsonResponse:
    body = {"error": {"code": "not_found", "message": "No such API endpoint.", "fields": {}}}
    return JsonResponse(body, status=404)


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers and tools that ask for /favicon.ico get the pages' SVG icon."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("healthz", healthz, name="healthz"),  # liveness: no auth, no redirect to HTTPS
    path("admin/", admin.site.urls),
    path("favicon.ico", favicon),
    path("login/", LoginView.as_view(), name="login"),  # throttled per username + address
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
