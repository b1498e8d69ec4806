"""Scoped API keys: the permission table over every API route (ingest / read / admin)."""

import re
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from agents import services
from agents.models import ApiKey
from agents.scopes import scope_for

METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC = {"api-managed-webhooks"}  # signed by Anthropic, no API key


def api_routes() -> list[tuple[str, str, Any]]:
    """(name, concrete path, view class) of every /api/v1/ route, converters filled in."""
    routes = []

    def walk(patterns: Any, prefix: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                path = prefix + str(entry.pattern)
                if not path.startswith("api/v1/"):
                    continue
                path = re.sub(r"<int:\w+>", "999999", path)
                path = re.sub(r"<slug:\w+>", "no-such-agent", path)
                view = getattr(entry.callback, "view_class", None)
                routes.append((entry.name, "/" + path, view))

    walk(get_resolver().url_patterns, "")
    return routes


def view_methods(view: Any) -> list[str]:
    return [m.upper() for m in METHODS if hasattr(view, m)]


def declared_scope(view: Any, method: str) -> str | None:
    for permission in getattr(view, "permission_classes", []):
        if hasattr(permission, "scope"):
            return permission.scope
    declared = getattr(view, "required_scopes", None)
    return declared.get(method) if declared else None


# The table: what each scope may do. Everything not listed needs admin.
INGEST_ALLOWED = {
    ("api-agent-config", "GET"),
    ("api-runs", "POST"),
    ("api-feedback", "POST"),
}


def expected_scope(name: str, method: str) -> str:
    if (name, method) in INGEST_ALLOWED:
        return "ingest"
    return "read" if method == "GET" else "admin"


def test_every_api_route_declares_the_scope_of_each_method():
    routes = api_routes()
    assert len(routes) > 15

    for name, _path, view in routes:
        if name in PUBLIC:
            assert view.authentication_classes == []
            continue
        for method in view_methods(view):
            assert declared_scope(view, method) == expected_scope(name, method), (name, method)


def test_an_undeclared_method_needs_admin():
    class Bare:
        pass

    assert scope_for(Bare(), "POST") == "admin"
    assert scope_for(Bare(), "GET") == "admin"


@pytest.fixture
def keys(workspace: Any) -> dict[str, str]:
    return {
        scope: services.create_api_key(workspace=workspace, name=scope, scope=scope)[1]
        for scope in ApiKey.Scope.values
    }


@pytest.mark.django_db
@pytest.mark.parametrize("scope", ApiKey.Scope.values)
def test_permission_table_over_every_api_route(keys: dict[str, str], scope: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys[scope]}")
    checked = 0
    for name, path, view in api_routes():
        if name in PUBLIC:
            continue
        for method in view_methods(view):
            response = getattr(client, method.lower())(path, {}, format="json")
            needed = expected_scope(name, method)
            allowed = scope == "admin" or scope == needed
            if allowed:
                assert response.status_code != 403, (scope, method, path, response.content)
            else:
                assert response.status_code == 403, (scope, method, path, response.status_code)
                if response["Content-Type"].startswith("application/json"):
                    assert needed in response.json()["error"]["message"]
            checked += 1
    assert checked > 20


def test_new_keys_are_ingest_by_default(workspace: Any):
    key, _raw = services.create_api_key(workspace=workspace, name="prod agent")

    assert key.scope == ApiKey.Scope.INGEST


def test_an_ingest_key_cannot_approve_a_rollout_or_write_memory(keys: dict[str, str]):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['ingest']}")

    assert client.post("/api/v1/rollouts/1/approve", {}, format="json").status_code == 403
    assert client.post("/api/v1/managed/proposals/1/apply", {}, format="json").status_code == 403
    assert client.post("/api/v1/agents/a/versions", {}, format="json").status_code == 403
    assert client.get("/api/v1/runs").status_code == 403


def test_admin_form_defaults_to_ingest(admin_client: Any):
    response = admin_client.get("/admin/agents/apikey/add/")

    assert response.status_code == 200
    assert 'value="ingest" selected' in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(("scope", "status"), [("ingest", 200), ("admin", 200), ("read", 403)])
def test_the_otlp_trace_route_needs_the_ingest_scope(keys: dict[str, str], scope: str, status: int):
    """POST /api/otel/v1/traces is plain Django (protobuf body), so it is checked here by hand."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from agents.models import Run

    client = APIClient()
    response = client.post(
        "/api/otel/v1/traces",
        ExportTraceServiceRequest().SerializeToString(),
        content_type="application/x-protobuf",
        HTTP_AUTHORIZATION=f"Bearer {keys[scope]}",
    )

    assert response.status_code == status, response.content
    if status == 403:
        assert b"ingest" in response.content
    assert not Run.objects.exists()
