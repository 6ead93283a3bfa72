"""`harness gate`: judge the commits between a base and a head by the limits that bound a
live episode, the guardrails applied to the diff, and (with a database) a rehearsal of
the PR's migrations in a sandbox."""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import harness.limits as limits
from harness.changeset import ChangeSet
from harness.config import Config
from harness.errors import HarnessError
from harness.gate.lock_safety import LockFinding, SquawkError, SquawkInput, lock_findings
from harness.gate.migrations import MigrationStatement, migration_statements
from harness.gate.report import Check, Finding, GateReport
from harness.gate.secrets import SecretsBaseline, scan_secrets
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
    """The gate could not run (a missing repository, an unknown ref, a shallow checkout
    without the merge base): exit 2, never 0."""


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
CheckResult = tuple[bool, str, list[Finding]]
_WRITTEN_SQL = frozenset({"execute", "exec_driver_sql", "executescript", "RunSQL"})


def run_gate(repo: Path, base: str, head: str, config: Config, *, database: str | None = None
             ) -> GateReport:
    """Every check of the PR `base..head` in `repo`. Raises GateError when it cannot run."""
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        raise GateError(f"{repo} is not a git repository")

    def git(*args: str) -> str:
        try:
            return run_git(repo, *args)
        except HarnessError as exc:
            raise GateError(str(exc)) from exc

    shallow = run_git(repo, "rev-parse", "--is-shallow-repository", check=False) == "true"
    resolved = {}
    for name, ref in (("base", base), ("head", head)):
        try:
            resolved[name] = run_git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except HarnessError:
            hint = f"; {_shallow_advice(base, head)}" if shallow else ""
            raise GateError(f"unknown {name} ref {ref!r} in {repo}{hint}") from None
    try:
        fork = run_git(repo, "merge-base", resolved["base"], resolved["head"])
    except HarnessError as exc:
        if shallow:
            raise GateError(f"{repo} is a shallow clone and its history does not reach the "
                            f"merge base of {base} and {head}: {_shallow_advice(base, head)}"
                            ) from None
        raise GateError(f"{base} and {head} share no history in {repo} ({exc})") from None
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
        new_files = {line.split("\t", 1)[1] for line in raw.splitlines()
                     if "\t" in line and line.split("\t", 1)[0].split()[-1] == "A"}
        migrations = sorted(path for path in added
                            if any(matches(resolve(path), g) for g in config.gate.sql_paths))

        def blobs(rev: str, paths: Sequence[str]) -> dict[str, str]:
            return _blobs(isolated, plain, rev, paths)

        def listing(folder: str) -> list[str]:
            return [p for p in plain("ls-tree", "--name-only", "-z", resolved["head"], "--",
                                     folder + "/").split("\0") if p]

        sources = blobs(resolved["head"], migrations)
        statements: dict[str, list[MigrationStatement]] = {}
        checks = [
            _timed("limits", lambda: _limits(changes, config)),
            _timed("secrets", lambda: _secrets(blobs, added, fork, resolved["head"], config)),
            _timed("destructive-sql", lambda: _sql(blobs, listing, resolved["head"], sources,
                                                   added, new_files, statements, config)),
            _timed("lock-safety", lambda: _lock_safety(sources, added, new_files, statements,
                                                       config)),
            _timed("ci-config", lambda: _ci(changes, config)),
            _timed("new-executables", lambda: _executables(raw, config)),
        ]
    if database is not None:
        checks.append(_timed("database-rehearsal",
                             lambda: _rehearse(repo, resolved["head"], database, config)))
    else:
        checks.append(Check("database-rehearsal", True, "not run: no `--db` given",
                            skipped=True))
    return GateReport(str(repo), fork, resolved["head"], changes.commit_count, len(changes.files),
                      checks)


def _shallow_advice(base: str, head: str) -> str:
    return ("fetch the history the gate needs before running it: with actions/checkout set "
            "`fetch-depth: 0`; elsewhere run `git fetch --unshallow` (or `git fetch "
            f"--deepen=200 origin`) and make sure {base} is fetched "
            f"(`git fetch origin {base.removeprefix('origin/')}`)")


def _timed(name: str, check: Callable[[], CheckResult]) -> Check:
    started = time.monotonic()
    passed, summary, findings = check()
    return Check(name, passed, summary, findings, round(time.monotonic() - started, 3))


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


def _blobs(isolated: IsolatedGit, plain: Callable[..., str], rev: str, paths: Sequence[str]
           ) -> dict[str, str]:
    """The text of `paths` at `rev`, read in one `git cat-file --batch` (binary files and
    paths missing at `rev` are left out)."""
    if not paths:
        return {}
    plain("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")  # prepares the repository
    request = "".join(f"{rev}:{path}\n" for path in paths).encode()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": "/nonexistent"}
    done = subprocess.run(["git", "--git-dir", str(isolated.git_dir), "cat-file", "--batch"],
                          input=request, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise GateError(f"git cat-file failed: {done.stderr.decode(errors='replace').strip()}")
    out, position, texts = done.stdout, 0, {}
    for path in paths:
        end = out.index(b"\n", position)
        header = out[position:end].split()
        position = end + 1
        if len(header) < 3 or header[1] != b"blob":
            continue
        size = int(header[2])
        content = out[position:position + size]
        position += size + 1
        if b"\0" not in content[:8000]:
            texts[path] = content.decode(errors="replace")
    return texts


def _limits(changes: WorkspaceChanges, config: Config) -> CheckResult:
    changeset = ChangeSet("gate", changes, None)
    violations = limits.check(changeset, config)
    findings = []
    for v in violations:
        if v.kind == limits.Limit.PROTECTED_PATHS:
            findings.append(Finding(f"protected_paths: `{v.actual}` changed, but `{v.allowed}` "
                                    f"is protected (no change allowed there)", str(v.actual),
                                    rule="protected_paths"))
        else:
            findings.append(Finding(f"{v.limit}: {v.detail} (allowed {v.allowed})",
                                    rule=v.limit))
    findings += [Finding(f"warning: effects[{b.policy}]: {b.detail}", rule=f"effects[{b.policy}]")
                 for b in limits.warnings(changeset, config)]
    summary = (f"{changes.commit_count} commit(s), {len(changes.files)} file(s), "
               f"+{changes.lines_added} -{changes.lines_removed}")
    failing = [f for f in findings if not f.message.startswith("warning:")]
    return not violations, summary if not violations else "; ".join(
        f.message for f in failing), findings


def _secrets(blobs: Callable[[str, Sequence[str]], dict[str, str]],
             added: dict[str, list[tuple[int, str]]], base: str, head: str, config: Config
             ) -> CheckResult:
    settings = config.gate
    allowed = sorted(path for path in added
                     if any(matches(resolve(path), g) for g in settings.secrets_allow_paths))
    # The baseline holds hashes of secrets under `hashed_secret`: not secrets themselves.
    paths = [path for path in added if path not in allowed and path != settings.secrets_baseline]
    baseline = SecretsBaseline()
    if settings.secrets_baseline:
        text = blobs(base, [settings.secrets_baseline]).get(settings.secrets_baseline)
        if text is not None:
            try:
                baseline = SecretsBaseline.parse(text, settings.secrets_baseline)
            except ValueError as exc:
                raise GateError(str(exc)) from exc
    found = scan_secrets(blobs(head, paths), {p: {n for n, _ in added[p]} for p in paths},
                         min_entropy=settings.secret_min_entropy, baseline=baseline)
    findings: list[Finding] = []
    by_file: dict[str, int] = {}
    for secret in found:
        by_file[secret.path] = by_file.get(secret.path, 0) + 1
        if by_file[secret.path] <= settings.secrets_max_per_file:
            findings.append(Finding(f"{secret.kind} ({secret.excerpt})", secret.path,
                                    secret.line, rule="secrets"))
    for path, count in sorted(by_file.items()):
        if count > settings.secrets_max_per_file:
            findings.append(Finding(f"{count - settings.secrets_max_per_file} more likely "
                                    f"secret(s) in this file", path, rule="secrets"))
    summary = f"{len(found)} likely secret(s) in {len(by_file)} file(s)" if found else \
        "none found"
    if allowed:
        summary += f" ({len(allowed)} file(s) allowed by `gate.secrets_allow_paths`)"
    return not found, summary, findings


def _sql(blobs: Callable[[str, Sequence[str]], dict[str, str]],
         listing: Callable[[str], list[str]], head: str,
         sources: dict[str, str], added: dict[str, list[tuple[int, str]]], new_files: set[str],
         statements: dict[str, list[MigrationStatement]], config: Config) -> CheckResult:
    policy = Policy(config.guardrails)
    findings: list[Finding] = []
    for path, text in sorted(sources.items()):
        lines = None if path in new_files else {n for n, _ in added[path]}
        if path.endswith(".sql"):
            for rule, reason, line in _destructive(policy, text):
                if lines is None or line is None or line in lines:
                    findings.append(Finding(f"{rule}: {reason}", path, line, rule))
        elif path.endswith(".py"):
            findings += _python_migration(blobs, listing, head, policy, path, text, lines,
                                          statements)
    return not findings, f"{len(findings)} destructive statement(s)" if findings else \
        "no destructive SQL added", findings


def _destructive(policy: Policy, sql: str) -> list[tuple[str, str, int | None]]:
    """The guardrail findings that block or need approval: rule, reason, line in `sql`."""
    decision = policy.evaluate(ToolAction("db_mutate", {"sql": sql}))
    encoded = sql.encode()
    return [(finding.rule_id, finding.reason,
             encoded[:finding.span.start].count(b"\n") + 1 if finding.span else None)
            for finding in decision.findings if finding.verdict > 1]  # block, approval


def _python_migration(blobs: Callable[[str, Sequence[str]], dict[str, str]],
                      listing: Callable[[str], list[str]], head: str, policy: Policy,
                      path: str, source: str, added_lines: set[int] | None,
                      statements: dict[str, list[MigrationStatement]]) -> list[Finding]:
    """Findings for the SQL-running operations of a Python migration that the PR adds or
    changes (`added_lines` None: the whole file is new)."""
    history: list[str] = []
    if "migrations.Migration" in source or "Migration(" in source:
        folder = posixpath.dirname(path)
        earlier = sorted(p for p in listing(folder)
                         if p.endswith(".py") and posixpath.basename(p) < posixpath.basename(path)
                         and posixpath.basename(p)[:1].isdigit())
        texts = blobs(head, earlier)
        history = [texts[p] for p in earlier if p in texts]
    try:
        found = migration_statements(source, path, history)
    except SyntaxError as exc:
        return [Finding(f"not valid Python ({exc.msg}), so the SQL it runs cannot be read",
                        path, exc.lineno or 0, "python-syntax")]
    found = [s for s in found if added_lines is None or any(
        s.first_line <= n <= s.last_line for n in added_lines)]
    statements[path] = found
    findings = []
    for statement in found:
        if statement.sql is None:
            findings.append(Finding(f"{statement.call}(...) runs SQL known only at run time; "
                                    f"rehearse the migration with `--db`", path,
                                    statement.first_line, "sql.unknown"))
            continue
        # An operation (not SQL of the author's) shows the SQL it stands for: the real
        # table and column (`customer` -> `customer_id`).
        shown = "" if statement.call in _WRITTEN_SQL else f" (runs `{statement.sql}`)"
        findings += [Finding(f"{rule}: {reason}{shown}", path, statement.first_line, rule)
                     for rule, reason, _ in _destructive(policy, statement.sql)]
    return findings


def _lock_safety(sources: dict[str, str], added: dict[str, list[tuple[int, str]]],
                 new_files: set[str], statements: dict[str, list[MigrationStatement]],
                 config: Config) -> CheckResult:
    mode = config.gate.lock_safety
    if mode == "off":
        return True, "not judged (`gate.lock_safety: off`)", []
    inputs = []
    for path, text in sorted(sources.items()):
        lines = None if path in new_files else frozenset(n for n, _ in added[path])
        if path.endswith(".sql"):
            inputs.append(SquawkInput(path, text, None, lines))
        elif statements.get(path):
            known = [s for s in statements[path] if s.sql is not None]
            if known:
                inputs.append(SquawkInput(
                    path, "\n".join(" ".join(str(s.sql).split()).rstrip(";") + ";"
                                    for s in known),
                    [s.first_line for s in known]))
    try:
        found = lock_findings(inputs, config.gate.squawk_rules, config.gate.postgres_version)
    except SquawkError as exc:
        raise GateError(str(exc)) from exc
    findings = [_lock_finding(f, mode) for f in found]
    summary = (f"{len(found)} statement(s) that lock or rewrite a live table"
               if found else "no locking or rewriting migration SQL added")
    return mode == "warn" or not found, summary, findings


def _lock_finding(found: LockFinding, mode: str) -> Finding:
    verdict = "require_approval" if mode == "require_approval" else "warning"
    return Finding(f"{verdict}: squawk.{found.rule}: {found.message}", found.path, found.line,
                   f"squawk.{found.rule}")


def _ci(changes: WorkspaceChanges, config: Config) -> CheckResult:
    touched = [f.path for f in changes.files
               if any(matches(resolve(f.path), g) for g in config.gate.ci_paths)]
    return not touched, f"{len(touched)} CI configuration file(s) changed" if touched else \
        "no CI configuration changed", [Finding("is CI configuration", p, rule="ci-config")
                                        for p in touched]


def _executables(raw: str, config: Config) -> CheckResult:
    found = []
    for line in raw.splitlines():
        meta, _, path = line.partition("\t")
        fields = meta.split()
        if len(fields) >= 5 and fields[1] == "100755" and fields[0] != ":100755":
            found.append(Finding("is a new executable file", path, rule="new-executables"))
    passed = not found or not config.gate.fail_on_new_executables
    return passed, f"{len(found)} new executable(s)" if found else "none", found


def _rehearse(repo: Path, head: str, database: str, config: Config) -> CheckResult:
    from harness.sandbox import Sandbox

    command = config.gate.migrate
    if not command:
        return False, "`--db` given but `gate.migrate` names no migration command", []
    with contextlib.closing(Sandbox(repo, ref=head, settings=config.sandbox,
                                    database=database)) as sandbox:
        result = sandbox.run(command, timeout=config.sandbox.exec_timeout_s)
        delta = sandbox.row_delta()
        changes = sandbox.changes()
    if not result.ok:
        return False, f"the migration command failed (exit {result.exit_code})", [
            Finding((result.stderr or result.stdout).strip()[-2000:])]
    assert delta is not None
    rehearsed = ChangeSet("gate", changes, delta)
    violations = [v for v in limits.check(rehearsed, config)
                  if v.limit not in ("max_commits", "max_files_changed", "max_lines_changed",
                                     "protected_paths")]
    summary = delta.summary()
    findings = [Finding(f"{v.limit}: {v.detail} (allowed {v.allowed})", rule=v.limit)
                for v in violations]
    findings += [Finding(f"warning: effects[{b.policy}]: {b.detail}")
                 for b in limits.warnings(rehearsed, config)]
    findings += [Finding(f"{name}: +{c['inserted']} ~{c['updated']} -{c['deleted']}")
                 for name, c in summary["tables"].items()]
    findings += [Finding(f"DDL: {statement}") for statement in summary["ddl"]]
    locks: list[Finding] = []
    if summary["ddl"] and config.gate.lock_safety != "off":
        try:
            found = lock_findings([SquawkInput("rehearsal DDL", "\n".join(
                " ".join(s.split()).rstrip(";") + ";" for s in summary["ddl"]))],
                config.gate.squawk_rules, config.gate.postgres_version)
        except SquawkError as exc:
            raise GateError(str(exc)) from exc
        locks = [replace(_lock_finding(f, config.gate.lock_safety), path=None, line=None)
                 for f in found]
    findings += locks
    total = summary["total"]
    text = (f"rows +{total['inserted']} ~{total['updated']} -{total['deleted']}, "
            f"{len(summary['ddl'])} DDL statement(s)")
    failed = bool(violations) or (bool(locks) and config.gate.lock_safety == "require_approval")
    return not failed, text, findings
