"""Replay: run a trace's recorded actions again in a fresh sandbox and compare, action by
action, what can be compared exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import Config
from harness.episode import Episode
from harness.trace.reader import read

COMPARED = ("status", "refusal", "exit_code", "stdout_sha256", "rows", "commits")


@dataclass(frozen=True)
class Divergence:
    """One recorded fact that the replay did not reproduce."""

    index: int
    field: str
    recorded: Any
    replayed: Any


@dataclass(frozen=True)
class ReplayReport:
    """What a replay found."""

    original_trace: str
    replay_trace: str
    actions: int
    divergences: list[Divergence] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def replay_trace(path: Path, *, trace_path: Path | None = None) -> ReplayReport:
    """Replay the trace at `path` with the configuration it recorded."""
    trace = read(path)
    config = Config.model_validate(trace.start.attributes["config"])
    recorded = trace.actions
    divergences: list[Divergence] = []
    with Episode(config, trace_path=trace_path) as episode:
        for action in recorded:
            raw: Any = {"tool": action.tool, "parameters": action.parameters}
            if action.tool is None:
                raw = "<malformed action>"
            omitted = [name for name, value in action.parameters.items()
                       if isinstance(value, dict) and "omitted_chars" in value]
            if omitted:
                # The trace kept only a digest of it: the action cannot be run again as it was.
                divergences.append(Divergence(action.index, "replayable", True,
                                              f"no: {', '.join(omitted)} recorded by digest"))
                continue
            result = episode.act(raw)
            replayed = next(s for s in episode.tracer.spans
                            if s.name == "action" and s.span_id == result.span_id)
            for name, old, new in _facts(action.span.attributes, replayed.attributes):
                if old != new:
                    divergences.append(Divergence(action.index, name, old, new))
    return ReplayReport(trace.trace_id, episode.trace_id, len(recorded), divergences)


def _facts(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    def pick(attributes: dict[str, Any], name: str) -> Any:
        if name == "refusal":
            refusal = attributes.get("refusal")
            return refusal and refusal.get("rule")
        if name in ("rows", "commits"):
            return (attributes.get("counters") or {}).get(name)
        if name == "status":
            return attributes.get("status")
        return (attributes.get("result") or {}).get(name)

    return [(name, pick(old, name), pick(new, name)) for name in COMPARED]
