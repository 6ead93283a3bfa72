"""A trace as one self-contained HTML page (`harness trace show --html`): the episode's
timeline, each action with its decision, duration, output, files and rows, and the change
set at the end. Inline CSS and SVG only: the page loads nothing from the network."""

from __future__ import annotations

import datetime
import html
import json
from typing import Any

from harness.trace.reader import ActionRecord, SpanRecord, Trace

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#1a202c;max-width:1400px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #cbd5e0;padding:3px 7px;vertical-align:top;text-align:left}
th{background:#edf2f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-height:16em;overflow:auto;
font-size:12px;min-width:16em}
code{font-size:12px;background:#f7fafc}
.meta{color:#4a5568;font-size:14px}.meta b{color:#1a202c}
.ok{color:#2f855a}.error{color:#c05621}.refused{color:#c53030;font-weight:600}
.crashed{color:#fff;background:#742a2a;padding:0 4px;border-radius:3px}
.legend{font-size:13px;color:#4a5568;max-width:60em}
"""
"""The style sheet the trace page and the eval report share."""

COLOURS = {"ok": "#2f855a", "error": "#c05621", "refused": "#c53030", "event": "#718096"}

_OUTPUT_SHOWN = 4000
"""Characters of an output shown on the page (the trace file keeps what it keeps)."""


def e(value: object) -> str:
    """Text escaped for HTML."""
    return html.escape(str(value), quote=True)


def when(timestamp: float) -> str:
    """A Unix time as UTC, to the second."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def decision(action: ActionRecord) -> str:
    """What the harness decided about the action, in words: allowed, or refused by which
    guardrail rule, limit or effect policy."""
    refusal = action.refusal
    if refusal:
        kind = {"guardrail": "guardrail rule", "budget": "limit", "effect": "effect policy",
                "invalid": "invalid action"}.get(refusal.get("kind", ""), refusal.get("kind"))
        return f"refused by {kind} {refusal.get('rule')}: {refusal.get('reason')}"
    check = next((s for s in action.steps if s.name == "guardrail"), None)
    if check is not None and check.attributes.get("decision") not in (None, "allow"):
        return f"allowed ({check.attributes['decision']}: {check.attributes.get('rule_id')})"
    return "allowed"


def page(trace: Trace) -> str:
    """The page for one trace."""
    spans = trace.spans
    start = min(s.start for s in spans)
    end = max(s.end or s.start for s in spans)
    first = next((s for s in spans if s.name == "episode.start"), None)
    last = next((s for s in spans if s.name == "episode.end"), None)
    actions = trace.actions
    refused = sum(1 for a in actions if a.status == "refused")
    meta = [("trace", trace.trace_id), ("started", when(start)),
            ("duration", f"{end - start:.2f} s"),
            ("actions", f"{len(actions)} ({refused} refused)")]
    if first is not None:
        a = first.attributes
        meta += [(k, a[key]) for k, key in (("sandbox", "sandbox"), ("base commit", "base"),
                                             ("config", "config_source")) if a.get(key)]
    header = " · ".join(f"{e(k)} <b>{e(v)}</b>" for k, v in meta)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>harness trace {e(trace.trace_id)}</title><style>{STYLE}</style></head><body>
<h1>Trace {e(trace.trace_id[:12])}</h1><p class="meta" id="meta">{header}</p>
<h2>Timeline</h2>{_timeline(trace, start, end)}
<h2>Actions</h2>{_actions(actions, start)}
{_events(trace, start)}
<h2>Change set</h2>{_changeset(last)}
</body></html>
"""


def _outcome(action: ActionRecord) -> str:
    status = action.status or "error"
    return status if status in ("ok", "refused") else "error"


def _timeline(trace: Trace, start: float, end: float) -> str:
    """One bar per action on a time axis, coloured by outcome; events as ticks."""
    width, left, row = 960, 170, 18
    items = [s for s in trace.top if s.name == "action" or s.name not in (
        "episode.start", "episode.end")]
    span = max(end - start, 1e-3)
    scale = (width - left - 20) / span
    height = 30 + row * max(1, len(items))
    parts = [f'<line x1="{left}" y1="20" x2="{width - 20}" y2="20" stroke="#a0aec0"/>']
    for tick in range(5):
        x = left + (width - left - 20) * tick / 4
        parts.append(f'<text x="{x:.0f}" y="14" font-size="10" text-anchor="middle">'
                     f'{span * tick / 4 * 1000:.0f} ms</text>')
    by_span = {a.span.span_id: a for a in trace.actions}
    for number, item in enumerate(items):
        y = 26 + number * row
        x = left + (item.start - start) * scale
        w = max(2.0, ((item.end or item.start) - item.start) * scale)
        action = by_span.get(item.span_id)
        if action is not None:
            label = f"#{action.index} {action.tool or '?'}"
            outcome = _outcome(action)
            tip = f"{label}: {decision(action)} ({item.duration_ms:.0f} ms)"
        else:
            label, outcome = item.name, "event"
            tip = f"{item.name} {json.dumps(item.attributes, default=str)[:200]}"
        parts.append(f'<text x="{left - 6}" y="{y + row - 6}" font-size="11" '
                     f'text-anchor="end">{e(label)}</text>')
        parts.append(f'<rect class="bar {outcome}" x="{x:.1f}" y="{y + 2}" width="{w:.1f}" '
                     f'height="{row - 5}" fill="{COLOURS[outcome]}"><title>{e(tip)}</title>'
                     f'</rect>')
    legend = " ".join(f'<span style="color:{c}">&#9632; {k}</span>'
                      for k, c in COLOURS.items())
    return (f'<svg id="timeline" role="img" aria-label="timeline" width="{width}" '
            f'height="{height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
            f'<p class="legend">{legend}</p>')


def _actions(actions: list[ActionRecord], start: float) -> str:
    rows = []
    for action in actions:
        outcome = _outcome(action)
        a = action.span.attributes
        steps = ", ".join(f"{s.name} {s.duration_ms:.1f} ms" for s in action.steps)
        rows.append(
            f'<tr class="action" data-outcome="{outcome}" id="action-{action.index}">'
            f'<td class="n">{action.index}</td>'
            f'<td class="n">{(action.span.start - start) * 1000:.0f}</td>'
            f"<td>{e(action.tool or '?')}</td>"
            f"<td><pre>{e(_short(action.parameters))}</pre></td>"
            f'<td class="{outcome}">{e(decision(action))}</td>'
            f'<td class="n">{action.span.duration_ms:.1f}<br><small>{e(steps)}</small></td>'
            f"<td>{_output(a.get('output', action.result))}</td>"
            f"<td>{_files(a.get('files'), a.get('commits'))}</td>"
            f"<td>{_rows(a.get('rows'))}</td></tr>")
    if not rows:
        return "<p>No actions.</p>"
    return ('<table id="actions"><tr><th>#</th><th>t+ms</th><th>tool</th><th>parameters</th>'
            "<th>decision</th><th>ms</th><th>output (redacted)</th><th>files and commits"
            "</th><th>rows</th></tr>" + "".join(rows) + "</table>")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
    return text if len(text) <= _OUTPUT_SHOWN else text[:_OUTPUT_SHOWN] + " ..."


def _output(output: Any) -> str:
    if not output:
        return ""
    if not isinstance(output, dict):
        return f"<pre>{e(_short(output))}</pre>"
    parts = []
    if "exit_code" in output:
        parts.append(f"exit {e(output['exit_code'])}")
    for stream in ("stdout", "stderr", "error", "content"):
        if isinstance(output.get(stream), str) and output[stream]:
            parts.append(f"<pre>{e(_short(output[stream]))}</pre>")
    rest = {k: v for k, v in output.items()
            if k not in ("exit_code", "stdout", "stderr", "error", "content")}
    if rest:
        parts.append(f"<pre>{e(_short(rest))}</pre>")
    return "".join(parts)


def _files(files: Any, commits: Any) -> str:
    lines = [f"<code>{e(f['path'])}</code> {e(f.get('status', ''))} "
             f"+{e(f.get('added', 0))} -{e(f.get('removed', 0))}" for f in files or []]
    lines += [f"commit <code>{e(str(c['sha'])[:10])}</code> {e(c.get('message', ''))}"
              for c in commits or []]
    return "<br>".join(lines)


def _rows(rows: Any) -> str:
    return "<br>".join(
        f"<code>{e(table)}</code> +{e(c.get('inserted', 0))} ~{e(c.get('updated', 0))} "
        f"-{e(c.get('deleted', 0))}" for table, c in sorted((rows or {}).items()))


def _events(trace: Trace, start: float) -> str:
    events = [s for s in trace.top if s.name not in ("action", "episode.start", "episode.end")]
    if not events:
        return ""
    items = "".join(f"<li>{(s.start - start) * 1000:.0f} ms: {e(s.name)} "
                    f"<code>{e(json.dumps(s.attributes, default=str))}</code></li>"
                    for s in events)
    return f'<h2>Events</h2><ul id="events">{items}</ul>'


def _changeset(end: SpanRecord | None) -> str:
    if end is None:
        return "<p>The episode did not end: no change set was recorded.</p>"
    a = end.attributes
    summary = a.get("changeset") or {}
    parts = [f"<p><b>{e(summary.get('commits', 0))}</b> commit(s), "
             f"<b>{e(summary.get('files_changed', 0))}</b> file(s) "
             f"(+{e(summary.get('lines_added', 0))} -{e(summary.get('lines_removed', 0))} "
             "lines)</p>"]
    if a.get("commits"):
        parts.append("<ul>" + "".join(f"<li><code>{e(str(c['sha'])[:12])}</code> "
                                      f"{e(c.get('message', ''))}</li>" for c in a["commits"])
                     + "</ul>")
    if a.get("files"):
        parts.append("<table><tr><th>file</th><th>how</th><th>+</th><th>-</th></tr>" + "".join(
            f"<tr><td><code>{e(f['path'])}</code></td><td>{e(f.get('status', ''))}</td>"
            f'<td class="n">{e(f.get("added", 0))}</td>'
            f'<td class="n">{e(f.get("removed", 0))}</td></tr>'
            for f in a["files"]) + "</table>")
    rows = summary.get("rows")
    if rows:
        tables = rows.get("tables") or {}
        total = (rows.get("total") or {}).get("rows", 0)
        parts.append(f"<p><b>{e(total)}</b> row(s) changed in the database</p>")
        if tables:
            parts.append("<table><tr><th>table</th><th>inserted</th><th>updated</th>"
                         "<th>deleted</th></tr>" + "".join(
                             f"<tr><td><code>{e(t)}</code></td>"
                             f'<td class="n">{e(c.get("inserted", 0))}</td>'
                             f'<td class="n">{e(c.get("updated", 0))}</td>'
                             f'<td class="n">{e(c.get("deleted", 0))}</td></tr>'
                             for t, c in tables.items()) + "</table>")
        if rows.get("ddl"):
            parts.append("<p>Schema changes:</p><pre>" + e("\n".join(
                str(d) for d in rows["ddl"])) + "</pre>")
    if summary.get("secrets"):
        parts.append(f'<p class="refused">A credential is in the change: '
                     f"{e(', '.join(summary['secrets']))}; it is never promoted.</p>")
    counters = a.get("counters")
    if counters:
        parts.append(f"<p class=\"meta\">counters at the end: <code>{e(json.dumps(counters))}"
                     "</code></p>")
    return '<div id="changeset">' + "".join(parts) + "</div>"
