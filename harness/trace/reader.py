"""Reading a trace file: one parser of the record format, shared by `harness trace show`,
replay and the OpenTelemetry export."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class SpanRecord:
    """One span as a trace file holds it."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: float
    end: float | None
    duration_ms: float
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpanRecord:
        """A span from its JSON line; HarnessError when a field is missing."""
        try:
            return cls(str(data["trace_id"]), str(data["span_id"]), data.get("parent_id"),
                       str(data["name"]), float(data["start"]), data.get("end"),
                       float(data.get("duration_ms") or 0.0), dict(data.get("attributes") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise HarnessError(f"a trace line lacks {exc}: is this a harness trace?") from None


@dataclass(frozen=True)
class ActionRecord:
    """An action span read as what happened: the tool, its parameters, its status, why it
    was refused, the counters after it, and its child steps."""

    span: SpanRecord
    steps: list[SpanRecord]

    @property
    def index(self) -> int:
        return int(self.span.attributes.get("index", -1))

    @property
    def tool(self) -> str | None:
        return self.span.attributes.get("tool")

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.span.attributes.get("parameters") or {})

    @property
    def status(self) -> str | None:
        return self.span.attributes.get("status")

    @property
    def refusal(self) -> dict[str, Any] | None:
        return self.span.attributes.get("refusal")

    @property
    def counters(self) -> dict[str, Any]:
        return dict(self.span.attributes.get("counters") or {})

    @property
    def result(self) -> dict[str, Any]:
        """What the trace keeps of the output (short values whole, long text by digest)."""
        return dict(self.span.attributes.get("result") or {})


@dataclass(frozen=True)
class Trace:
    """A whole trace: its spans in the order written, and views of them."""

    path: Path
    spans: list[SpanRecord]

    @property
    def trace_id(self) -> str:
        return self.spans[0].trace_id

    @property
    def start(self) -> SpanRecord:
        """The episode.start record (its attributes hold the config and injected state)."""
        found = next((s for s in self.spans if s.name == "episode.start"), None)
        if found is None:
            raise HarnessError(f"{self.path} has no episode.start record; is it a harness "
                               "trace?")
        return found

    @property
    def roots(self) -> list[SpanRecord]:
        """Spans without a parent, in the order they started."""
        return sorted((s for s in self.spans if not s.parent_id), key=lambda s: s.start)

    @property
    def episode(self) -> SpanRecord | None:
        """The episode's root span (None in a trace written before it had one)."""
        return next((s for s in self.roots if s.name == "episode"), None)

    @property
    def top(self) -> list[SpanRecord]:
        """The episode's records and actions in the order they started: the children of
        the episode span, or the roots of a trace without one."""
        episode = self.episode
        return self.children(episode.span_id) if episode is not None else self.roots

    def children(self, span_id: str) -> list[SpanRecord]:
        """The steps of a span, in the order they started."""
        return sorted((s for s in self.spans if s.parent_id == span_id), key=lambda s: s.start)

    @property
    def actions(self) -> list[ActionRecord]:
        """The action spans, by index."""
        return sorted((ActionRecord(s, self.children(s.span_id)) for s in self.spans
                       if s.name == "action"), key=lambda a: a.index)


def read_trace(path: Path) -> list[dict[str, Any]]:
    """The spans of a trace file as their JSON objects, in the order written."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path} is not a trace file: {exc}") from None


def read(path: Path) -> Trace:
    """The trace at `path`; HarnessError when it holds no spans or is not a trace."""
    spans = [SpanRecord.from_dict(data) for data in read_trace(path)]
    if not spans:
        raise HarnessError(f"{path} holds no spans")
    return Trace(path, spans)
