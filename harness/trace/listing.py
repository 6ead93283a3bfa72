"""The traces on disk (`harness trace ls`): one entry per trace file, read from its first
and last records only, newest first."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_TAIL = 256 * 1024
"""Bytes read from a trace's end to find its closing records."""


@dataclass(frozen=True)
class TraceEntry:
    """One trace file: its id, when it started, how long it ran, and what it did."""

    trace_id: str
    path: str
    started: float
    seconds: float | None
    """None while the episode runs (or when it died without closing its trace)."""
    actions: int | None
    refused: int | None
    sandbox: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def list_traces(folders: list[Path]) -> list[TraceEntry]:
    """The traces in `folders` (files named *.jsonl), newest first; files that are no
    harness trace are left out."""
    entries = []
    for folder in folders:
        for path in folder.glob("*.jsonl") if folder.is_dir() else []:
            entry = _entry(path)
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda t: -t.started)


def _entry(path: Path) -> TraceEntry | None:
    try:
        with path.open("rb") as handle:
            first = json.loads(handle.readline())
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - _TAIL))
            tail = handle.read().decode("utf-8", "replace").splitlines()
    except (OSError, ValueError):
        return None
    if not isinstance(first, dict) or "trace_id" not in first or "start" not in first:
        return None
    last: list[dict[str, Any]] = []
    for line in tail[-3:]:
        try:
            last.append(json.loads(line))
        except ValueError:
            continue
    end = next((s for s in last if s.get("name") == "episode.end"), None)
    root = next((s for s in last if s.get("name") == "episode"), None)
    counters = (end or {}).get("attributes", {}).get("counters") or {}
    started = float(first["start"])
    finished = (root or end or {}).get("end")
    actions = (root or {}).get("attributes", {}).get("actions")
    if actions is None and counters:
        actions = counters.get("actions", 0) + counters.get("refused", 0)
    return TraceEntry(str(first["trace_id"]), str(path), started,
                      round(float(finished) - started, 3) if finished else None,
                      actions, counters.get("refused") if counters else None,
                      (first.get("attributes") or {}).get("sandbox"))
