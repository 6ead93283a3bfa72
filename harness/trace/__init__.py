"""Traces: written as an episode runs (writer), read back as typed records (reader), shown
as a timeline (render), exported to OpenTelemetry (otel) and replayed (replay)."""

from harness.trace.reader import ActionRecord, SpanRecord, Trace, read, read_trace
from harness.trace.writer import Span, Tracer

__all__ = ["ActionRecord", "Span", "SpanRecord", "Trace", "Tracer", "read", "read_trace"]
