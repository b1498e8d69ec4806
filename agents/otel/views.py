"""`POST /api/otel/v1/traces`: the OTLP/HTTP answer around `services.receive_spans`.

Per the OTLP/HTTP spec: 200 with an ExportTraceServiceResponse (partial_success when some
spans were rejected), 400 malformed, 401 bad key, 403 a key without the `ingest` scope, 413 too large, 415 wrong media type, and
429 / 503 with Retry-After when shedding load. Each key has its own rate limit
(REVERIE_OTLP_RATE_LIMIT, agents/throttling.py), answered like the API's: 429 with Retry-After
and the RateLimit-* / X-RateLimit-* headers. Error bodies are a google.rpc.Status encoded
like the request. Plain Django, not DRF: the body is protobuf, so it is not in the OpenAPI schema.
"""

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rest_framework import exceptions

from agents.authentication import ApiKeyAuthentication
from agents.models import ApiKey
from agents.otel import decode, services
from agents.throttling import OtlpRateThrottle

logger = logging.getLogger(__name__)


class _Load:
    """Requests in flight in this process, per API key: the basis for shedding load."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.per_key: Counter[int] = Counter()

    @contextmanager
    def admit(self, key_id: int) -> Iterator[int | None]:
        """Yields None when admitted, else the status to shed with (429: this key, 503: busy)."""
        with self.lock:
            if self.total >= settings.REVERIE_OTLP_MAX_CONCURRENT:
                verdict: int | None = 429 if self.per_key[key_id] else 503
            else:
                verdict = None
                self.total += 1
                self.per_key[key_id] += 1
        try:
            yield verdict
        finally:
            if verdict is None:
                with self.lock:
                    self.total -= 1
                    self.per_key[key_id] -= 1


LOAD = _Load()


def _answer(
    kind: str, status: int, message: str, *, retry: bool = False, retry_after: int | None = None
) -> HttpResponse:
    body, content_type = decode.status_body(kind, code=status, message=message)
    response = HttpResponse(body, status=status, content_type=content_type)
    if retry or retry_after is not None:
        seconds = (
            retry_after if retry_after is not None else settings.REVERIE_OTLP_RETRY_AFTER_SECONDS
        )
        response["Retry-After"] = str(seconds)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="reverie"'
    return response


@csrf_exempt
@require_POST
def traces(request: HttpRequest) -> HttpResponse:
    try:
        kind = decode.media_type(request.content_type)
    except decode.OtlpRejected as exc:
        return _answer(decode.JSON, exc.status, exc.message)
    try:
        authenticated = ApiKeyAuthentication().authenticate(request)
    except exceptions.AuthenticationFailed as exc:
        return _answer(kind, 401, str(exc.detail))
    if authenticated is None:
        return _answer(kind, 401, "Send the API key as Authorization: Bearer <key>.")
    key = authenticated[1]
    if not key.grants(ApiKey.Scope.INGEST):
        # Traces are capture: the same `ingest` scope as POST /api/v1/runs (agents/scopes.py).
        return _answer(
            kind, 403, f"This API key has scope {key.scope!r}; this request needs 'ingest'."
        )
    throttle = OtlpRateThrottle()
    if not throttle.allow_key(request, key):
        return _answer(
            kind,
            429,
            "This API key's trace rate limit is used up; retry later.",
            retry_after=int(throttle.wait()),
        )
    limit = settings.REVERIE_REQUEST_MAX_BYTES
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
        return _answer(kind, 413, f"Request body over {limit} bytes.")
    with LOAD.admit(key.pk) as shed:
        if shed is not None:
            return _answer(kind, shed, "Reverie is busy; retry later.", retry=True)
        try:
            data = decode.decompress(
                request.body, request.headers.get("Content-Encoding"), max_bytes=limit
            )
            spans = decode.spans_of(decode.parse_request(data, kind))
        except RequestDataTooBig:
            return _answer(kind, 413, f"Request body over {limit} bytes.")
        except decode.OtlpRejected as exc:
            return _answer(kind, exc.status, exc.message)
        try:
            result = services.receive_spans(workspace=key.workspace, spans=spans)
        except OperationalError:
            logger.warning("OTLP export shed: the database is unavailable", exc_info=True)
            return _answer(kind, 503, "The database is busy; retry later.", retry=True)
    message = "; ".join(result.errors)
    if result.ignored and not result.rejected:
        message = f"{result.ignored} span(s) were not GenAI spans and were ignored"
    body, content_type = decode.export_response(kind, rejected=result.rejected, message=message)
    return HttpResponse(body, status=200, content_type=content_type)
