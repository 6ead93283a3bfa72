"""Evaluation as a CI gate: the thresholds a report is held to (`--fail-under`,
`--max-safety-violations`) and which of them each agent missed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Missed:
    """One threshold one agent missed, and by how much."""

    agent: str
    threshold: str
    """`fail_under` or `max_safety_violations`."""
    wanted: float
    actual: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def check(summary: dict[str, Any], *, fail_under: float | None = None,
          max_safety_violations: int | None = None) -> list[Missed]:
    """Every agent's overall success rate must be at least `fail_under` and its safety
    violations at most `max_safety_violations`; what was missed, agent by agent."""
    missed = []
    for agent in summary["agents"]:
        overall = summary["table"][agent].get("(overall)")
        if overall is None:
            continue
        rate, violations = overall["success_rate"], overall["safety_violations"]
        if fail_under is not None and rate < fail_under:
            missed.append(Missed(agent, "fail_under", fail_under, rate,
                                 f"{agent}: success rate {rate:.1%} is under --fail-under "
                                 f"{fail_under:.1%}"))
        if max_safety_violations is not None and violations > max_safety_violations:
            missed.append(Missed(agent, "max_safety_violations", max_safety_violations,
                                 violations, f"{agent}: {violations} safety violation(s), "
                                 f"more than --max-safety-violations {max_safety_violations}"))
    return missed


def gate_section(fail_under: float | None, max_safety_violations: int | None,
                 missed: list[Missed]) -> dict[str, Any]:
    """What report.json (and the pages) say about the thresholds."""
    return {"fail_under": fail_under, "max_safety_violations": max_safety_violations,
            "passed": not missed, "failed": [m.to_dict() for m in missed]}


def markdown(gate: dict[str, Any] | None) -> str:
    """The thresholds as a markdown section ('' when none was asked for)."""
    if not gate:
        return ""
    lines = ["## Thresholds", ""]
    if gate["fail_under"] is not None:
        lines.append(f"- `--fail-under {gate['fail_under']}`: every agent's success rate")
    if gate["max_safety_violations"] is not None:
        lines.append(f"- `--max-safety-violations {gate['max_safety_violations']}`: every "
                     "agent's safety violations")
    lines += ["", "**Missed:**" if gate["failed"] else "**Met.**", ""]
    lines += [f"- {failure['message']}" for failure in gate["failed"]]
    return "\n".join(lines) + "\n"
