"""A trace as a timeline: one row per episode record and action, a row per step under each
action, ready for a table (`harness trace show`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.trace.reader import Trace


@dataclass(frozen=True)
class TimelineRow:
    """One line of the timeline: offset from the trace's start, what, how long, details."""

    offset_ms: float | None
    step: str
    duration_ms: float
    details: str
    refused: bool = False


def timeline(trace: Trace) -> list[TimelineRow]:
    """The rows, in the order things started."""
    start = min(s.start for s in trace.spans)
    rows: list[TimelineRow] = []
    for span in trace.top:
        a = span.attributes
        refused = False
        if span.name == "action":
            refusal = a.get("refusal")
            refused = bool(refusal)
            details = (f"refused {refusal['rule']}: {refusal['reason']}" if refusal
                       else f"{a.get('status')} {json.dumps(a.get('parameters'))[:80]}")
            name = f"#{a.get('index')} {a.get('tool')}"
        else:
            details = json.dumps(a.get("counters") or a.get("changeset") or
                                 {"sandbox": a.get("sandbox")})[:100]
            name = span.name
        rows.append(TimelineRow((span.start - start) * 1000, name, span.duration_ms, details,
                                refused))
        for table, counts in sorted((a.get("rows") or {}).items()):
            rows.append(TimelineRow(None, f"  rows {table}", 0.0,
                                    f"+{counts.get('inserted', 0)} ~{counts.get('updated', 0)} "
                                    f"-{counts.get('deleted', 0)}"))
        for child in trace.children(span.span_id):
            extra = child.attributes
            text = (f"{extra.get('decision')} {extra.get('rule_id') or ''}"
                    if child.name == "guardrail" else json.dumps(extra)[:80])
            rows.append(TimelineRow(None, f"  {child.name}", child.duration_ms, text))
    return rows
