"""Traces: one trace id per episode, one root span for the episode with one span per
action under it and child spans for the guardrail decision, the execution and the
measurement, written as JSON lines (and streamed to OpenTelemetry as each span ends).
Every value passes through redaction first, so a secret never reaches a trace."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from harness.redaction import Redactor

if TYPE_CHECKING:
    from harness.trace.otel import SpanStream


@dataclass
class Span:
    """One timed step; attributes may be added until it ends."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: float
    attributes: dict[str, Any] = field(default_factory=dict)
    end: float | None = None

    def set(self, **attributes: Any) -> None:
        """Add or replace attributes."""
        self.attributes.update(attributes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line written for the span."""
        return {"trace_id": self.trace_id, "span_id": self.span_id, "parent_id": self.parent_id,
                "name": self.name, "start": self.start, "end": self.end,
                "duration_ms": round(((self.end or self.start) - self.start) * 1000, 3),
                "attributes": self.attributes}


class Tracer:
    """Writes the spans of one trace to a JSONL file (and keeps them in memory).

    With `root`, the trace has one root span of that name, open until `close`; every span
    started without a parent is its child. With `otlp_endpoint`, each span is sent to that
    OTLP/HTTP endpoint as it ends; `tool_io` adds the tool calls' arguments and results
    (redacted) as GenAI attributes there."""

    def __init__(self, path: Path | None, *, redactor: Redactor | None = None,
                 trace_id: str | None = None, otlp_endpoint: str | None = None,
                 root: str | None = None, root_id: str | None = None,
                 tool_io: bool = False) -> None:
        self.trace_id = trace_id or secrets.token_hex(16)
        self.path = path
        self.redact = redactor or Redactor()
        self.spans: list[Span] = []
        self.root: Span | None = Span(self.trace_id, root_id or secrets.token_hex(8), None,
                                      root, time.time()) if root else None
        self._file: TextIO | None = None
        self._stream: SpanStream | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", encoding="utf-8")  # one trace per file
        if otlp_endpoint:
            from harness.trace.otel import SpanStream

            self._stream = SpanStream(otlp_endpoint, tool_io=tool_io)

    @contextlib.contextmanager
    def span(self, name: str, parent: Span | None = None, **attributes: Any) -> Iterator[Span]:
        """A span that ends (and is written) when the block ends, also on errors."""
        parent = parent or self.root
        span = Span(self.trace_id, secrets.token_hex(8), parent.span_id if parent else None,
                    name, time.time(), dict(attributes))
        try:
            yield span
        except BaseException as exc:
            span.set(error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            span.end = time.time()
            self._write(span)

    def event(self, name: str, **attributes: Any) -> None:
        """A span of no duration (the episode's start and end records)."""
        with self.span(name, **attributes):
            pass

    def _write(self, span: Span) -> None:
        span.attributes = self.redact(span.attributes)
        self.spans.append(span)
        if self._file is not None:
            self._file.write(json.dumps(span.to_dict(), default=str) + "\n")
            self._file.flush()
        if self._stream is not None:
            self._stream.send(span.to_dict())

    def close(self, **attributes: Any) -> None:
        """End the root span (with `attributes`), close the file and flush the spans still
        on their way to the OTLP endpoint."""
        try:
            if self.root is not None and self.root.end is None:
                self.root.set(**attributes)
                self.root.end = time.time()
                self._write(self.root)
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._stream is not None:
                stream, self._stream = self._stream, None
                stream.close()
