"""OTLP/HTTP trace bodies → plain span dicts, with the spec's error answers as exceptions.

Accepts binary protobuf (`application/x-protobuf`) and OTLP JSON (`application/json`, whose
trace and span ids are hex, not base64), optionally gzip-compressed; parsing is
`opentelemetry-proto`'s generated code.
"""

import base64
import re
import zlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
SPAN_KINDS = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
HEX_ID = re.compile(r"^[0-9a-fA-F]*$")


class OtlpRejected(Exception):
    """The request as a whole is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str | None) -> str:
    """`application/x-protobuf` or `application/json`; anything else is a 415."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    raise OtlpRejected(
        415, f"Unsupported Content-Type {kind or '(none)'!r}: send {PROTOBUF} or {JSON}."
    )


def decompress(body: bytes, encoding: str | None, *, max_bytes: int) -> bytes:
    """The body without its Content-Encoding (gzip or none), refusing more than `max_bytes`."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpRejected(415, f"Unsupported Content-Encoding {encoding!r}: use gzip or none.")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise OtlpRejected(400, f"Body is not valid {encoding} ({exc}).") from exc
    if len(data) > max_bytes:
        raise OtlpRejected(413, f"Decompressed body over {max_bytes} bytes.")
    return data


def parse_request(data: bytes, kind: str) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest from a protobuf or OTLP JSON body; 400 when malformed."""
    message = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            message.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise OtlpRejected(
                400, f"Malformed protobuf ExportTraceServiceRequest ({exc})."
            ) from exc
        return message
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OtlpRejected(400, f"Malformed JSON ({exc}).") from exc
    if not isinstance(document, dict):
        raise OtlpRejected(400, "Expected an OTLP JSON object with resourceSpans.")
    try:
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise OtlpRejected(400, f"Invalid OTLP JSON ({exc}).") from exc
    return message


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP JSON writes traceId/spanId/parentSpanId as hex; protobuf's JSON mapping wants base64."""
    for resource_spans in _list(document, "resourceSpans", "resource_spans"):
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _list(scope_spans, "spans"):
                _convert_ids(span)
                for link in _list(span, "links"):
                    _convert_ids(link)


def _list(parent: Any, *names: str) -> list[Any]:
    if not isinstance(parent, dict):
        raise ValueError("expected an object")
    for name in names:
        value = parent.get(name)
        if value is not None:
            if not isinstance(value, list):
                raise ValueError(f"{name} must be a list")
            return value
    return []


def _convert_ids(span: Any) -> None:
    if not isinstance(span, dict):
        raise ValueError("each span must be an object")
    for name in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
        value = span.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not HEX_ID.match(value) or len(value) % 2:
            raise ValueError(f"{name} must be a hex string")
        span[name] = base64.b64encode(bytes.fromhex(value)).decode()


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as plain JSON data (bytes as hex)."""
    which = value.WhichOneof("value")
    if which == "string_value":  # nearly every GenAI attribute: the fast path first
        return value.string_value
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def spans_of(message: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Every span of the request as a plain dict with its resource's and scope's attributes."""
    spans = []
    for resource_spans in message.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": SPAN_KINDS.get(span.kind, "unspecified"),
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": attributes(span.attributes),
                        "events": [
                            {
                                "name": event.name,
                                "time_ns": event.time_unix_nano,
                                "attributes": attributes(event.attributes),
                            }
                            for event in span.events
                        ],
                        "status": {
                            "code": STATUS_CODES.get(span.status.code, "unset"),
                            "message": span.status.message,
                        },
                        "resource": resource,
                        "scope": scope,
                    }
                )
    return spans


def export_response(kind: str, *, rejected: int = 0, message: str = "") -> tuple[bytes, str]:
    """The ExportTraceServiceResponse body, encoded like the request was."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if kind == JSON:
        return orjson.dumps(json_format.MessageToDict(response)), JSON
    return response.SerializeToString(), PROTOBUF


def status_body(kind: str, *, code: int, message: str) -> tuple[bytes, str]:
    """A google.rpc.Status body (code, message) for a 4xx/5xx answer, encoded like the request."""
    if kind == JSON:
        return orjson.dumps({"code": code, "message": message}), JSON
    text = message.encode()
    # google.rpc.Status: field 1 (int32 code, varint), field 2 (string message). Hand-encoded:
    # the message is two fields, not worth a googleapis dependency.
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text, PROTOBUF


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
