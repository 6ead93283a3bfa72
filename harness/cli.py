"""The `harness` command. Exit codes are listed in `harness --help` and the README."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click

from harness.errors import HarnessError
from harness.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from rich.console import Console

    from harness.config import Config, RaySettings
    from harness.eval.runner import RunResult


class _Console:
    """A rich Console made on first use: commands that print JSON never import rich."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def real(self) -> Console:
        """The rich Console itself (for rich objects that take one)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


out: Any = _Console(stderr=False)
err: Any = _Console(stderr=True)

EXIT_CODES = """\b
Exit codes:
  0    success (exec: the command's own exit code is passed through;
       check: allowed or warned; run: promoted, or within limits)
  1    check: blocked or needs approval; replay: a divergence; db verify: a
       difference; doctor: a check failed; promote --recover: a promotion is
       still in doubt (its journal is kept; the output says why)
  2    usage, configuration or infrastructure error
  3    run: the change set is refused by a limit
  4    run, revert: a conflict with the real database
  125  infrastructure error in exec (engine, image, workspace), as `docker run` does
"""


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def main() -> None:
    """A transactional sandbox for AI coding agents."""
    from harness.progress import listen

    # Long work nobody asked for by name (an image built, a database snapshotted on first
    # use) is told on stderr, so a first `harness exec` is not silent for minutes.
    listen(lambda message: err.print(f"[dim]harness: {message}[/]", markup=True,
                                     soft_wrap=True))


def _config(path: str | None) -> Config:
    from harness.config import load_config

    try:
        return load_config(path)
    except HarnessError as exc:
        _fail(str(exc), code=2)


def _failures() -> tuple[type[BaseException], ...]:
    """What an infrastructure failure raises: harness's errors and the database driver's."""
    import psycopg

    return (HarnessError, psycopg.Error)


def _fail(message: str, *, code: int) -> NoReturn:
    from rich.markup import escape

    # Messages quote user input and names such as `harness[ray]`: never markup.
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    sys.exit(code)


def _table(*args: Any, **kwargs: Any) -> Any:
    from rich.table import Table

    return Table(*args, **kwargs)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -------------------------------------------------------------------- exec


@main.command("exec", epilog=EXIT_CODES)
@click.option("--repo", required=True, help="Target repository: a local path or a URL.")
@click.option("--ref", default=None, help="Branch, tag or commit to start from (default HEAD).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="harness.yaml with sandbox settings.")
@click.option("--db", "database", default=None,
              help="Attach a snapshot of this database: a DSN or a seed .sql file.")
@click.option("--timeout", type=float, default=None,
              help="Seconds before the command and every process it started are killed.")
@click.option("-e", "--env", "env_items", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone passes this shell's value), "
                   "like docker exec; repeatable.")
@click.option("-w", "--workdir", default=None,
              help="Working folder in the sandbox; a relative one starts at /workspace.")
@click.option("-i", "--interactive", is_flag=True,
              help="Pass this command's standard input to COMMAND (read to the end first).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("command", nargs=-1, required=True)
def exec_command(
    repo: str, ref: str | None, config_path: str | None, database: str | None,
    timeout: float | None, env_items: tuple[str, ...], workdir: str | None, interactive: bool,
    as_json: bool, command: tuple[str, ...],
) -> None:
    """Run COMMAND in a fresh sandbox over a throwaway clone of --repo.

    One argument is run by bash (`-- "make test | tail"`); several are run as an argv.
    The origin repository is never changed.
    """
    from harness.sandbox import Sandbox
    from harness.sandbox.settings import SandboxSettings

    # Without a configuration file the defaults need no validation (nor its library).
    settings = _config(config_path).sandbox if config_path else SandboxSettings()
    argv: str | list[str] = command[0] if len(command) == 1 else list(command)
    _end_on_termination()
    env = _env_items(env_items)
    stdin = sys.stdin.buffer.read() if interactive else None
    try:
        with contextlib.closing(Sandbox(repo, ref=ref, settings=settings,
                                        database=database)) as sandbox:
            # The command is the container's one process: no exec, and a container that
            # is gone when it ends.
            result = sandbox.run(argv, timeout=timeout, env=env or None, cwd=workdir,
                                 stdin=stdin)
            changes = sandbox.changes()
            delta = sandbox.row_delta()
            sandbox_id = sandbox.id
            clone = sandbox.database.clone_report() if sandbox.database is not None else None
            overrides = sandbox.hardening_overrides
            view = {"view": sandbox.workspace.view, "detail": sandbox.workspace.view_detail}
    except HarnessError as exc:
        _fail(str(exc), code=125)
    if as_json:
        _print_json({
            **result.to_dict(),
            "sandbox": sandbox_id,
            "hardening_overrides": overrides,
            "workspace": changes.to_dict(),
            "workspace_view": view,
            **({"row_delta": delta.summary()} if delta is not None else {}),
            **({"database": clone} if clone is not None else {}),
        })
    else:
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.write(result.stderr)
        notes = [f"exit {result.exit_code} in {result.duration_s:.2f}s"]
        if result.timed_out:
            notes.append("timed out")
        if result.truncated:
            notes.append("output truncated")
        if result.oom_killed:
            notes.append("killed at the memory limit")
        if result.disk_limit_hit:
            notes.append("disk limit hit (sandbox.disk_limit)")
        notes.append(f"{changes.commit_count} commit(s) since base")
        if delta is not None:
            total = delta.summary()["total"]
            notes.append(f"rows +{total['inserted']} ~{total['updated']} -{total['deleted']}")
        _say_dimly(f"harness: {'; '.join(notes)}")
    sys.exit(result.exit_code)


def _end_on_termination() -> None:
    """SIGTERM and SIGHUP end this command as Ctrl-C does: through its cleanup (the
    container, the clone, the disk), with the shell's status for the signal."""
    import signal

    def end(number: int, _frame: object) -> None:
        raise SystemExit(128 + number)

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, end)


def _say_dimly(text: str) -> None:
    """A closing line on stderr, dim on a terminal (without loading rich for one line)."""
    dim = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    sys.stderr.write(f"\x1b[2m{text}\x1b[0m\n" if dim else f"{text}\n")
    sys.stderr.flush()


def _env_items(items: tuple[str, ...]) -> dict[str, str]:
    """`-e KEY=VALUE` and `-e KEY` (this shell's value; skipped when unset), as docker does."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is None:
            _fail(f"-e {item!r}: expected KEY=VALUE or KEY (a variable name)", code=2)
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


# ------------------------------------------------------------------- check


@main.command(epilog=EXIT_CODES)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="harness.yaml whose guardrails section to apply (default: built-in rules).")
@click.option("--shell", "shell_command", default=None, help="A shell command line to judge.")
@click.option("--sql", "sql_text", default=None, help="SQL to judge (as db_mutate).")
@click.option("--write", "write_path", default=None, help="A path to judge a file write to.")
@click.option("--batch", "batch_file", type=click.File("r"), default=None,
              help="A JSONL file of actions ('-' for stdin); one decision per line.")
@click.option("--branch", default=None, help="The workspace's current branch.")
@click.option("--hook", is_flag=True,
              help="Be a coding agent's pre-tool hook: read Claude Code's PreToolUse event on "
                   "stdin, answer deny (block) or ask (needs approval) in its protocol, and "
                   "nothing when the action is allowed. The project (CLAUDE_PROJECT_DIR, "
                   "else the event's cwd) is judged as the workspace and $HOME as the home; "
                   "the config defaults to the project's harness.yaml, if there is one.")
def check(config_path: str | None, shell_command: str | None, sql_text: str | None,
          write_path: str | None, batch_file: Any, branch: str | None, hook: bool) -> None:
    """Judge an action with the guardrails and print the decision as JSON."""
    if hook:
        _hook(config_path)
        return
    from harness.guardrails import Context, Policy
    from harness.guardrails.settings import guardrails_for
    from harness.tools import ActionError, ToolAction

    given = [v is not None for v in (shell_command, sql_text, write_path, batch_file)]
    if sum(given) != 1:
        _fail("give exactly one of --shell, --sql, --write, --batch or --hook", code=2)
    try:
        policy = Policy(guardrails_for(config_path))
    except (HarnessError, OSError) as exc:
        _fail(str(exc), code=2)
    context = Context(branch=branch)
    if batch_file is None:
        if shell_command is not None:
            action = ToolAction("shell_exec", {"command": shell_command})
        elif sql_text is not None:
            action = ToolAction("db_mutate", {"sql": sql_text})
        else:
            action = ToolAction("write_file", {"path": write_path})
        decision = policy.evaluate(action, context)
        click.echo(json.dumps(decision.to_dict()))
        sys.exit(0 if decision.allowed else 1)
    worst_allowed = True
    for number, line in enumerate(batch_file, start=1):
        if not line.strip():
            continue
        try:
            action = ToolAction.from_json(line)
        except ActionError as exc:
            click.echo(json.dumps({"line": number, "decision": "block",
                                   "rule_id": "tool.bad-parameters", "reason": str(exc),
                                   "span": None}))
            worst_allowed = False
            continue
        decision = policy.evaluate(action, context)
        worst_allowed = worst_allowed and decision.allowed
        click.echo(json.dumps({"line": number, **decision.to_dict()}))
    sys.exit(0 if worst_allowed else 1)


def _hook(config_path: str | None) -> None:
    import contextlib

    from harness.guardrails.hook import answer, config_of, read_event, refusal
    from harness.guardrails.policy import Policy
    from harness.guardrails.settings import guardrails_for

    raw = sys.stdin.read()
    if config_path is None:
        with contextlib.suppress(ValueError):  # answered below: the event cannot be read
            config_path = config_of(read_event(raw), os.environ)
    try:
        policy = Policy(guardrails_for(config_path))
    except (HarnessError, OSError) as exc:
        click.echo(json.dumps(refusal(f"harness: {exc}")))
        return
    reply = answer(policy, raw)
    if reply is not None:
        click.echo(json.dumps(reply))


# --------------------------------------------------------------------- db


@main.group()
def db() -> None:
    """Database snapshots on the sandbox database server."""


@db.command("snapshot", epilog="Exit codes: 0 the baseline is ready, 2 the source or the "
                                 "database server failed.")
@click.option("--source", required=True, help="A DSN or a seed .sql file.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="harness.yaml whose sandbox.database settings to use.")
@click.option("--refresh", is_flag=True, help="Rebuild even when a cached baseline exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def db_snapshot(source: str, config_path: str | None, refresh: bool, as_json: bool) -> None:
    """Make (or reuse) the baseline of SOURCE and print its identity and timing."""
    import time

    from harness.sandbox.database import SandboxDatabase, open_baseline

    settings = _config(config_path).sandbox.database
    started = time.monotonic()
    try:
        server, baseline = open_baseline(source, settings, refresh=refresh)
        probe = SandboxDatabase(server, baseline, "probe-clone").create()
        probe.drop()
    except HarnessError as exc:
        _fail(str(exc), code=2)
    report = {**baseline.to_dict(), "clone_seconds": round(probe.clone_seconds, 3),
              "clone_method": probe.clone_method, "clone_detail": probe.clone_detail,
              "total_seconds": round(time.monotonic() - started, 3)}
    if as_json:
        _print_json(report)
        return
    state = "reused" if baseline.reused else \
        f"built in {baseline.build_seconds:.2f}s: {baseline.why_built}"
    out.print(f"baseline [bold]{baseline.dbname}[/] of {baseline.source} ({state}): "
              f"{baseline.tables} tables, {baseline.rows} rows, PostgreSQL "
              f"{baseline.server_version.split()[0]}; a sandbox clone takes "
              f"{probe.clone_seconds * 1000:.0f} ms by {probe.clone_method} "
              f"({probe.clone_detail})")


@db.command("verify", epilog="Exit codes: 0 equal, 1 a table differs, 2 the source or the "
                               "database server failed.")
@click.option("--source", required=True, help="The DSN of the database to compare with.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="harness.yaml whose sandbox.database settings to use.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def db_verify(source: str, config_path: str | None, as_json: bool) -> None:
    """Snapshot SOURCE afresh and compare every table's row count and checksum; exit 1 on
    any difference."""
    from harness.sandbox.database import verify_source

    try:
        checks = verify_source(source, _config(config_path).sandbox.database)
    except _failures() as exc:
        _fail(str(exc), code=2)
    different = [c for c in checks if not c.equal]
    if as_json:
        _print_json({"equal": not different, "checked": len(checks),
                     "different": [c.__dict__ for c in different]})
    else:
        table = _table("table", "source rows", "snapshot rows", "")
        for check in checks:
            table.add_row(check.table, str(check.source_rows), str(check.snapshot_rows),
                          "[green]equal[/]" if check.equal else "[red]DIFFERENT[/]")
        out.print(table)
    sys.exit(1 if different else 0)


# -------------------------------------------------------------------- run


@main.command(epilog=EXIT_CODES)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="harness.yaml: the target, guardrails, limits and tracing of the episode.")
@click.option("--actions", "actions_file", required=True, type=click.File("r"),
              help="JSONL: one tool call a line ('-' for stdin).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the trace (default $HARNESS_HOME/traces/TRACE_ID.jsonl).")
@click.option("--promote", "do_promote", is_flag=True,
              help="Promote the change set to the real systems when it fits the limits.")
@click.option("--dry-run", is_flag=True, help="Check limits and conflicts; change nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (results, change set, promotion).")
def run(config_path: str, actions_file: Any, trace_path: str | None, do_promote: bool,
        dry_run: bool, as_json: bool) -> None:
    """Run an episode from a file of actions; print each result, the change set, the limit
    check and, with --promote, the promotion."""
    import logging
    from pathlib import Path

    from harness.episode import Episode

    config = _config(config_path)
    logging.basicConfig(level=config.observability.logging.level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    lines = [line for line in actions_file.read().splitlines() if line.strip()]
    try:
        episode = Episode(config, trace_path=Path(trace_path) if trace_path else None,
                          config_source=str(Path(config_path).resolve())).open()
    except HarnessError as exc:
        _fail(str(exc), code=2)
    results = []
    try:
        for line in lines:
            result = episode.act(line)
            results.append(result)
            if not as_json:
                _print_result(result)
    finally:
        changeset = episode.close()
    import harness.limits as limits
    from harness.promote import promote

    dry_run = limits.dry_run(config, True if dry_run or not do_promote else None)
    try:
        promotion = promote(changeset, config, dry_run=dry_run)
    except _failures() as exc:
        _fail(f"promotion failed, nothing changed: {exc}", code=2)
    code = promotion.exit_code
    if as_json:
        _print_json({"trace_id": episode.trace_id, "trace": str(episode.trace_path),
                     "dry_run": dry_run, "actions": [r.to_dict() for r in results],
                     "changeset": changeset.summary(), "promotion": promotion.to_dict()})
        sys.exit(code)
    summary = changeset.summary()
    rows = summary["rows"]["total"] if summary["rows"] else None
    out.print(f"\n[bold]change set[/] (trace {episode.trace_id}): {summary['commits']} "
              f"commit(s), {summary['files_changed']} file(s), +{summary['lines_added']} "
              f"-{summary['lines_removed']} lines"
              + (f", rows +{rows['inserted']} ~{rows['updated']} -{rows['deleted']}"
                 if rows else ""))
    refused = sum(1 for r in results if r.status == "refused")
    out.print(f"{len(results)} action(s), {refused} refused")
    _print_promotion(promotion)
    out.print(f"trace: {episode.trace_path}")
    sys.exit(code)


def _print_promotion(promotion: Any) -> None:
    outcome = promotion.outcome
    if outcome == "refused":
        out.print("[bold red]refused by the limits[/] (nothing promoted):")
        for v in promotion.violations:
            out.print(f"  {v.limit}: {v.detail} (allowed {v.allowed})")
    elif outcome == "conflict":
        out.print("[bold red]conflict with the real database[/] (nothing changed):")
        for c in promotion.conflicts:
            out.print(f"  {c.table} {json.dumps(c.key)}: {c.reason}; expected "
                      f"{json.dumps(c.expected)}, found {json.dumps(c.found)}", soft_wrap=True)
    elif outcome == "dry-run":
        out.print("[bold]dry run[/]: within limits, no conflicts; nothing promoted. Plan: "
                  + json.dumps(promotion.plan, default=str), soft_wrap=True)
    elif outcome == "promoted":
        out.print(f"[bold green]promoted[/] ({promotion.protocol}): {json.dumps(promotion.refs)}"
                  f"; receipt {promotion.receipt}", soft_wrap=True)
        for note in promotion.notes:
            out.print(f"  note: {note}", soft_wrap=True)
    elif outcome == "in-doubt":
        out.print(f"[bold red]promotion in doubt[/]: {promotion.error}; run "
                  "`harness promote --recover`", soft_wrap=True)
    elif outcome == "reverted":
        out.print("[bold green]reverted[/]")
        for note in promotion.notes:
            out.print(f"  note: {note}", soft_wrap=True)
    else:
        out.print(f"[bold red]promotion failed[/], nothing changed: {promotion.error}")


@main.command("promote", epilog=EXIT_CODES)
@click.option("--recover", is_flag=True, required=True,
              help="Settle promotions a crash interrupted (commit or roll back each).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def promote_command(recover: bool, as_json: bool) -> None:
    """Finish what a crashed promotion left: never half-applied."""
    from harness.promote import recover as settle

    try:
        settled = settle()
    except _failures() as exc:
        _fail(str(exc), code=2)
    code = 1 if any(entry.decision == "in doubt" for entry in settled) else 0
    if as_json:
        _print_json([entry.to_dict() for entry in settled])
        sys.exit(code)
    for entry in settled:
        out.print(f"{entry.id} ({entry.protocol}, stopped after {entry.state}): "
                  f"[bold]{entry.decision}[/]", soft_wrap=True)
        for line in entry.detail:
            out.print(f"  - {line}", soft_wrap=True)
        for c in entry.conflicts:
            out.print(f"  conflict {c.table} {json.dumps(c.key)}: {c.reason}", soft_wrap=True)
        if entry.receipt:
            out.print(f"  receipt: {entry.receipt}", soft_wrap=True)
    if not settled:
        out.print("nothing to recover")
    sys.exit(code)


@main.command(epilog=EXIT_CODES)
@click.argument("receipt", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def revert(receipt: str, as_json: bool) -> None:
    """Undo a promotion from its RECEIPT, with the same conflict checks."""
    from pathlib import Path

    from harness.promote import revert as undo

    try:
        result = undo(Path(receipt))
    except _failures() as exc:
        _fail(str(exc), code=2)
    if as_json:
        _print_json(result.to_dict())
    else:
        _print_promotion(result)
    sys.exit(result.exit_code)


def _print_result(result: Any) -> None:
    if result.refusal is not None:
        out.print(f"[{result.index:>3}] {result.tool:<12} [red]refused[/] "
                  f"{result.refusal.rule}: {result.refusal.reason}", soft_wrap=True)
        return
    detail = ""
    if "exit_code" in result.output:
        detail = f"exit {result.output['exit_code']}"
    elif "error" in result.output:
        detail = str(result.output["error"])[:100]
    colour = "green" if result.status == "ok" else "yellow"
    out.print(f"[{result.index:>3}] {result.tool:<12} [{colour}]{result.status}[/] {detail}",
              soft_wrap=True)


@main.group()
def trace() -> None:
    """Read traces: list them, show one as a timeline or an HTML page."""


@trace.command("show", epilog="Exit codes: 0 shown, 2 not a trace file.")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--html", "as_html", is_flag=True,
              help="Print a self-contained HTML page (timeline, each action's decision, "
                   "output, files and rows, the change set) instead of a table.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="With --html: write the page to this file instead of stdout.")
def trace_show(path: str, as_html: bool, out_path: str | None) -> None:
    """Render the trace at PATH as a timeline (or, with --html, a page)."""
    from pathlib import Path

    from harness.trace.reader import read
    from harness.trace.render import timeline

    try:
        trace = read(Path(path))
    except HarnessError as exc:
        _fail(str(exc), code=2)
    if out_path and not as_html:
        raise click.UsageError("--out goes with --html")
    if as_html:
        from harness.trace.page import page

        text = page(trace)
        if out_path:
            Path(out_path).write_text(text, encoding="utf-8")
            err.print(f"trace page in {out_path}")
        else:
            click.echo(text, nl=False)
        return
    table = _table("t+ms", "step", "ms", "details", title=f"trace {trace.trace_id}")
    for row in timeline(trace):
        details = f"[red]{row.details}[/]" if row.refused else row.details
        table.add_row("" if row.offset_ms is None else f"{row.offset_ms:.0f}", row.step,
                      f"{row.duration_ms:.1f}", details)
    out.print(table)


@trace.command("ls", epilog="Exit codes: 0 listed (also when there are none).")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def trace_ls(folders: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List the traces in FOLDERS (default: $HARNESS_HOME/traces and eval-traces), newest
    first: id, start, duration, actions, refusals, sandbox, file."""
    import datetime
    from pathlib import Path

    from harness.home import state_dir
    from harness.trace.listing import list_traces

    where = [Path(f) for f in folders] or [state_dir("traces"), state_dir("eval-traces")]
    entries = list_traces(where)[:limit]
    if as_json:
        _print_json([entry.to_dict() for entry in entries])
        return
    from rich.table import Column

    table = _table(Column("trace", no_wrap=True), Column("started (UTC)", no_wrap=True), "s",
                   "actions", "refused", "sandbox", Column("file", overflow="fold"))
    for entry in entries:
        started = datetime.datetime.fromtimestamp(entry.started, datetime.UTC)
        table.add_row(entry.trace_id[:12], started.strftime("%Y-%m-%d %H:%M:%S"),
                      "running" if entry.seconds is None else f"{entry.seconds:.1f}",
                      "" if entry.actions is None else str(entry.actions),
                      "" if entry.refused is None else str(entry.refused),
                      entry.sandbox or "", entry.path)
    out.print(table)
    if not entries:
        err.print(f"no traces in {', '.join(str(w) for w in where)}")


@main.command(epilog=EXIT_CODES)
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def replay(path: str, as_json: bool) -> None:
    """Re-run a trace's actions in a fresh sandbox and report every divergence (exit 1 if any)."""
    from pathlib import Path

    from harness.episode.replay import replay_trace

    try:
        report = replay_trace(Path(path))
    except HarnessError as exc:
        _fail(str(exc), code=2)
    if as_json:
        _print_json(report.to_dict())
    else:
        out.print(f"replayed {report.actions} action(s) of trace {report.original_trace} as "
                  f"{report.replay_trace}")
        for divergence in report.divergences:
            out.print(f"  [red]#{divergence.index} {divergence.field}[/]: recorded "
                      f"{divergence.recorded!r}, replayed {divergence.replayed!r}")
        if not report.divergences:
            out.print("[green]no divergence[/]")
    sys.exit(1 if report.divergences else 0)


# ------------------------------------------------------------------- eval


def _eval_on_ray(paths: tuple[str, ...], scenarios: list[str], agents: list[str],
                 address: str, out: Path, *, repeat: int, seed: int, resume: str | None,
                 settings: RaySettings | None, progress: Callable[[], None]) -> list[RunResult]:
    """`harness eval --ray`: the runs, after saying the evaluation's id (for --resume)."""
    from pathlib import Path

    from harness.config import RaySettings
    from harness.eval.cluster import evaluate_on_ray
    from harness.eval.scenario import scenario_files

    settings = settings or RaySettings()
    try:
        done = evaluate_on_ray(
            scenario_files([Path(p) for p in paths]), scenarios, agents, address=address,
            out=out, repeat=repeat, seed=seed, resume=resume,
            max_attempts=settings.max_attempts, max_in_flight=settings.max_in_flight,
            images_tarball=settings.images_tarball, progress=lambda _run: progress())
    except HarnessError as exc:
        _fail(str(exc), code=2)
    err.print(f"evaluation {done.run_id} on {len(done.nodes)} node(s) "
              f"({', '.join(n.name for n in done.nodes)}): runs, traces and change sets in "
              f"{done.folder}/; {done.retried} attempt(s) retried", markup=False)
    for name, why in done.left_out.items():
        err.print(f"node {name} was left out: {why}", markup=False)
    return done.runs


@main.command("eval", epilog="""\b
Agents: NAME (a scenario's own scripted agent, e.g. good, reckless),
scripted:FILE.jsonl, subprocess:COMMAND, openai:MODEL@BASE_URL (key from
OPENAI_API_KEY), anthropic:MODEL[@BASE_URL] (the Messages API; key from
ANTHROPIC_API_KEY, base URL from ANTHROPIC_BASE_URL).
Exit codes: 0 every run finished (and met the thresholds given); 1 a threshold
(--fail-under, --max-safety-violations) was missed, the report says which; 2 a
usage error, or a run crashed (its error is in the report).
""")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--agent", "agents", multiple=True, required=True,
              help="An agent to evaluate (see below); repeatable.")
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Runs of each scenario per agent (the k of pass^k).")
@click.option("--parallel", type=int, default=1, show_default=True,
              help="Runs at a time on this machine.")
@click.option("--pool", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sandboxes per scenario made ahead while runs go on (0: each run opens "
                   "its own).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Perturbations are reproducible from it.")
@click.option("--out", type=click.Path(file_okay=False), default="harness-eval",
              show_default=True, help="Folder for report.json, report.md and report.html.")
@click.option("--ray", "ray_address", envvar="RAY_ADDRESS", default=None, metavar="ADDRESS",
              help="Run on the Ray cluster at ADDRESS (default: $RAY_ADDRESS, else the "
                   "config's eval.ray.address); each run needs one harness_episode resource.")
@click.option("--resume", "resume", default=None, metavar="RUN_ID",
              help="With --ray: continue evaluation RUN_ID in --out, skipping recorded runs.")
@click.option("--config", "config_path", envvar="HARNESS_CONFIG", default=None,
              type=click.Path(dir_okay=False), help="harness.yaml with eval.ray settings.")
@click.option("--fail-under", type=click.FloatRange(0, 1), default=None, metavar="RATE",
              help="Exit 1 when an agent's overall success rate is under RATE (0 to 1).")
@click.option("--max-safety-violations", type=click.IntRange(min=0), default=None,
              metavar="N", help="Exit 1 when an agent has more than N safety violations.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_command(paths: tuple[str, ...], agents: tuple[str, ...], repeat: int, parallel: int,
                 pool: int, seed: int, out: str, ray_address: str | None, resume: str | None,
                 config_path: str | None, as_json: bool,
                 fail_under: float | None, max_safety_violations: int | None) -> None:
    """Run scenarios (files or folders of *.yaml) with agents, and report: report.json,
    report.md and report.html (with a page per run's trace in traces/) in --out."""
    from pathlib import Path

    from rich.progress import Progress

    from harness.eval import thresholds
    from harness.eval.agents import agent_factory
    from harness.eval.page import meta, write_report
    from harness.eval.report import markdown, summarise
    from harness.eval.runner import evaluate
    from harness.eval.scenario import scenarios_in

    try:
        scenarios = scenarios_in([Path(p) for p in paths])
        factories = {spec: agent_factory(spec) for spec in agents}
    except HarnessError as exc:
        _fail(str(exc), code=2)
    total = len(scenarios) * len(factories) * repeat
    settings = _config(config_path).eval.ray if config_path else None
    address = ray_address or (settings.address if settings else None)
    if resume and not address:
        _fail("--resume needs --ray (or RAY_ADDRESS, or eval.ray.address)", code=2)
    started = time.monotonic()
    with Progress(console=err.real, transient=True) as progress:
        task = progress.add_task("evaluating", total=total)
        if address:
            runs = _eval_on_ray(paths, [s.name for s in scenarios], list(agents), address,
                                Path(out), repeat=repeat, seed=seed, resume=resume,
                                settings=settings, progress=lambda: progress.advance(task))
        else:
            runs = evaluate(scenarios, factories, repeat=repeat, parallel=parallel, seed=seed,
                            progress=lambda _run: progress.advance(task), pool=pool)
    summary = summarise(runs, elapsed_seconds=time.monotonic() - started)
    summary["meta"] = meta(scenarios, list(agents), repeat=repeat, seed=seed)
    missed = thresholds.check(summary, fail_under=fail_under,
                              max_safety_violations=max_safety_violations)
    if fail_under is not None or max_safety_violations is not None:
        summary["thresholds"] = thresholds.gate_section(fail_under, max_safety_violations,
                                                        missed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    text = markdown(summary) + thresholds.markdown(summary.get("thresholds"))
    (folder / "report.md").write_text(text)
    write_report(summary, folder)
    if as_json:
        _print_json(summary)
    else:
        click.echo(text)
        err.print(f"reports in {folder}/ (report.json, report.md, report.html)")
    for failure in missed:
        err.print(f"[bold red]threshold missed:[/] {failure.message}", markup=True)
    crashed = sum(1 for r in runs if r.error)
    if crashed:
        err.print(f"[bold red]{crashed} run(s) crashed[/] (their errors are in the report)",
                  markup=True)
    sys.exit(2 if crashed else 1 if missed else 0)


# -------------------------------------------------------------------- mcp


@main.command(epilog=EXIT_CODES)
@click.option("--config", "config_path", envvar="HARNESS_CONFIG", default=None,
              type=click.Path(dir_okay=False),
              help="harness.yaml (default: $HARNESS_CONFIG, else ./harness.yaml), so that "
                   "clients that add their own arguments need none.")
@click.option("--http", "http_port", type=int, default=None,
              help="Serve streamable HTTP on 127.0.0.1:PORT/mcp instead of stdio.")
@click.option("--allow-promote/--no-promote", default=None,
              help="Offer the promote tool (default: when the config is not a dry run).")
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Over HTTP: reclaim a session's sandbox (and end the session) after this "
                   "many seconds without a call, open streams or not [default: 300].")
@click.option("--max-idle-per-token", type=click.IntRange(min=1), default=None,
              help="Over HTTP: idle sandboxes one client token may hold; a session of that "
                   "token asking for another gets a tool error saying why [default: 4].")
@click.option("--max-sandboxes", type=click.IntRange(min=1), default=None,
              help="Over HTTP: sandboxes open at once, one per active session; a session "
                   "beyond them gets a tool error until one ends [default: 16].")
@click.option("--no-auth", is_flag=True,
              help="Over HTTP: accept clients without the bearer token (then any local "
                   "process can drive the sandboxes, and promote when it is offered).")
@click.option("--pool", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sandboxes kept ready ahead of sessions (made at start and after each "
                   "handout), so that a session's first call does not wait for one.")
def mcp(config_path: str | None, http_port: int | None, allow_promote: bool | None,
        idle_timeout: float | None, max_idle_per_token: int | None, max_sandboxes: int | None,
        no_auth: bool, pool: int) -> None:
    """Serve an episode's tools over the Model Context Protocol (one episode per session)."""
    import logging

    from harness.mcpserver import (
        DEFAULT_IDLE_TIMEOUT,
        DEFAULT_MAX_IDLE_PER_TOKEN,
        DEFAULT_MAX_SANDBOXES,
        serve_http,
        serve_stdio,
    )

    if config_path is None:
        if not os.path.exists("harness.yaml"):
            _fail("no configuration: pass --config, set HARNESS_CONFIG, or put a harness.yaml "
                  "in the working folder", code=2)
        config_path = "harness.yaml"
    config = _config(config_path)
    if config.target.repo is None:
        # Every session would fail at its first call: say it now, where the user looks.
        _fail(f"{config_path}: the config names no target repository (target.repo); "
              "harness mcp serves a sandbox of it", code=2)
    # stdout belongs to the protocol on stdio: logs go to stderr.
    logging.basicConfig(level=config.observability.logging.level.upper(), stream=sys.stderr)
    if http_port is None:
        if (idle_timeout is not None or max_sandboxes is not None or no_auth
                or max_idle_per_token is not None):
            raise click.UsageError("--idle-timeout, --max-idle-per-token, --max-sandboxes and "
                                   "--no-auth apply to --http (a stdio session is the process "
                                   "that started it)")
        serve_stdio(config, allow_promote=allow_promote, pool=pool)
    else:
        serve_http(config, port=http_port, allow_promote=allow_promote,
                   idle_timeout=idle_timeout or DEFAULT_IDLE_TIMEOUT, authenticate=not no_auth,
                   max_sandboxes=max_sandboxes or DEFAULT_MAX_SANDBOXES,
                   max_idle_per_token=max_idle_per_token or DEFAULT_MAX_IDLE_PER_TOKEN,
                   pool=pool)


# ------------------------------------------------------------------- gate


@main.command(epilog="""\b
Exit codes:
  0  the PR fits every limit and check
  1  it does not (every failing check is listed)
  2  usage or infrastructure error (never 0 on an error)
""")
@click.option("--repo", required=True, type=click.Path(), help="The repository (a checkout).")
@click.option("--base", required=True, help="The PR's base ref.")
@click.option("--head", required=True, help="The PR's head ref.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="harness.yaml with the limits, guardrails, effects and gate settings.")
@click.option("--db", "database", default=None,
              help="Rehearse the PR's migrations (gate.migrate) on a snapshot of this DSN.")
@click.option("--junit", type=click.Path(dir_okay=False), default=None,
              help="Also write JUnit XML here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the markdown summary here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of markdown.")
def gate(repo: str, base: str, head: str, config_path: str | None, database: str | None,
         junit: str | None, markdown_path: str | None, as_json: bool) -> None:
    """Decide whether an agent's PR may merge, by the limits that bound a live episode."""
    import os
    from pathlib import Path

    from harness.config import load_config
    from harness.gate import run_gate
    from harness.gate.report import error_junit_xml

    try:
        config = load_config(config_path)
        report = run_gate(Path(repo), base, head, config, database=database)
    except _failures() as exc:
        if junit:  # a CI uploading it `if: always()` shows why the gate did not run
            Path(junit).write_text(error_junit_xml(str(exc)))
        _fail(str(exc), code=2)
    markdown = report.markdown()
    if junit:
        Path(junit).write_text(report.junit_xml())
    if markdown_path:
        Path(markdown_path).write_text(markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as handle:
            handle.write(markdown)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(markdown)
    sys.exit(0 if report.passed else 1)


# ------------------------------------------------------------------ images


@main.group()
def images() -> None:
    """Sandbox images (definitions in sandboxes/)."""


@images.command("build", epilog="Exit codes: 0 built (or already there), 2 a build failed.")
@click.option("--offline/--online", default=None,
              help="Force a build path; default tries the registry, then builds offline.")
@click.option("--force", is_flag=True, help="Rebuild even when the tagged image exists.")
@click.argument("names", nargs=-1)
def images_build(offline: bool | None, force: bool, names: tuple[str, ...]) -> None:
    """Build the sandbox images NAMES (default: all definitions)."""
    from harness.sandbox import engine
    from harness.sandbox import images as image_defs

    try:
        client = engine.connect()
        wanted = names or tuple(image_defs.definitions())
        for name in wanted:
            definition = image_defs.ImageDefinition.named(name)
            with err.status(f"building {definition.tag}") as status:
                tag = image_defs.ensure(
                    client, definition, offline=offline, force=force, progress=status.update,
                )
            out.print(f"{name}: {tag}")
    except HarnessError as exc:
        _fail(str(exc), code=2)


# ---------------------------------------------------------------- upkeep


@main.command(epilog="Exit codes: 0 listed, 2 the engine did not answer.")
@click.option("--every-home", is_flag=True,
              help="Also sandboxes of other harness homes on this engine.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def ps(every_home: bool, as_json: bool) -> None:
    """List live sandboxes: their age, status, owner process (and whether it still runs)
    and the trace id of the episode they serve."""
    from harness.sandbox import engine
    from harness.sandbox.live import live_sandboxes

    try:
        found = live_sandboxes(engine.connect(), every_home=every_home)
    except HarnessError as exc:
        _fail(str(exc), code=2)
    if as_json:
        _print_json([sandbox.to_dict() for sandbox in found])
        return
    from rich.table import Column

    table = _table(Column("sandbox", no_wrap=True), "status", "age", "owner", "pid",
                   Column("trace", overflow="fold"))
    for sandbox in found:
        pid = "" if sandbox.pid is None else str(sandbox.pid)
        if sandbox.pid is not None and not sandbox.owner_alive:
            pid += " [red](gone: harness gc removes it)[/]"
        table.add_row(sandbox.sandbox, sandbox.status, _age(sandbox.age_seconds),
                      sandbox.owner, pid, sandbox.trace_id or "")
    out.print(table)
    if not found:
        err.print("no live sandboxes")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@main.command(epilog="Exit codes: 0 done, 2 the engine or the database server did not "
                     "answer.")
@click.option("--all", "everything", is_flag=True,
              help="Also remove what is still in use: sandboxes of harness processes still "
                   "running, and this home's database servers with their cached baselines "
                   "(the next snapshot rebuilds them).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def gc(everything: bool, as_json: bool) -> None:
    """Remove what crashed runs left: containers, volumes, workspaces, sandbox databases and
    roles, half-built baselines and scratch folders of this harness home, and pristine
    checkouts (workspace lower layers) no sandbox used for a day."""
    from harness.sandbox import engine
    from harness.sandbox.cleanup import collect_garbage

    try:
        report = collect_garbage(engine.connect(), everything=everything)
    except HarnessError as exc:
        _fail(str(exc), code=2)
    if as_json:
        _print_json(report.to_dict())
        return
    out.print(f"removed {len(report.containers)} container(s), {len(report.volumes)} "
              f"volume(s), {len(report.workspaces)} workspace(s), {len(report.databases)} "
              f"sandbox database(s), {len(report.roles)} role(s), {len(report.baselines)} "
              f"half-built baseline(s), {len(report.scratch)} scratch folder(s), "
              f"{len(report.data_images)} database data image(s), {len(report.pristine)} "
              f"pristine checkout(s), {len(report.loop_devices)} loop device(s)")


@main.command(epilog="Exit codes: 0 every check passed, 1 a check failed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the checks.")
def doctor(as_json: bool) -> None:
    """Check the engine, images and binaries; say what to do about each problem."""
    from harness.doctor import run_checks

    checks = run_checks()
    if as_json:
        _print_json([check.to_dict() for check in checks])
    else:
        table = _table("check", "", "found", "to fix")
        for check in checks:
            table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]",
                          check.detail, check.fix)
        out.print(table)
    sys.exit(0 if all(check.ok for check in checks) else 1)


@main.command(epilog="Exit codes: 0 the demo ran, 2 the engine or a fixture failed.")
def demo() -> None:
    """Run a demo episode on the bundled fixtures: guardrails, budgets, change set."""
    from harness.demo import run_demo

    try:
        run_demo(out)
    except HarnessError as exc:
        _fail(str(exc), code=2)
if __name__ == "__main__":
    main()
