"""Traces: one trace id per episode, one span per action with child spans for the
guardrail decision, the execution and the measurement, written as JSON lines. Every
value passes through redaction first, so a secret never reaches a trace."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.redaction import Redactor


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
    """Writes the spans of one trace to a JSONL file (and keeps them in memory)."""

    def __init__(self, path: Path | None, *, redactor: Redactor | None = None,
                 trace_id: str | None = None, otlp_endpoint: str | None = None) -> None:
        self.trace_id = trace_id or secrets.token_hex(16)
        self.path = path
        self.otlp_endpoint = otlp_endpoint
        self.redact = redactor or Redactor()
        self.spans: list[Span] = []
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", encoding="utf-8")  # one trace per file

    @contextlib.contextmanager
    def span(self, name: str, parent: Span | None = None, **attributes: Any) -> Iterator[Span]:
        """A span that ends (and is written) when the block ends, also on errors."""
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

    def close(self) -> None:
        """Close the file, and send the whole trace to the OTLP endpoint if one is set."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.otlp_endpoint and self.spans:
            from harness.trace.otel import export
            from harness.trace.reader import SpanRecord

            export([SpanRecord.from_dict(span.to_dict()) for span in self.spans],
                   self.otlp_endpoint)
            self.otlp_endpoint = None
