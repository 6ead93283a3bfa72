"""The evaluation's HTML report: success and safety side by side per scenario and agent,
a verdict line per agent, every run in a table linked to its trace page, the thresholds
it was held to; one self-contained page (inline CSS and SVG, nothing from the network)
with the trace pages in a folder beside it."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from harness.eval.scenario import Scenario
from harness.trace.page import STYLE, e
from harness.version import __version__

TRACES = "traces"
"""The folder, beside report.html, that holds one page per run's trace."""

_EXTRA_STYLE = """
.verdict{font-size:15px;margin:.3em 0}.pass{color:#2f855a;font-weight:600}
.fail{color:#c05621;font-weight:600}
.gate{border:2px solid #c53030;background:#fff5f5;padding:.5em 1em;max-width:60em}
.gate.met{border-color:#2f855a;background:#f0fff4}
tr.crashed td{background:#fed7d7}tr.failed td{background:#fffaf0}
.badge{padding:0 5px;border-radius:3px;font-size:12px;font-weight:700;color:#fff}
.badge.pass{background:#2f855a}.badge.fail{background:#c05621}
.badge.crashed{background:#742a2a}
"""

_SUCCESS, _PASS_K, _VIOLATIONS, _BLAST = "#2b6cb0", "#2f855a", "#c53030", "#dd6b20"


def describe_agent(spec: str) -> str:
    """The agent and model a command-line spec names, in words."""
    kind, _, rest = spec.partition(":")
    if not rest:
        return f"the scenarios' scripted agent {spec!r}"
    if kind in ("openai", "anthropic"):
        model, _, url = rest.partition("@")
        return f"model {model} ({kind} API{' at ' + url if url else ''})"
    return {"scripted": f"scripted actions from {rest}",
            "subprocess": f"the program `{rest}`"}.get(kind, spec)


def meta(scenarios: list[Scenario], agents: list[str], *, repeat: int, seed: int
         ) -> dict[str, Any]:
    """What the report's header says: when, which harness, which agents and models, which
    scenarios (with their descriptions), how many repetitions, which seed."""
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "harness_version": __version__, "repeat": repeat, "seed": seed,
            "agents": {spec: describe_agent(spec) for spec in agents},
            "scenarios": {s.name: {"description": s.description, "failure_mode": s.failure_mode}
                          for s in scenarios}}


def trace_page_name(trace: str) -> str:
    """The file name, under TRACES, of a run's trace page."""
    return f"{Path(trace).stem}.html"


def write_report(summary: dict[str, Any], folder: Path) -> Path:
    """Write report.html and the trace page of every run whose trace exists; returns the
    report's path."""
    from harness.errors import HarnessError
    from harness.trace.page import page as trace_page
    from harness.trace.reader import read

    pages = folder / TRACES
    pages.mkdir(parents=True, exist_ok=True)
    linked = set()
    for run in summary["runs"]:
        trace = run.get("trace")
        if not trace or not Path(trace).is_file():
            continue
        try:
            text = trace_page(read(Path(trace)))
        except HarnessError:
            continue  # a run that died before its first span: no page, no link
        (pages / trace_page_name(trace)).write_text(text, encoding="utf-8")
        linked.add(trace)
    report = folder / "report.html"
    report.write_text(page(summary, linked=linked), encoding="utf-8")
    return report


def _outcome(run: dict[str, Any]) -> str:
    if run.get("error"):
        return "crashed"
    return "pass" if run["success"] and not run["safety_violations"] else "fail"


def verdict(agent: str, figures: dict[str, Any], failed: list[str]) -> str:
    """One line on an agent: does it do the tasks, and does it do them safely."""
    success, violations = figures["success_rate"], figures["safety_violations"]
    if failed:
        word = "FAILS THE GATE"
    elif success == 1 and violations == 0 and not figures["errors"]:
        word = "successful and safe"
    elif violations:
        word = "unsafe"
    else:
        word = "unreliable"
    parts = [f"success {success:.0%} of {figures['runs']} run(s)",
             f"pass^k {figures['pass_k']:.0%}",
             f"{violations} safety violation(s)",
             f"{figures['blast_radius_events']} blast-radius event(s)"]
    if figures["errors"]:
        parts.append(f"{figures['errors']} crashed run(s)")
    return f"{agent}: {word}: " + ", ".join(parts)


def _verdict_line(agent: str, figures: dict[str, Any], failed: list[str]) -> str:
    good = not failed and not figures["safety_violations"] and not figures["errors"] \
        and figures["success_rate"] == 1
    missed = "".join(f"<br><small>{e(message)}</small>" for message in failed)
    return (f'<p class="verdict" data-agent="{e(agent)}"><span class="'
            f'{"pass" if good else "fail"}">{e(verdict(agent, figures, failed))}</span>'
            f"{missed}</p>")


def page(summary: dict[str, Any], *, linked: set[str] | None = None) -> str:
    """The report as HTML; runs whose trace is in `linked` link to their trace page."""
    info = summary.get("meta") or {}
    gate = summary.get("thresholds")
    agents, scenarios = summary["agents"], summary["scenarios"]
    failed_by_agent: dict[str, list[str]] = {}
    for failure in (gate or {}).get("failed", []):
        failed_by_agent.setdefault(failure["agent"], []).append(failure["message"])
    verdicts = "".join(_verdict_line(agent, summary["table"][agent]["(overall)"],
                                     failed_by_agent.get(agent, []))
                       for agent in agents if "(overall)" in summary["table"][agent])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>harness eval</title><style>{STYLE}{_EXTRA_STYLE}</style></head><body>
<h1>harness eval</h1>{_header(info, summary)}
{_gate(gate)}
<h2>Verdict</h2><div id="verdicts">{verdicts}</div>
<h2>Success and safety per scenario</h2>{_chart(summary)}
{_legend()}
<h2>Figures</h2>{_figures(summary)}
<h2>Runs</h2>{_runs(summary["runs"], linked or set(), scenarios)}
{_nodes(summary.get("nodes") or {})}
</body></html>
"""


def _header(info: dict[str, Any], summary: dict[str, Any]) -> str:
    facts = [("date", info.get("date", "")), ("harness", info.get("harness_version",
                                                                   __version__)),
             ("runs", len(summary["runs"])), ("repeat", info.get("repeat", "")),
             ("seed", info.get("seed", ""))]
    line = " · ".join(f"{e(k)} <b>{e(v)}</b>" for k, v in facts if v != "")
    agents = info.get("agents") or {a: "" for a in summary["agents"]}
    agent_items = "".join(f"<li><b>{e(a)}</b> {e(d)}</li>" for a, d in agents.items())
    described = info.get("scenarios") or {}
    scenario_items = "".join(
        f"<li><b>{e(name)}</b> <small>({e((described.get(name) or {}).get('failure_mode', ''))})"
        f"</small> {e((described.get(name) or {}).get('description', ''))}</li>"
        for name in summary["scenarios"])
    return (f'<div id="header"><p class="meta">{line}</p>'
            f'<p class="meta">Agents and models:</p><ul id="agents">{agent_items}</ul>'
            f'<p class="meta">Scenarios:</p><ul id="scenarios">{scenario_items}</ul></div>')


def _gate(gate: dict[str, Any] | None) -> str:
    if not gate:
        return ""
    asked = []
    if gate.get("fail_under") is not None:
        asked.append(f"success rate at least {gate['fail_under']:.0%}")
    if gate.get("max_safety_violations") is not None:
        asked.append(f"at most {gate['max_safety_violations']} safety violation(s)")
    wanted = " and ".join(asked) + " for every agent"
    if not gate.get("failed"):
        return f'<div id="gate" class="gate met"><b>Thresholds met</b>: {e(wanted)}.</div>'
    items = "".join(f'<li data-threshold="{e(f["threshold"])}">{e(f["message"])}</li>'
                    for f in gate["failed"])
    return (f'<div id="gate" class="gate"><b>Thresholds missed</b> (asked: {e(wanted)}):'
            f"<ul>{items}</ul></div>")


def _legend() -> str:
    return ('<p class="legend" id="legend"><b>success rate</b>: the share of runs whose '
            "success checks all passed. <b>pass^k</b>: a scenario counts only when all k "
            "repetitions of it succeeded (k = --repeat); per scenario it is 100% or 0%, per "
            "agent the share of scenarios passed in every repetition. A flaky agent has a "
            "high success rate and a low pass^k. <b>safety violations</b>: safety checks "
            "and effect policies broken (guardrail blocks, protected paths written, effect "
            "policies). <b>blast-radius events</b>: actions a limit refused or undid "
            "(commits reset, rows over the budget). A run <b>fails</b> when a check fails or "
            "it broke a safety rule; it <b>crashed</b> when the harness or the agent raised "
            "an error and the run could not be judged.</p>")


def _chart(summary: dict[str, Any]) -> str:
    """Two panels side by side, a row per scenario and agent: success rate with pass^k on
    the left, safety violations and blast-radius events on the right."""
    agents, scenarios = summary["agents"], summary["scenarios"]
    row, label_w, panel_w, gap = 16, 260, 300, 40
    worst = max([1] + [f["safety_violations"] + f["blast_radius_events"]
                       for a in agents for s, f in summary["table"][a].items()
                       if s != "(overall)"])
    parts: list[str] = []
    success_x, safety_x = label_w, label_w + panel_w + gap
    parts.append(f'<text x="{success_x}" y="14" font-size="13" font-weight="600">'
                 f"Success: rate (bar), pass^k (dot)</text>")
    parts.append(f'<text x="{safety_x}" y="14" font-size="13" font-weight="600">'
                 f"Safety: violations, blast-radius events</text>")
    y = 26
    success_bars, safety_bars = [], []
    for scenario in scenarios:
        parts.append(f'<text x="0" y="{y + 12}" font-size="12" font-weight="600">'
                     f"{e(scenario)}</text>")
        for agent in agents:
            figures = summary["table"][agent].get(scenario)
            if figures is None:
                continue
            key = f'data-scenario="{e(scenario)}" data-agent="{e(agent)}"'
            parts.append(f'<text x="{label_w - 6}" y="{y + 11}" font-size="11" '
                         f'text-anchor="end">{e(agent)}</text>')
            rate, pass_k = figures["success_rate"], figures["pass_k"]
            w = rate * (panel_w - 50)
            success_bars.append(
                f'<rect class="bar success-rate" {key} data-value="{rate}" x="{success_x}" '
                f'y="{y}" width="{w:.1f}" height="{row - 3}" fill="{_SUCCESS}"><title>'
                f"{e(agent)} on {e(scenario)}: success {rate:.0%}, pass^k {pass_k:.0%}"
                f'</title></rect><circle class="pass-k" {key} data-value="{pass_k}" '
                f'cx="{success_x + pass_k * (panel_w - 50):.1f}" cy="{y + (row - 3) / 2}" r="4" '
                f'fill="{_PASS_K}" stroke="#fff"/><text x="{success_x + w + 8:.1f}" '
                f'y="{y + 11}" font-size="11">{rate:.0%}</text>')
            violations, blast = figures["safety_violations"], figures["blast_radius_events"]
            unit = (panel_w - 60) / worst
            v_w, b_w = violations * unit, blast * unit
            safety_bars.append(
                f'<rect class="bar safety-violations" {key} data-value="{violations}" '
                f'x="{safety_x}" y="{y}" width="{v_w:.1f}" height="{row - 3}" '
                f'fill="{_VIOLATIONS}"><title>{e(agent)} on {e(scenario)}: {violations} '
                f"safety violation(s)</title></rect>"
                f'<rect class="bar blast-radius" {key} data-value="{blast}" '
                f'x="{safety_x + v_w:.1f}" y="{y}" width="{b_w:.1f}" height="{row - 3}" '
                f'fill="{_BLAST}"><title>{e(agent)} on {e(scenario)}: {blast} '
                f"blast-radius event(s)</title></rect>"
                f'<text x="{safety_x + v_w + b_w + 8:.1f}" y="{y + 11}" font-size="11">'
                f"{violations} / {blast}</text>")
            y += row
        y += 8
    height = y + 4
    width = safety_x + panel_w
    axis = (f'<line x1="{safety_x - gap / 2}" y1="20" x2="{safety_x - gap / 2}" '
            f'y2="{height}" stroke="#cbd5e0"/>')
    key_line = (f'<span style="color:{_SUCCESS}">&#9632; success rate</span> '
                f'<span style="color:{_PASS_K}">&#9679; pass^k</span> '
                f'<span style="color:{_VIOLATIONS}">&#9632; safety violations</span> '
                f'<span style="color:{_BLAST}">&#9632; blast-radius events</span>')
    return (f'<svg id="chart" role="img" aria-label="success and safety per scenario and '
            f'agent" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'{"".join(parts)}{axis}<g id="success-chart">{"".join(success_bars)}</g>'
            f'<g id="safety-chart">{"".join(safety_bars)}</g></svg>'
            f'<p class="legend">{key_line}</p>')


_COLUMNS = (("runs", "runs"), ("success_rate", "success rate"), ("pass_k", "pass^k"),
            ("safety_violations", "safety violations"),
            ("blast_radius_events", "blast-radius events"), ("errors", "crashed"),
            ("mean_actions", "mean actions"), ("mean_wall_seconds", "mean wall s"))


def _figures(summary: dict[str, Any]) -> str:
    head = "<tr><th>agent</th><th>scenario</th>" + "".join(
        f"<th>{e(title)}</th>" for _, title in _COLUMNS) + "</tr>"
    rows = []
    for agent in summary["agents"]:
        for scenario, figures in summary["table"][agent].items():
            name = f"<b>{e(scenario)}</b>" if scenario == "(overall)" else e(scenario)
            rows.append(f"<tr><td>{e(agent)}</td><td>{name}</td>" + "".join(
                f'<td class="n">{_figure(key, figures[key])}</td>' for key, _ in _COLUMNS)
                + "</tr>")
    return f'<table id="figures">{head}{"".join(rows)}</table>'


def _figure(key: str, value: Any) -> str:
    if key in ("success_rate", "pass_k"):
        return f"{float(value):.0%}"
    return e(value)


def _runs(runs: list[dict[str, Any]], linked: set[str], scenarios: list[str]) -> str:
    order = {name: i for i, name in enumerate(scenarios)}
    rows = []
    for run in sorted(runs, key=lambda r: (order.get(r["scenario"], 0), r["agent"], r["run"])):
        outcome = _outcome(run)
        failed = [f"check {name}" for name, ok in (run.get("checks") or {}).items() if not ok]
        failed += [f"safety {v}" for v in run.get("safety_violations") or []]
        trace = run.get("trace") or ""
        link = (f'<a class="trace-link" href="{TRACES}/{e(trace_page_name(trace))}">trace</a>'
                if trace in linked else "")
        row_class = {"crashed": "crashed", "fail": "failed"}.get(outcome, "passed")
        rows.append(
            f'<tr class="run {row_class}" data-outcome="{outcome}">'
            f"<td>{e(run['scenario'])}</td><td>{e(run['agent'])}</td>"
            f'<td class="n">{e(run["run"])}</td><td class="n">{e(run["seed"])}</td>'
            f'<td>{e(run.get("node", ""))}</td><td class="n">{e(run.get("attempt", ""))}</td>'
            f'<td><span class="badge {outcome}">{e(outcome.upper())}</span></td>'
            f"<td>{'<br>'.join(e(f) for f in failed)}</td>"
            f"<td>{'<pre>' + e(run['error']) + '</pre>' if run.get('error') else ''}</td>"
            f'<td class="n">{float(run["wall_seconds"]):.2f}</td>'
            f'<td class="n">{e(run.get("actions", ""))}</td><td>{link}</td></tr>')
    return ('<table id="runs"><tr><th>scenario</th><th>agent</th><th>repeat</th><th>seed</th>'
            "<th>node</th><th>attempt</th><th>outcome</th><th>failed check or violated policy</th>"
            "<th>error</th>"
            "<th>wall s</th><th>actions</th><th>trace</th></tr>" + "".join(rows) + "</table>")


def _nodes(nodes: dict[str, Any]) -> str:
    if not nodes:
        return ""
    return ('<h2>Nodes</h2><table id="nodes"><tr><th>node</th><th>runs</th><th>retried</th>'
            "<th>runs per minute</th></tr>" + "".join(
                f'<tr><td>{e(node)}</td><td class="n">{e(f["runs"])}</td>'
                f'<td class="n">{e(f["retried"])}</td>'
                f'<td class="n">{e(f["runs_per_minute"] or "-")}</td></tr>'
                for node, f in nodes.items()) + "</table>")
