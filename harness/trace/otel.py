"""Export of a trace through the OpenTelemetry SDK to any OTLP/HTTP endpoint, keeping the
harness's own trace and span ids, with GenAI semantic-convention attributes on tool spans:
span by span as an episode runs (`SpanStream`), or a whole trace file at once (`export`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from harness.errors import HarnessError
from harness.trace.reader import SpanRecord
from harness.version import __version__

_SCOPE = InstrumentationScope("harness", __version__)
_RESOURCE = Resource.create({"service.name": "harness", "service.version": __version__})

STREAM_DELAY_MS = 500
"""How long a span that has ended waits, at most, before it is sent."""


class SpanStream:
    """Sends each span to an OTLP/HTTP endpoint soon after it ends, in the background
    (the SDK's batch processor); `close` sends what is left and waits for it."""

    def __init__(self, endpoint: str, *, tool_io: bool = False, timeout: float = 10.0) -> None:
        self.tool_io = tool_io
        self._processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, timeout=timeout),
            schedule_delay_millis=STREAM_DELAY_MS, export_timeout_millis=int(timeout * 1000))

    def send(self, span: dict[str, Any]) -> None:
        """Queue one ended span (its JSON form, as the trace file holds it)."""
        self._processor.on_end(to_otel(SpanRecord.from_dict(span), tool_io=self.tool_io))

    def close(self) -> None:
        """Send every queued span, then stop."""
        self._processor.shutdown()  # type: ignore[no-untyped-call]


def export(spans: Iterable[SpanRecord], endpoint: str, *, timeout: float = 10.0,
           tool_io: bool = False) -> int:
    """Send the spans to `endpoint` (e.g. http://127.0.0.1:4318/v1/traces) in one request;
    returns how many were sent."""
    readable = [to_otel(span, tool_io=tool_io) for span in spans]
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    try:
        result = exporter.export(readable)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    if result is not SpanExportResult.SUCCESS:
        raise HarnessError(f"the OTLP endpoint {endpoint} did not accept the trace")
    return len(readable)


def to_otel(span: SpanRecord, *, tool_io: bool = False) -> ReadableSpan:
    """One trace span as an OpenTelemetry span; with `tool_io`, a tool call's arguments
    and result are in `gen_ai.tool.call.arguments` and `gen_ai.tool.call.result` (as the
    trace holds them: redacted, long values by digest unless include_tool_io kept them)."""
    trace_id = int(span.trace_id, 16)
    context = SpanContext(trace_id, int(span.span_id, 16), is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = (SpanContext(trace_id, int(span.parent_id, 16), is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
              if span.parent_id else None)
    # A tool call's parameters and output go out only when asked for (they may hold data
    # the receiver should not keep); a refusal and the counters always do.
    withheld = set() if tool_io else {"parameters", "result", "output"}
    attributes = {f"harness.{k}": _flat(v) for k, v in span.attributes.items()
                  if v is not None and k not in withheld}
    name = span.name
    kind = SpanKind.INTERNAL
    if name == "episode":
        name = "invoke_agent harness"
        attributes.update({"gen_ai.operation.name": "invoke_agent",
                           "gen_ai.conversation.id": span.trace_id})
    elif name == "action":
        tool = span.attributes.get("tool") or "?"
        name = f"execute_tool {tool}"
        attributes.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                           "gen_ai.tool.type": "function", "gen_ai.tool.call.id": span.span_id,
                           "gen_ai.conversation.id": span.trace_id})
        if tool_io:
            attributes["gen_ai.tool.call.arguments"] = _json(span.attributes.get("parameters"))
            result = span.attributes.get("output", span.attributes.get("result"))
            if span.attributes.get("refusal"):
                result = {"refusal": span.attributes["refusal"], **(result or {})}
            attributes["gen_ai.tool.call.result"] = _json(result)
        # The rows this tool call changed, per table and operation, as numbers.
        for table, counts in (span.attributes.get("rows") or {}).items():
            for op in ("inserted", "updated", "deleted"):
                attributes[f"harness.rows.{table}.{op}"] = int(counts.get(op, 0))
    refused = span.attributes.get("status") == "refused" or "error" in span.attributes
    status = Status(StatusCode.ERROR, "refused") if refused else Status(StatusCode.OK)
    return ReadableSpan(
        name, context=context, parent=parent, kind=kind, attributes=attributes, status=status,
        resource=_RESOURCE,
        start_time=int(span.start * 1e9), end_time=int((span.end or span.start) * 1e9),
        instrumentation_scope=_SCOPE)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _flat(value: Any) -> str | int | float | bool:
    if isinstance(value, bool | int | float | str):
        return value
    return _json(value)
