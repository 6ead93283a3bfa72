"""`harness gate`: judge the commits between a base and a head by the limits that bound a
live episode, the guardrails applied to the diff, and (with a database) a rehearsal of
the PR's migrations in a sandbox."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import harness.limits as limits
from harness.changeset import ChangeSet
from harness.config import Config
from harness.errors import HarnessError
from harness.gate.migrations import migration_statements
from harness.gate.report import Check, GateReport
from harness.gate.secrets import scan_line
from harness.guardrails import Policy
from harness.sandbox.paths import matches, resolve
from harness.sandbox.workspace import (
    COMMIT_FORMAT,
    PLAIN_DIFF,
    IsolatedGit,
    WorkspaceChanges,
    borrowed_stores,
    files_between,
    parse_commits,
    run_git,
)
from harness.tools import ToolAction


class GateError(HarnessError):
    """The gate could not run (a missing repository, an unknown ref): exit 2, never 0."""


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


def run_gate(repo: Path, base: str, head: str, config: Config, *, database: str | None = None
             ) -> GateReport:
    """Every check of the PR `base..head` in `repo`."""
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        raise GateError(f"{repo} is not a git repository")

    def git(*args: str) -> str:
        try:
            return run_git(repo, *args)
        except HarnessError as exc:
            raise GateError(str(exc)) from exc

    resolved = {}
    for name, ref in (("base", base), ("head", head)):
        try:
            resolved[name] = run_git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except HarnessError:
            raise GateError(f"unknown {name} ref {ref!r} in {repo}") from None
    fork = git("merge-base", resolved["base"], resolved["head"])
    with tempfile.TemporaryDirectory(prefix="harness-gate-") as scratch:
        # The PR's own .gitattributes (`* -diff`, a textconv) must not hide its lines from
        # the checks: diffs are read through a git that applies none of them.
        objects = repo / ".git" / "objects" if (repo / ".git").exists() else repo / "objects"
        isolated = IsolatedGit(Path(scratch) / "git", [objects, *borrowed_stores(objects)])

        def plain(*args: str) -> str:
            try:
                return isolated(*args)
            except HarnessError as exc:
                raise GateError(str(exc)) from exc

        changes = _changes(git, plain, fork, resolved["head"], head)
        added = _added_lines(plain("diff", *PLAIN_DIFF, "-U0", fork, resolved["head"]))
        raw = plain("diff", "--raw", "--no-renames", fork, resolved["head"])
        checks = [
            _timed("limits", lambda: _limits(changes, config)),
            _timed("secrets", lambda: _secrets(added, config)),
            _timed("destructive-sql", lambda: _sql(plain, added, resolved["head"], raw,
                                                   config)),
            _timed("ci-config", lambda: _ci(changes, config)),
            _timed("new-executables", lambda: _executables(raw, config)),
        ]
    if database is not None:
        checks.append(_timed("database-rehearsal",
                             lambda: _rehearse(repo, resolved["head"], database, config)))
    return GateReport(str(repo), fork, resolved["head"], changes.commit_count, len(changes.files),
                      checks)


def _timed(name: str, check: Callable[[], tuple[bool, str, list[str]]]) -> Check:
    started = time.monotonic()
    passed, summary, details = check()
    return Check(name, passed, summary, details, round(time.monotonic() - started, 3))


def _changes(git: Callable[..., str], plain: Callable[..., str], base: str, head: str,
             branch: str) -> WorkspaceChanges:
    commits = [replace(commit, ref=branch) for commit in
               parse_commits(git("log", COMMIT_FORMAT, f"{base}..{head}", "--"))]
    files = files_between(plain, base, head)
    return WorkspaceChanges(base, head, commits, files, "")


def _added_lines(diff: str) -> dict[str, list[tuple[int, str]]]:
    """Added lines by file, with their line numbers at the head."""
    added: dict[str, list[tuple[int, str]]] = {}
    path = None
    number = 0
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else None
            continue
        hunk = _HUNK.match(line)
        if hunk:
            number = int(hunk.group(1))
            continue
        if path and line.startswith("+"):
            added.setdefault(path, []).append((number, line[1:]))
            number += 1
    return added


def _limits(changes: WorkspaceChanges, config: Config) -> tuple[bool, str, list[str]]:
    changeset = ChangeSet("gate", changes, None)
    violations = limits.check(changeset, config)
    details = [f"{v.limit}: {v.detail} (allowed {v.allowed})" for v in violations]
    details += [f"warning: effects[{b.policy}]: {b.detail}"
                for b in limits.warnings(changeset, config)]
    summary = (f"{changes.commit_count} commit(s), {len(changes.files)} file(s), "
               f"+{changes.lines_added} -{changes.lines_removed}")
    return not violations, summary if not violations else "; ".join(details), details


def _secrets(added: dict[str, list[tuple[int, str]]], config: Config
             ) -> tuple[bool, str, list[str]]:
    findings = [finding for path, lines in added.items() for number, text in lines
                for finding in scan_line(path, number, text,
                                         min_entropy=config.gate.secret_min_entropy)]
    details = [f"{f.path}:{f.line}: {f.kind} ({f.excerpt})" for f in findings]
    return not findings, f"{len(findings)} likely secret(s)" if findings else "none found", \
        details


def _sql(git: Callable[..., str], added: dict[str, list[tuple[int, str]]], head: str, raw: str,
         config: Config) -> tuple[bool, str, list[str]]:
    policy = Policy(config.guardrails)
    new_files = {line.split("\t", 1)[1] for line in raw.splitlines()
                 if "\t" in line and line.split("\t", 1)[0].split()[-1] == "A"}
    details = []
    for path, lines in sorted(added.items()):
        if not any(matches(resolve(path), g) for g in config.gate.sql_paths):
            continue
        if path.endswith(".sql"):
            text = git("show", f"{head}:{path}") if path in new_files else \
                "\n".join(text for _, text in lines)
            details += [f"{path}: {problem}" for problem in _destructive(policy, text)]
        elif path.endswith(".py"):
            details += _python_migration(policy, path, git("show", f"{head}:{path}"),
                                         None if path in new_files else {n for n, _ in lines})
    return not details, f"{len(details)} destructive statement(s)" if details else \
        "no destructive SQL added", details


def _destructive(policy: Policy, sql: str) -> list[str]:
    decision = policy.evaluate(ToolAction("db_mutate", {"sql": sql}))
    return [f"{finding.rule_id}: {finding.reason}" for finding in decision.findings
            if finding.verdict > 1]  # block or require_approval


def _python_migration(policy: Policy, path: str, source: str, added_lines: set[int] | None
                      ) -> list[str]:
    """Findings for the SQL-running calls of a Python migration that the PR adds or
    changes (`added_lines` None: the whole file is new)."""
    try:
        statements = migration_statements(source)
    except SyntaxError as exc:
        return [f"{path}:{exc.lineno or 0}: not valid Python ({exc.msg}), so the SQL it runs "
                f"cannot be read"]
    details = []
    for statement in statements:
        if added_lines is not None and not any(
                statement.first_line <= n <= statement.last_line for n in added_lines):
            continue
        where = f"{path}:{statement.first_line}"
        if statement.sql is None:
            details.append(f"{where}: {statement.call}(...) runs SQL known only at run time; "
                           f"rehearse the migration with --db")
            continue
        details += [f"{where}: {problem}" for problem in _destructive(policy, statement.sql)]
    return details


def _ci(changes: WorkspaceChanges, config: Config) -> tuple[bool, str, list[str]]:
    touched = [f.path for f in changes.files
               if any(matches(resolve(f.path), g) for g in config.gate.ci_paths)]
    return not touched, f"{len(touched)} CI configuration file(s) changed" if touched else \
        "no CI configuration changed", [f"{p} is CI configuration" for p in touched]


def _executables(raw: str, config: Config) -> tuple[bool, str, list[str]]:
    found = []
    for line in raw.splitlines():
        meta, _, path = line.partition("\t")
        fields = meta.split()
        if len(fields) >= 5 and fields[1] == "100755" and fields[0] != ":100755":
            found.append(f"{path} is a new executable file")
    passed = not found or not config.gate.fail_on_new_executables
    return passed, f"{len(found)} new executable(s)" if found else "none", found


def _rehearse(repo: Path, head: str, database: str, config: Config
              ) -> tuple[bool, str, list[str]]:
    from harness.sandbox import Sandbox

    command = config.gate.migrate
    if not command:
        return False, "--db given but gate.migrate names no migration command", []
    with Sandbox(repo, ref=head, settings=config.sandbox, database=database) as sandbox:
        result = sandbox.exec(command, timeout=config.sandbox.exec_timeout_s)
        delta = sandbox.row_delta()
        changes = sandbox.changes()
    if not result.ok:
        return False, f"the migration command failed (exit {result.exit_code})", [
            (result.stderr or result.stdout).strip()[-2000:]]
    assert delta is not None
    rehearsed = ChangeSet("gate", changes, delta)
    violations = [v for v in limits.check(rehearsed, config)
                  if v.limit not in ("max_commits", "max_files_changed", "max_lines_changed",
                                     "protected_paths")]
    summary = delta.summary()
    details = [f"{v.limit}: {v.detail} (allowed {v.allowed})" for v in violations]
    details += [f"warning: effects[{b.policy}]: {b.detail}"
                for b in limits.warnings(rehearsed, config)]
    details += [f"{name}: +{c['inserted']} ~{c['updated']} -{c['deleted']}"
                for name, c in summary["tables"].items()]
    details += [f"DDL: {statement}" for statement in summary["ddl"]]
    total = summary["total"]
    text = (f"rows +{total['inserted']} ~{total['updated']} -{total['deleted']}, "
            f"{len(summary['ddl'])} DDL statement(s)")
    return not violations, text, details
