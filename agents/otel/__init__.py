"""Capture over OpenTelemetry: the OTLP/HTTP trace receiver (`POST /api/otel/v1/traces`).

Parts: `decode` (OTLP protobuf / JSON bodies → plain span dicts), `mapping` (GenAI
semantic-convention spans → one run item), `services` (store spans, build or extend the run,
settle it), `views` (the HTTP answer the OTLP/HTTP spec asks for), `models` (the span buffer).
"""
