"""Bearer API-key authentication for the REST API."""

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from agents.models import ApiKey, hash_api_key

LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyPrincipal:
    """Stands in for a user when a request is made with an API key."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, key: ApiKey) -> None:
        self.key = key

    def get_username(self) -> str:
        return f"api-key:{self.key.prefix}"

    def __str__(self) -> str:
        return self.get_username()


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Any) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword.lower():  # auth schemes are case-insensitive
            return None
        raw = raw.strip()
        if not raw:
            raise exceptions.AuthenticationFailed("Empty bearer token.")
        key = ApiKey.objects.select_related("workspace").filter(key_hash=hash_api_key(raw)).first()
        if key is None or not key.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)  # at most once a minute
            key.last_used_at = now
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="reverie"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents API-key auth in the OpenAPI schema (drf-spectacular finds it by target class)."""

    target_class = "agents.authentication.ApiKeyAuthentication"
    name = "apiKey"
    match_subclasses = True  # the config endpoint's cached variant is the same scheme

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A workspace API key (created in the admin, shown once): `rv_…`",
        }
