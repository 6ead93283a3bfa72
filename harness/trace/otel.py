"""Export of a trace through the OpenTelemetry SDK to any OTLP/HTTP endpoint, keeping the
harness's own trace and span ids, with GenAI semantic-convention attributes on tool spans."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from harness.errors import HarnessError
from harness.trace.reader import SpanRecord

_SCOPE = InstrumentationScope("harness", "0.1.0")


def export(spans: Iterable[SpanRecord], endpoint: str, *, timeout: float = 10.0) -> int:
    """Send the spans to `endpoint` (e.g. http://127.0.0.1:4318/v1/traces); returns how
    many were sent."""
    readable = [to_otel(span) for span in spans]
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    try:
        result = exporter.export(readable)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    if result is not SpanExportResult.SUCCESS:
        raise HarnessError(f"the OTLP endpoint {endpoint} did not accept the trace")
    return len(readable)


def to_otel(span: SpanRecord) -> ReadableSpan:
    """One trace span as an OpenTelemetry span."""
    trace_id = int(span.trace_id, 16)
    context = SpanContext(trace_id, int(span.span_id, 16), is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = (SpanContext(trace_id, int(span.parent_id, 16), is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
              if span.parent_id else None)
    attributes = {f"harness.{k}": _flat(v) for k, v in span.attributes.items() if v is not None}
    name = span.name
    kind = SpanKind.INTERNAL
    if name == "action":
        tool = span.attributes.get("tool") or "?"
        name = f"execute_tool {tool}"
        attributes.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                           "gen_ai.tool.type": "function", "gen_ai.tool.call.id": span.span_id,
                           "gen_ai.conversation.id": span.trace_id})
        # The rows this tool call changed, per table and operation, as numbers.
        for table, counts in (span.attributes.get("rows") or {}).items():
            for op in ("inserted", "updated", "deleted"):
                attributes[f"harness.rows.{table}.{op}"] = int(counts.get(op, 0))
    refused = span.attributes.get("status") == "refused" or "error" in span.attributes
    status = Status(StatusCode.ERROR, "refused") if refused else Status(StatusCode.OK)
    return ReadableSpan(
        name, context=context, parent=parent, kind=kind, attributes=attributes, status=status,
        resource=Resource.create({"service.name": "harness"}),
        start_time=int(span.start * 1e9), end_time=int((span.end or span.start) * 1e9),
        instrumentation_scope=_SCOPE)


def _flat(value: Any) -> str | int | float | bool:
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, default=str, sort_keys=True)
