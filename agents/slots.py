"""Page slots: a page in a lower app leaves a named place that an app higher in the flow fills.

Imports point down the flow (agents ← dreams ← reviews ← rollouts), so a proposal page in
`reviews` cannot name a rollout URL itself. The higher app registers a renderer in its
`AppConfig.ready()`; the page writes `{% slot "proposal-actions" proposal=proposal %}`.
"""

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

# A renderer returns rendered template output (already escaped) or "" when it has nothing to add.
Renderer = Callable[[HttpRequest | None, dict[str, Any]], str]

_renderers: dict[str, list[Renderer]] = {}


def register(slot: str, renderer: Renderer) -> None:
    """Fill `slot` with `renderer`'s output on every page that has it (once per renderer)."""
    renderers = _renderers.setdefault(slot, [])
    if renderer not in renderers:
        renderers.append(renderer)


def render_slot(slot: str, request: HttpRequest | None, context: dict[str, Any]) -> SafeString:
    """Every registered renderer's output for `slot`, in registration order."""
    outputs = [renderer(request, context) for renderer in _renderers.get(slot, [])]
    # Renderers return template output, already autoescaped: join it without escaping again.
    return format_html_join("", "{}", ((SafeString(out),) for out in outputs if out))
