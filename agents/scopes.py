"""API-key scopes: each API view declares the scope a key needs, per HTTP method.

`required_scopes = {"GET": "read", "POST": "ingest"}` on a view (checked by the default
permission class, `DeclaredScope`), or `permission_classes = [HasScope("ingest")]` for a view
with its own permission list. A method a view does not declare needs `admin` (fail closed).
Members signed in with a session are governed by their role instead.
"""

from typing import Any

from rest_framework.permissions import BasePermission, IsAuthenticated

from agents.models import ApiKey

ADMIN = ApiKey.Scope.ADMIN


def scope_for(view: Any, method: str) -> str:
    """The scope `view` declares for `method` (HEAD as GET, OPTIONS as read), else admin."""
    declared: dict[str, str] = getattr(view, "required_scopes", {})
    if method == "HEAD":
        method = "GET"
    if method == "OPTIONS":
        return declared.get("OPTIONS", ApiKey.Scope.READ)
    return declared.get(method, ADMIN)


def key_allows(request: Any, scope: str) -> bool:
    auth = getattr(request, "auth", None)
    return not isinstance(auth, ApiKey) or auth.grants(scope)


class DeclaredScope(IsAuthenticated):
    """Authenticated, and an API key must hold the scope the view declares for this method."""

    message = "This API key's scope does not allow this request."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not super().has_permission(request, view):
            return False
        scope = scope_for(view, request.method)
        if key_allows(request, scope):
            return True
        self.message = (
            f"This API key has scope {request.auth.scope!r}; this request needs {str(scope)!r}."
        )
        return False


def HasScope(scope: str) -> type[BasePermission]:  # noqa: N802 - reads as a permission class
    """A permission class requiring `scope` of API keys for every method: `HasScope("ingest")`."""

    class _HasScope(DeclaredScope):
        def has_permission(self, request: Any, view: Any) -> bool:
            if not IsAuthenticated.has_permission(self, request, view):
                return False
            if key_allows(request, scope):
                return True
            self.message = (
                f"This API key has scope {request.auth.scope!r}; this request needs {str(scope)!r}."
            )
            return False

    _HasScope.__name__ = f"HasScope_{scope}"
    _HasScope.scope = scope  # type: ignore[attr-defined]
    return _HasScope
