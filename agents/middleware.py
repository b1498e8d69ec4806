"""Attach the current workspace membership to each request (lazily); the request type views take."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject
from django_htmx.middleware import HtmxDetails

from agents.access import current_membership


class HtmxHttpRequest(HttpRequest):
    """A page's request: django-htmx's middleware sets `htmx` (django-htmx's typing advice)."""

    htmx: HtmxDetails


class CurrentWorkspaceMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.membership = SimpleLazyObject(lambda: current_membership(request))  # type: ignore[attr-defined]
        return self.get_response(request)
