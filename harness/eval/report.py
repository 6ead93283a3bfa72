"""The evaluation report: per scenario and overall success rate, pass^k, safety
violations, blast-radius events, actions and wall time, agents side by side; as JSON,
markdown and a self-contained HTML page with a chart."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict
from typing import Any

from harness.eval.runner import RunResult


def summarise(runs: list[RunResult], *, elapsed_seconds: float | None = None
              ) -> dict[str, Any]:
    """Figures per agent and scenario, and per agent overall; with the evaluation's wall
    time, runs and runs per minute per node."""
    agents = sorted({r.agent for r in runs})
    scenarios = sorted({r.scenario for r in runs})
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for agent in agents:
        table[agent] = {}
        for scenario in [*scenarios, "(overall)"]:
            chosen = [r for r in runs if r.agent == agent and
                      (scenario == "(overall)" or r.scenario == scenario)]
            if chosen:
                table[agent][scenario] = _figures(chosen, per_scenario=scenario != "(overall)")
    return {"agents": agents, "scenarios": scenarios, "table": table,
            "nodes": _nodes(runs, elapsed_seconds), "runs": [asdict(r) for r in runs]}


def _nodes(runs: list[RunResult], elapsed_seconds: float | None) -> dict[str, Any]:
    """Per node: runs, retried runs, and runs per minute over the evaluation's wall time."""
    counts = Counter(r.node for r in runs)
    return {node: {"runs": count,
                   "retried": sum(1 for r in runs if r.node == node and r.attempt > 1),
                   "runs_per_minute": round(count / elapsed_seconds * 60, 1)
                   if elapsed_seconds else None}
            for node, count in sorted(counts.items())}


def _figures(runs: list[RunResult], *, per_scenario: bool) -> dict[str, Any]:
    successes = sum(r.success for r in runs)
    by_scenario: dict[str, list[bool]] = {}
    for r in runs:
        by_scenario.setdefault(r.scenario, []).append(r.success)
    pass_k = sum(all(v) for v in by_scenario.values()) / len(by_scenario)
    return {
        "runs": len(runs),
        "success_rate": round(successes / len(runs), 3),
        "pass_k": round(pass_k, 3) if not per_scenario else float(all(r.success for r in runs)),
        "safety_violations": sum(len(r.safety_violations) for r in runs),
        "blast_radius_events": sum(r.blast_radius_events for r in runs),
        "mean_actions": round(statistics.mean(r.actions for r in runs), 1),
        "mean_wall_seconds": round(statistics.mean(r.wall_seconds for r in runs), 2),
        "errors": sum(r.error is not None for r in runs),
        "policies_broken": dict(sorted(Counter(
            policy for r in runs for policy in r.policies_broken).items())),
    }


_COLUMNS = ("success_rate", "pass_k", "safety_violations", "blast_radius_events",
            "mean_actions", "mean_wall_seconds")


def markdown(summary: dict[str, Any]) -> str:
    """The report as markdown tables, one per agent."""
    lines = ["# harness eval", ""]
    for agent in summary["agents"]:
        lines += [f"## {agent}", "", "| scenario | runs | " + " | ".join(_COLUMNS) + " |",
                  "|---|---:|" + "---:|" * len(_COLUMNS)]
        for scenario, figures in summary["table"][agent].items():
            name = f"**{scenario}**" if scenario == "(overall)" else scenario
            lines.append(f"| {name} | {figures['runs']} | "
                         + " | ".join(str(figures[c]) for c in _COLUMNS) + " |")
        lines.append("")
        broken = [r for r in summary["runs"] if r["agent"] == agent and r["policies_broken"]]
        if broken:
            lines += ["Effect policies broken:", ""]
            lines += [f"- {r['scenario']} run {r['run']}: {', '.join(r['policies_broken'])}"
                      for r in broken]
            lines.append("")
    nodes = summary.get("nodes") or {}
    if nodes:
        lines += ["## Nodes", "", "| node | runs | retried | runs per minute |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {node} | {f['runs']} | {f['retried']} | {f['runs_per_minute'] or '-'} |"
                  for node, f in nodes.items()]
        lines.append("")
        retried = [r for r in summary["runs"] if r.get("attempt", 1) > 1]
        if retried:
            lines += ["Runs retried after an infrastructure failure:", ""]
            lines += [f"- {r['scenario']} {r['agent']} run {r['run']}: attempt {r['attempt']} "
                      f"on {r['node'] or '(none)'}" for r in retried]
            lines.append("")
    return "\n".join(lines)


def html_page(summary: dict[str, Any]) -> str:
    """The self-contained HTML report (`harness.eval.page`), without links to trace pages
    (`harness.eval.page.write_report` writes those beside it)."""
    from harness.eval.page import page

    return page(summary)
