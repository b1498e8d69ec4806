"""Handlers for structured (forced-tool) requests to the simulated model, keyed by tool name.

A handler takes the whole request body (model, system, tools, messages, ...) and returns the
input of the forced tool. It must derive that input from the request alone.
"""

import importlib
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]

HANDLER_MODULES = ["dreams.simulated.judging", "dreams.simulated.dreaming"]

_handlers: dict[str, Handler] = {}
_loaded = False


def register(tool_name: str) -> Callable[[Handler], Handler]:
    def decorator(handler: Handler) -> Handler:
        _handlers[tool_name] = handler
        return handler

    return decorator


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    _loaded = True


def get_handler(tool_name: str) -> Handler | None:
    _load()
    return _handlers.get(tool_name)


def registered_tools() -> list[str]:
    _load()
    return sorted(_handlers)
