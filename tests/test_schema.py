"""The OpenAPI schema generates cleanly and documents every /api/v1/ route."""

import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver


def api_routes(patterns: list[Any] | None = None, prefix: str = "") -> set[str]:
    """Every route of the URLconf under /api/v1/, in OpenAPI form (`<slug:slug>` → `{slug}`)."""
    routes: set[str] = set()
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            routes |= api_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and route.startswith("api/v1/"):
            routes.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return routes


@pytest.fixture
def schema(tmp_path: Path) -> dict[str, Any]:
    target = tmp_path / "schema.yaml"
    # --fail-on-warn turns every drf-spectacular warning or error into a failed command.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=StringIO()
    )
    return yaml.safe_load(target.read_text())


def test_the_schema_generates_without_warnings_and_validates(schema):
    assert schema["info"]["title"] == "Reverie API"
    assert schema["components"]["securitySchemes"]


def test_every_api_route_is_in_the_schema(schema):
    routes = api_routes()

    assert "/api/v1/runs" in routes  # guards the walker itself
    # drf-spectacular may rename path parameters (`{pk}` becomes `{id}`): compare shapes.
    documented = {re.sub(r"\{\w+\}", "{}", path) for path in schema["paths"]}
    missing = sorted(r for r in routes if re.sub(r"\{\w+\}", "{}", r) not in documented)
    assert not missing, f"routes missing from the OpenAPI schema: {missing}"
