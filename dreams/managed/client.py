"""Build the `anthropic` client for a linked Managed Agent.

The API key is resolved per link from the environment at call time and never stored, logged or
rendered: REVERIE_MANAGED_API_KEYS maps key names to environment variable names; the link's
`api_key_name` (or else the Reverie workspace slug) picks one; ANTHROPIC_API_KEY is the fallback.
"""

import os

import anthropic
from django.conf import settings

from dreams.managed.models import ManagedAgentLink


class ManagedNotConfigured(Exception):
    """No API key (or webhook secret) is configured for this link; the message names no secret."""


def configured_key_names() -> dict[str, str]:
    """Key name → environment variable name, from REVERIE_MANAGED_API_KEYS."""
    names: dict[str, str] = {}
    for item in settings.REVERIE_MANAGED_API_KEYS.split(","):
        if "=" in item:
            name, env_var = (part.strip() for part in item.split("=", 1))
            if name and env_var:
                names[name] = env_var
    return names


def _api_key_for(link: ManagedAgentLink) -> str:
    names = configured_key_names()
    wanted = link.api_key_name or link.agent.workspace.slug
    if wanted in names:
        key = os.environ.get(names[wanted], "")
        if not key:
            raise ManagedNotConfigured(
                f"API key {wanted!r} points at environment variable {names[wanted]}, which is empty."
            )
        return key
    if link.api_key_name:
        raise ManagedNotConfigured(
            f"API key {link.api_key_name!r} is not listed in REVERIE_MANAGED_API_KEYS."
        )
    if settings.ANTHROPIC_API_KEY:
        return settings.ANTHROPIC_API_KEY
    raise ManagedNotConfigured(
        "No Anthropic API key for this workspace: set REVERIE_MANAGED_API_KEYS or ANTHROPIC_API_KEY."
    )


def api_key_configured(link: ManagedAgentLink) -> bool:
    """Whether a key resolves for this link (for pages and APIs; the key itself is never shown)."""
    try:
        _api_key_for(link)
    except ManagedNotConfigured:
        return False
    return True


def client_for(link: ManagedAgentLink, *, max_retries: int = 2) -> anthropic.Anthropic:
    """An SDK client scoped to the link's Anthropic workspace."""
    headers = {}
    if link.anthropic_workspace_id:
        headers["anthropic-workspace-id"] = link.anthropic_workspace_id
    return anthropic.Anthropic(
        api_key=_api_key_for(link),
        base_url=settings.REVERIE_MANAGED_BASE_URL or settings.ANTHROPIC_BASE_URL or None,
        max_retries=max_retries,
        timeout=60.0,
        default_headers=headers,
    )


def webhook_client() -> anthropic.Anthropic:
    """A client that only verifies webhooks (no request is sent, so no API key is needed)."""
    secret = settings.REVERIE_MANAGED_WEBHOOK_SECRET
    if not secret:
        raise ManagedNotConfigured("REVERIE_MANAGED_WEBHOOK_SECRET is not set.")
    return anthropic.Anthropic(api_key="unused-for-webhook-verification", webhook_key=secret)
