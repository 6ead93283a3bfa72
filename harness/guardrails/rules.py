"""The built-in rules: what is dangerous in shell commands, SQL statements and paths.

Each rule has an id (in every decision it makes) and a default verdict; a config can
switch a rule off or change its verdict under `guardrails.builtin`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from harness.guardrails.decision import Verdict
from harness.guardrails.paths import HOME, WORKSPACE, affects, inside, matches, resolve
from harness.guardrails.shell import DYNAMIC, Command, ShellAnalysis
from harness.guardrails.sql import DANGEROUS_FUNCTIONS, TRIGGER_SILENCING, Statement

CATALOGUE: dict[str, tuple[Verdict, str]] = {
    "shell.recursive-delete": (Verdict.BLOCK, "recursive or forced delete of /, a system folder, "
                               "home or the workspace root"),
    "shell.disk-wipe": (Verdict.BLOCK, "dd/mkfs/shred/wipefs on a device, or writes to a disk"),
    "shell.fork-bomb": (Verdict.BLOCK, "a function or program that forks itself without end"),
    "shell.recursive-chmod-root": (Verdict.BLOCK, "chmod/chown/chgrp -R on / or a system folder"),
    "shell.decode-exec": (Verdict.BLOCK, "decoded or downloaded bytes run by a shell"),
    "shell.dynamic-command": (Verdict.BLOCK, "a program name only known at run time"),
    "shell.hidden-characters": (Verdict.BLOCK, "invisible characters in a command"),
    "shell.unparseable": (Verdict.BLOCK, "a command line that cannot be parsed"),
    "shell.unverifiable-sql": (Verdict.WARN, "psql reading SQL produced at run time"),
    "input.too-large": (Verdict.BLOCK, "input too large to analyse"),
    "git.force-push": (Verdict.BLOCK, "force push to a protected branch"),
    "git.delete-protected-branch": (Verdict.BLOCK, "deleting a protected branch"),
    "git.rewrite-history": (Verdict.BLOCK, "rewriting the history of a protected branch"),
    "sql.drop-database": (Verdict.BLOCK, "DROP DATABASE"),
    "sql.drop-schema": (Verdict.BLOCK, "DROP SCHEMA"),
    "sql.drop-table": (Verdict.BLOCK, "DROP TABLE"),
    "sql.drop-owned": (Verdict.BLOCK, "DROP OWNED: every object a role owns"),
    "sql.truncate": (Verdict.BLOCK, "TRUNCATE"),
    "sql.drop-column": (Verdict.REQUIRE_APPROVAL, "ALTER TABLE ... DROP COLUMN: the column's "
                        "data is gone"),
    "sql.delete-without-where": (Verdict.BLOCK, "DELETE without a WHERE clause (or a constant-"
                                 "true one)"),
    "sql.update-without-where": (Verdict.BLOCK, "UPDATE without a WHERE clause (or a constant-"
                                 "true one)"),
    "sql.copy-program": (Verdict.BLOCK, "COPY ... PROGRAM runs a server-side command"),
    "sql.copy-file": (Verdict.BLOCK, "COPY to or from a file on the database server"),
    "sql.procedural-code": (Verdict.REQUIRE_APPROVAL, "a function or rule whose body would do "
                            "what another rule stops, when it is called"),
    "sql.unknown-effect": (Verdict.REQUIRE_APPROVAL, "a statement whose effect cannot be seen "
                           "here: a procedure, a trigger, SQL built at run time, code in "
                           "another language, a statement prepared elsewhere"),
    "sql.replication-role": (Verdict.REQUIRE_APPROVAL, "session_replication_role silences "
                             "triggers and foreign keys"),
    "sql.dangerous-function": (Verdict.BLOCK, "server administration or file-access functions"),
    "sql.alter-system": (Verdict.BLOCK, "ALTER SYSTEM changes the server's configuration"),
    "sql.privileges": (Verdict.REQUIRE_APPROVAL, "GRANT, REVOKE and role changes"),
    "sql.protected-table": (Verdict.BLOCK, "a write to a protected table"),
    "sql.unparseable": (Verdict.BLOCK, "SQL that cannot be split or classified"),
    "tool.read-only": (Verdict.BLOCK, "a write through a read-only tool (db_query)"),
    "tool.unknown": (Verdict.BLOCK, "a tool the harness does not know"),
    "tool.bad-parameters": (Verdict.BLOCK, "a required parameter missing or of the wrong type"),
    "path.protected": (Verdict.BLOCK, "a write to a protected path"),
    "path.outside-workspace": (Verdict.BLOCK, "a file write outside the workspace and /tmp"),
}

SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/opt", "/proc",
                  "/root", "/sbin", "/srv", "/sys", "/usr", "/var", "/home", HOME)
_DEVICE = re.compile(r"^/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk|md|dm-|loop|sr|mapper/|root)")
_WRITERS = {"tee": 0, "touch": 0, "truncate": 0, "rm": 0, "rmdir": 0, "unlink": 0,
            "mkdir": 0, "ln": -1, "cp": -1, "mv": 0, "install": -1, "chmod": 1, "chown": 1,
            "chgrp": 1, "shred": 0, "patch": 0, "sed": 0}


@dataclass(frozen=True)
class Hit:
    """A built-in rule matched: which, why, and where (a span in the action's input)."""

    rule_id: str
    reason: str
    span: tuple[int, int] | None


# ------------------------------------------------------------------ shell


def shell_hits(analysis: ShellAnalysis, *, cwd: str, protected_paths: list[str],
               protected_branches: list[str], branch: str | None) -> Iterator[Hit]:
    """Every built-in shell and git rule the analysed command line breaks."""
    for problem in analysis.problems:
        yield Hit(problem.rule_id, problem.reason, problem.span)
    for name, body in analysis.functions.items():
        if sum(1 for command in body if command.argv and command.argv[0] == name) >= 2:
            span = body[0].span if body else None
            yield Hit("shell.fork-bomb", f"function {name!r} starts copies of itself", span)
    for command in analysis.commands:
        yield from _command_hits(command, cwd, protected_paths, protected_branches, branch)


def _command_hits(command: Command, cwd: str, protected_paths: list[str],
                  protected_branches: list[str], branch: str | None) -> Iterator[Hit]:
    program, args = command.program, command.args
    via = f" (through {' -> '.join(command.via)})" if command.via else ""
    if program == "rm":
        yield from _rm(command, cwd, via)
    elif program == "find":
        yield from _find_delete(command, cwd, via)
    elif program in ("chmod", "chown", "chgrp") and _has_flag(args, "R", "--recursive"):
        for target in _operands(args)[1:]:
            path = resolve(target, cwd)
            if _is_system(path) or path == "/":
                yield Hit("shell.recursive-chmod-root",
                          f"{program} -R on {path}{via}", command.span)
    elif program == "dd":
        for arg in args:
            if arg.startswith("of=") and _DEVICE.match(arg[3:]):
                yield Hit("shell.disk-wipe", f"dd writes to the device {arg[3:]}{via}",
                          command.span)
    elif program.startswith("mkfs") or program in ("mke2fs", "mkswap", "wipefs", "blkdiscard",
                                                    "sgdisk", "sfdisk", "fdisk", "parted"):
        if program.startswith("mk") or program in ("wipefs", "blkdiscard") or any(
                _DEVICE.match(a) for a in args):
            yield Hit("shell.disk-wipe", f"{program} formats or wipes a disk{via}", command.span)
    elif program == "shred" and any(a.startswith("/dev/") for a in args):
        yield Hit("shell.disk-wipe", f"shred on a device{via}", command.span)
    elif program == "git":
        yield from _git(command, protected_branches, branch, via)
    for redirect in command.redirects:
        if redirect.op.startswith(">") or redirect.op in ("&>", "&>>", ">|"):
            target = resolve(redirect.target, cwd)
            if _DEVICE.match(target):
                yield Hit("shell.disk-wipe", f"output redirected onto the device {target}{via}",
                          command.span)
            yield from _protected_write(target, protected_paths, command, f"redirect{via}")
    if program in _WRITERS and protected_paths:
        yield from _writer_hits(command, cwd, protected_paths, via)


def _writer_hits(command: Command, cwd: str, protected: list[str], via: str) -> Iterator[Hit]:
    """A command that writes its operands (rm, mv, cp's destination, sed -i ...) on a
    protected path; a recursive one also on a folder holding one."""
    program, args = command.program, command.args
    operands = _operands(args)
    which = _WRITERS[program]
    if program == "sed":
        in_place = any(a.startswith("-i") or a == "--in-place" for a in args)
        operands = operands[1:] if in_place else []
    elif which == -1:
        operands = operands[-1:]
    elif which == 1:
        operands = operands[1:]
    recursive = program == "mv" or (program in ("rm", "cp", "chmod", "chown", "chgrp")
                                    and _has_flag(args, "r", "R", "--recursive"))
    for operand in operands:
        target = resolve(operand, cwd)
        for pattern in protected:
            if affects(target, pattern) if recursive else matches(target, pattern):
                yield Hit("path.protected",
                          f"{program} changes {target}, protected by {pattern!r}{via}",
                          command.span)
                return


def _protected_write(target: str, protected: list[str], command: Command, how: str
                     ) -> Iterator[Hit]:
    for pattern in protected:
        if matches(target, pattern):
            yield Hit("path.protected", f"{how} writes {target}, protected by {pattern!r}",
                      command.span)
            return


def _rm(command: Command, cwd: str, via: str) -> Iterator[Hit]:
    args = command.args
    if "--no-preserve-root" in args:
        yield Hit("shell.recursive-delete", f"rm --no-preserve-root{via}", command.span)
        return
    if not _has_flag(args, "r", "R", "--recursive", "f", "--force"):
        return
    targets = _operands(args)
    if command.find_roots and "{}" in targets:
        return  # judged as the find command
    for target in targets:
        danger = _dangerous_target(target, cwd)
        if danger:
            yield Hit("shell.recursive-delete", f"rm {' '.join(_flags(args))} {danger}{via}",
                      command.span)
            return


def _find_delete(command: Command, cwd: str, via: str) -> Iterator[Hit]:
    args = command.args
    deletes = "-delete" in args or any(
        args[i] in ("-exec", "-execdir", "-ok") and i + 1 < len(args)
        and posixpath.basename(args[i + 1]) in ("rm", "shred", "unlink") for i in range(len(args)))
    if not deletes:
        return
    roots = []
    for arg in args:
        if arg.startswith("-") or arg in ("(", "!"):
            break
        roots.append(arg)
    filtered = any(a in ("-name", "-iname", "-path", "-ipath", "-regex", "-iregex", "-type",
                         "-newer", "-mtime", "-mmin", "-size", "-empty", "-user", "-perm")
                   for a in args)
    for root in roots or ["."]:
        path = resolve(root, cwd) if DYNAMIC not in root else None
        if path is None:
            yield Hit("shell.recursive-delete", f"find deletes under a root only known at run "
                      f"time{via}", command.span)
        elif path == "/" or _is_system(path) or (path == WORKSPACE and not filtered):
            yield Hit("shell.recursive-delete", f"find deletes under {path}{via}", command.span)


def _dangerous_target(target: str, cwd: str) -> str | None:
    if target.startswith(DYNAMIC):
        return "a path only known at run time (it could be /)"
    path = resolve(target.replace(DYNAMIC, "x"), cwd)
    bare = path[:-2] if path.endswith("/*") else path
    if bare in ("", "/"):
        return path
    if bare == "/*" or bare in SYSTEM_FOLDERS:
        return path
    if bare == WORKSPACE or bare == WORKSPACE + "/.git":
        return f"{path} (the workspace)"
    if not inside(path, WORKSPACE) and not inside(path, "/tmp") and bare.count("/") == 1:
        return path
    return None


def _is_system(path: str) -> bool:
    bare = path[:-2] if path.endswith("/*") else path
    return bare == "/" or bare == "/*" or bare in SYSTEM_FOLDERS


def _flags(args: tuple[str, ...]) -> list[str]:
    return [a for a in args if a.startswith("-") and a != "-"]


def _operands(args: tuple[str, ...]) -> list[str]:
    operands = []
    ended = False
    for arg in args:
        if not ended and arg == "--":
            ended = True
            continue
        if not ended and arg.startswith("-") and arg != "-":
            continue
        operands.append(arg)
    return operands


def _has_flag(args: tuple[str, ...], *flags: str) -> bool:
    short = {f for f in flags if len(f) == 1}
    long = {f for f in flags if f.startswith("--")}
    for arg in args:
        if arg == "--":
            break
        if arg in long:
            return True
        if arg.startswith("-") and not arg.startswith("--") and short & set(arg[1:]):
            return True
    return False


# -------------------------------------------------------------------- git

_GIT_VALUE_OPTS = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace"})


def _git(command: Command, protected: list[str], branch: str | None, via: str
         ) -> Iterator[Hit]:
    args = list(command.args)
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] in _GIT_VALUE_OPTS else args[1:]
    if not args:
        return
    sub, rest = args[0], args[1:]
    guarded = set(protected)
    if sub == "push":
        yield from _push(rest, guarded, branch, command, via)
    elif sub in ("filter-branch", "filter-repo"):
        yield Hit("git.rewrite-history", f"git {sub} rewrites every branch{via}", command.span)
    elif sub == "branch":
        names = [a for a in rest if not a.startswith("-")]
        if _has_flag(tuple(rest), "D", "d", "--delete") and guarded & set(names):
            yield Hit("git.delete-protected-branch",
                      f"git branch deletes {sorted(guarded & set(names))}{via}", command.span)
        elif _has_flag(tuple(rest), "f", "--force", "M", "C") and names and names[0] in guarded:
            yield Hit("git.rewrite-history", f"git branch -f moves {names[0]}{via}", command.span)
    elif sub == "update-ref":
        refs = [a for a in rest if not a.startswith("-")]
        if refs and refs[0].removeprefix("refs/heads/") in guarded:
            yield Hit("git.rewrite-history", f"git update-ref moves {refs[0]}{via}", command.span)
    elif branch in guarded:
        rewriting = (sub == "rebase" or (sub == "commit" and "--amend" in rest) or (
            sub == "reset" and any(not a.startswith("-") and a not in ("HEAD", "--")
                                   for a in rest)))
        if rewriting:
            yield Hit("git.rewrite-history",
                      f"git {sub} rewrites the protected branch {branch}{via}", command.span)


def _push(rest: list[str], guarded: set[str], branch: str | None, command: Command,
          via: str) -> Iterator[Hit]:
    forced = _has_flag(tuple(rest), "f", "--force", "--force-with-lease", "--force-if-includes",
                       "--mirror") or any(a.startswith("--force-with-lease=") for a in rest)
    deleting = _has_flag(tuple(rest), "d", "--delete")
    positional = [a for a in rest if not a.startswith("-")]
    refspecs = positional[1:]
    destinations = []
    for spec in refspecs:
        if spec.startswith("+"):
            forced_spec = True
            spec = spec[1:]
        else:
            forced_spec = False
        source, _, destination = spec.partition(":")
        target = (destination or source).removeprefix("refs/heads/")
        if ":" in spec and not source:
            yield from _deleted(target, guarded, command, via)
            continue
        destinations.append((target, forced_spec))
    if deleting:
        for target, _ in destinations:
            yield from _deleted(target, guarded, command, via)
        return
    if not destinations:
        # No refspec: pushes the current (or every matching) branch.
        if forced and (branch is None or branch in guarded or "--all" in rest):
            yield Hit("git.force-push", "force push without a refspec may overwrite a protected "
                      f"branch{via}", command.span)
        return
    for target, forced_spec in destinations:
        if (forced or forced_spec) and (target in guarded or (target == "HEAD"
                                        and (branch is None or branch in guarded))):
            yield Hit("git.force-push", f"force push to the protected branch {target}{via}",
                      command.span)


def _deleted(target: str, guarded: set[str], command: Command, via: str) -> Iterator[Hit]:
    if target in guarded:
        yield Hit("git.delete-protected-branch",
                  f"git push deletes the protected branch {target}{via}", command.span)


# -------------------------------------------------------------------- SQL


def sql_hits(statement: Statement, *, protected_tables: list[str], span: tuple[int, int] | None
             ) -> Iterator[Hit]:
    """Every built-in SQL rule a statement (or what it runs) breaks. A statement of a
    function or rule body runs only when that code is called: what it would break asks
    for approval (sql.procedural-code) instead."""
    for inner in statement.walk():
        where = span or inner.span
        for hit in _statement_hits(inner, protected_tables, where):
            if inner.deferred:
                yield Hit("sql.procedural-code", f"code defined here would, once called: "
                          f"{hit.reason}", hit.span)
            else:
                yield hit


_PROTECTABLE = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY",
                          "ALTER", "DROP", "CREATE", "SELECT INTO"})


def _statement_hits(statement: Statement, protected: list[str], span: tuple[int, int]
                    ) -> Iterator[Hit]:
    kind, object_kind = statement.kind, statement.object_kind
    targets = ", ".join(statement.targets) or "?"
    if kind == "UNKNOWN":
        yield Hit("sql.unparseable", statement.uncertain or "a statement that cannot be read",
                  span)
    elif statement.uncertain:
        yield Hit("sql.unknown-effect", statement.uncertain, span)
    if kind == "DROP" and object_kind in ("DATABASE", "SCHEMA", "TABLE"):
        rule = {"DATABASE": "sql.drop-database", "SCHEMA": "sql.drop-schema",
                "TABLE": "sql.drop-table"}[object_kind]
        yield Hit(rule, f"DROP {object_kind} {targets}", span)
    if kind == "DROP" and object_kind == "OWNED":
        yield Hit("sql.drop-owned", "DROP OWNED drops every object the role owns", span)
    if kind == "TRUNCATE":
        yield Hit("sql.truncate", f"TRUNCATE {targets}", span)
    if statement.rewrites_column:
        yield Hit("sql.update-without-where", f"ALTER TABLE {targets} rewrites every value of "
                  f"{statement.rewrites_column} with a constant", span)
    if statement.drops_column:
        yield Hit("sql.drop-column", f"ALTER TABLE {targets} drops a column and its data", span)
    if kind in ("DELETE", "UPDATE") and (not statement.has_where or statement.where_constant_true):
        how = "has no WHERE clause" if not statement.has_where else \
            "has a WHERE clause that is true for every row"
        rule = "sql.delete-without-where" if kind == "DELETE" else "sql.update-without-where"
        yield Hit(rule, f"{kind} on {targets} {how}", span)
    if statement.copy_program:
        yield Hit("sql.copy-program", "COPY ... PROGRAM runs a command on the database server",
                  span)
    if statement.copy_file:
        yield Hit("sql.copy-file", f"COPY {'from' if statement.copy_from else 'to'} the server "
                  f"file {statement.copy_file}", span)
    dangerous = sorted(set(statement.functions) & DANGEROUS_FUNCTIONS)
    if dangerous:
        yield Hit("sql.dangerous-function", f"calls {', '.join(dangerous)}", span)
    silencing = [name for name, _ in statement.settings
                 if name.lower() in TRIGGER_SILENCING or name == "?"]
    if silencing:
        yield Hit("sql.replication-role", f"sets {silencing[0]}: triggers and foreign keys "
                  "stop firing", span)
    if kind == "ALTER" and object_kind == "SYSTEM":
        yield Hit("sql.alter-system", "ALTER SYSTEM changes the server's configuration", span)
    if kind in ("GRANT", "REVOKE") or (kind in ("CREATE", "ALTER", "DROP") and object_kind in (
            "ROLE", "USER", "GROUP")):
        yield Hit("sql.privileges", f"{kind} changes privileges or roles", span)
    if kind in _PROTECTABLE and not (kind == "CREATE" and object_kind not in (
            "TABLE", "INDEX", "RULE", "TRIGGER")):
        for target in statement.targets:
            match = protected_match(target, protected)
            if match:
                yield Hit("sql.protected-table",
                          f"{kind} writes {target}, a protected table ({match})", span)


def protected_match(target: str, protected: list[str]) -> str | None:
    """The protected-table entry that `target` falls under, if any. A bare entry matches
    the table in any schema; a qualified one matches it qualified, or bare in `public`."""
    schema, _, table = target.rpartition(".")
    for entry in protected:
        entry_schema, _, entry_table = entry.lower().rpartition(".")
        if entry_table != table.lower() and entry_table != table:
            continue
        if not entry_schema or entry_schema == (schema.lower() or "public"):
            return entry
    return None
