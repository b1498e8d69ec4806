"""`GET /api/v1/agents/<slug>/config?key=`: which config version a production agent should run.

The hot path makes one indexed query (the agent's routing fields joined with the two versions'
content hashes). API keys are looked up through a short in-process cache and resolved version
payloads are cached per (version, content hash), which is safe because versions are immutable.
"""

import hashlib
import json
import threading
import time
from collections.abc import Iterable
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.authentication import LAST_USED_RESOLUTION, ApiKeyAuthentication, ApiKeyPrincipal
from agents.models import ApiKey, ConfigVersion, hash_api_key
from agents.routing import RoutingState, choose_arm
from agents.scopes import HasScope
from agents.throttling import ConfigRateThrottle
from config.api import error_response

PAUSED_RETRY_AFTER_SECONDS = 60
_CACHE_LIMIT = 4096
_lock = threading.Lock()
_key_cache: dict[str, tuple[float, ApiKey | None]] = {}
_body_cache: dict[tuple[int, str, str, int, str], tuple[bytes, str]] = {}


def clear_caches() -> None:
    """Forget cached keys and payloads (tests; a revoked key otherwise expires with the TTL)."""
    with _lock:
        _key_cache.clear()
        _body_cache.clear()
        _routing_cache.clear()


class CachedApiKeyAuthentication(ApiKeyAuthentication):
    """Bearer API keys, cached in-process for REVERIE_CONFIG_AUTH_CACHE_SECONDS."""

    def authenticate(self, request: Any) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw = header.partition(" ")
        if scheme != self.keyword:
            return None
        raw = raw.strip()
        if not raw:
            raise exceptions.AuthenticationFailed("Empty bearer token.")
        key_hash = hash_api_key(raw)
        now = time.monotonic()
        cached = _key_cache.get(key_hash)
        if cached is not None and cached[0] > now:
            key = cached[1]
        else:
            key = ApiKey.objects.select_related("workspace").filter(key_hash=key_hash).first()
            if key is not None and not key.is_active:
                key = None
            with _lock:
                if len(_key_cache) > _CACHE_LIMIT:
                    _key_cache.clear()
                _key_cache[key_hash] = (now + settings.REVERIE_CONFIG_AUTH_CACHE_SECONDS, key)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        wall = timezone.now()
        if key.last_used_at is None or wall - key.last_used_at > LAST_USED_RESOLUTION:
            key.last_used_at = wall  # set first: concurrent requests skip the write
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=wall)
        return ApiKeyPrincipal(key), key


# One indexed lookup on (workspace_id, slug) joined with the two versions; plain SQL because
# building the ORM query costs more than running it on this path.
_ROUTING_SQL = """
SELECT a.slug, a.is_paused, a.routing_salt, a.canary_percent,
       a.stable_version_id, s.content_hash, s.number,
       a.canary_version_id, c.content_hash, c.number
FROM agents_agent a
LEFT JOIN agents_configversion s ON s.id = a.stable_version_id
LEFT JOIN agents_configversion c ON c.id = a.canary_version_id
WHERE a.workspace_id = %s AND a.slug = %s
"""

_routing_cache: dict[tuple[int, str], tuple[float, tuple[Any, ...] | None]] = {}


def routing_row(*, workspace_id: int, slug: str) -> tuple[Any, ...] | None:
    """The agent's routing fields, cached for REVERIE_CONFIG_ROUTING_CACHE_SECONDS (0 = never)."""
    ttl = settings.REVERIE_CONFIG_ROUTING_CACHE_SECONDS
    now = time.monotonic()
    if ttl > 0:
        hit = _routing_cache.get((workspace_id, slug))
        if hit is not None and hit[0] > now:
            return hit[1]
    with connection.cursor() as cursor:
        cursor.execute(_ROUTING_SQL, [workspace_id, slug])
        row = cursor.fetchone()
    if ttl > 0:
        with _lock:
            if len(_routing_cache) > _CACHE_LIMIT:
                _routing_cache.clear()
            _routing_cache[(workspace_id, slug)] = (now + ttl, row)
    return row


def _config_body(
    *, agent_slug: str, arm: str, version_id: int, content_hash: str, number: int
) -> tuple[bytes, str]:
    """The JSON body and strong ETag for one (agent, arm, version), built once per process."""
    cache_key = (version_id, content_hash, arm, number, agent_slug)
    hit = _body_cache.get(cache_key)
    if hit is not None:
        return hit
    version = ConfigVersion.objects.get(pk=version_id)
    body = json.dumps(
        {
            "agent": agent_slug,
            "arm": arm,
            "version": version.number,
            "content_hash": version.content_hash,
            "model": version.model,
            "system_prompt": version.system_prompt,
            "memory_documents": version.memory_documents,
            "tools": version.tools,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    with _lock:
        if len(_body_cache) > _CACHE_LIMIT:
            _body_cache.clear()
        _body_cache[cache_key] = (body, etag)
    return body, etag


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    # Weak comparison (RFC 9110 §13.1.2): W/"x" matches "x".
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in candidates


class JsonOnlyNegotiation(BaseContentNegotiation):
    """The endpoint only speaks JSON: skip parsing the Accept header on the hot path."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> Any:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class AgentConfig(APIView):
    content_negotiation_class = JsonOnlyNegotiation
    authentication_classes = [CachedApiKeyAuthentication]
    permission_classes = [HasScope("ingest")]
    throttle_classes = [ConfigRateThrottle]  # its own budget, separate from the rest of the API
    renderer_classes = [JSONRenderer]

    @extend_schema(
        # Same bearer scheme as every other endpoint; the class differs only by its cache.
        auth=[{"apiKey": []}],  # type: ignore[list-item]  # a security requirement; hinted as names
        summary="Resolve the config version a production agent should run",
        description=(
            "Sticky routing between the agent's stable and canary versions. `key` is any stable "
            "identifier of the caller's unit of traffic (user id, conversation id). The key's "
            "bucket is the first 8 bytes of sha256(salt + ':' + key), big-endian, mod 10,000 (the "
            "salt is per agent); it is in the canary when the "
            "bucket is below canary_percent × 100, so a key stays in the canary as the percent "
            "grows. **Without a key the stable version is always returned.** The response has a "
            "strong `ETag`; send it back in `If-None-Match` to get `304 Not Modified` while "
            "your arm and version are unchanged. A paused agent (kill switch) answers "
            "`423 Locked` with error code `agent_paused` and a `Retry-After` header: stop "
            "serving traffic with this agent and ask again later. Routing changes (a stage "
            "approval, a halt) are served by every worker within "
            "REVERIE_CONFIG_ROUTING_CACHE_SECONDS (default 1 s)."
        ),
        parameters=[
            OpenApiParameter(
                "key", OpenApiTypes.STR, OpenApiParameter.QUERY, description="sticky routing key"
            )
        ],
        responses={
            200: OpenApiResponse(
                response={
                    "type": "object",
                    "properties": {
                        "agent": {"type": "string"},
                        "arm": {"type": "string", "enum": ["stable", "canary"]},
                        "version": {"type": "integer"},
                        "content_hash": {"type": "string"},
                        "model": {"type": "string"},
                        "system_prompt": {"type": "string"},
                        "memory_documents": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "tools": {"type": "array", "items": {"type": "object"}},
                    },
                },
                description="The version to run.",
            ),
            304: OpenApiResponse(description="Unchanged since the ETag you sent."),
            401: OpenApiResponse(description="Missing or invalid API key."),
            404: OpenApiResponse(description="No such agent in the key's workspace."),
            409: OpenApiResponse(description="The agent has no stable version yet."),
            423: OpenApiResponse(description="The agent is paused (kill switch)."),
            429: OpenApiResponse(
                description="The key's config budget (REVERIE_CONFIG_RATE_LIMIT) is used up; "
                "retry after `Retry-After` seconds."
            ),
        },
    )
    def get(self, request: Request, slug: str) -> HttpResponse | Response:
        key = cast(ApiKey, request.auth)  # CachedApiKeyAuthentication's
        row = routing_row(workspace_id=key.workspace_id, slug=slug)
        if row is None:
            return error_response("not_found", "No such agent in this workspace.", status_code=404)
        (
            agent_slug,
            is_paused,
            salt,
            percent,
            stable_id,
            stable_hash,
            stable_number,
            canary_id,
            canary_hash,
            canary_number,
        ) = row
        if is_paused:
            response: HttpResponse | Response = error_response(
                "agent_paused",
                "This agent is paused by its operators; stop serving it and retry later.",
                status_code=423,
            )
            response["Retry-After"] = str(PAUSED_RETRY_AFTER_SECONDS)
            return response
        if stable_id is None:
            return error_response(
                "no_stable_version", "This agent has no stable version yet.", status_code=409
            )
        routing_key = request.query_params.get("key") or None
        arm, _ = choose_arm(
            RoutingState(
                salt=salt,
                stable_version_id=stable_id,
                canary_version_id=canary_id,
                canary_percent=percent,
            ),
            key=routing_key,
        )
        if arm == "canary":
            version_id, content_hash, number = canary_id, canary_hash, canary_number
        else:
            version_id, content_hash, number = stable_id, stable_hash, stable_number
        body, etag = _config_body(
            agent_slug=agent_slug,
            arm=arm,
            version_id=version_id,
            content_hash=content_hash,
            number=number,
        )
        if _etag_matches(request.META.get("HTTP_IF_NONE_MATCH", ""), etag):
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(body, content_type="application/json")
        response["ETag"] = etag
        response["Cache-Control"] = "private, no-cache"
        response["Vary"] = "Authorization"
        return response
