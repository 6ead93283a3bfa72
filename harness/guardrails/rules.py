"""The built-in rules: what is dangerous in shell commands, SQL statements and paths.

Each rule has an id (in every decision it makes) and a default verdict; a config can
switch a rule off or change its verdict under `guardrails.builtin`.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from harness.guardrails import effects, programs
from harness.guardrails.decision import Verdict
from harness.guardrails.shell import DYNAMIC, NARROWED, Command, ShellAnalysis
from harness.guardrails.sql import (
    DANGEROUS_FUNCTIONS,
    SYSTEM_SCHEMAS,
    TRIGGER_SILENCING,
    Statement,
)
from harness.sandbox.layout import HOME, WORKSPACE
from harness.sandbox.layout import TMP as SCRATCH
from harness.sandbox.paths import affects, inside, matches
from harness.tables import TableName

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
    "shell.unverifiable-sql": (Verdict.REQUIRE_APPROVAL, "psql reading SQL produced at run "
                               "time"),
    "shell.code-in-argument": (Verdict.REQUIRE_APPROVAL, "an argument of a program the guard "
                               "does not model reads as a command another rule stops"),
    "shell.destructive-program": (Verdict.BLOCK, "a program that powers off the machine, kills "
                                  "every process, drops a database or erases a disk"),
    "shell.infrastructure-change": (Verdict.REQUIRE_APPROVAL, "a command that deletes or "
                                    "replaces infrastructure (containers, volumes, clusters, "
                                    "cloud resources)"),
    "shell.database-reset": (Verdict.REQUIRE_APPROVAL, "a framework or database client "
                             "command that drops, empties, resets or migrates down a "
                             "database"),
    "shell.unverifiable-code": (Verdict.REQUIRE_APPROVAL, "code that starts commands, deletes "
                                "or writes files with values only known at run time"),
    "shell.unknown-target": (Verdict.REQUIRE_APPROVAL, "a recursive or forced delete of a path "
                             "only known at run time"),
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
                        "data is gone (and DETACH PARTITION, NO INHERIT: rows leave the "
                        "table)"),
    "sql.exclusive-lock": (Verdict.REQUIRE_APPROVAL, "a statement that keeps a table's readers "
                           "or writers out while it scans or rewrites it: VACUUM FULL, "
                           "CLUSTER, REINDEX without CONCURRENTLY, LOCK TABLE in (ACCESS) "
                           "EXCLUSIVE mode"),
    "sql.rename": (Verdict.REQUIRE_APPROVAL, "ALTER ... RENAME of a column, table, view, "
                   "schema or database: every reader of the old name breaks"),
    "sql.system-catalog": (Verdict.BLOCK, "a write to PostgreSQL's own catalogues "
                           "(pg_catalog, information_schema)"),
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
    "sql.replication-role": (Verdict.REQUIRE_APPROVAL, "session_replication_role (for a "
                             "session, a role, a database or through PGOPTIONS) and ALTER "
                             "TABLE ... DISABLE TRIGGER/RULE silence triggers, rules and "
                             "foreign keys"),
    "sql.dangerous-function": (Verdict.BLOCK, "server administration or file-access functions"),
    "sql.alter-system": (Verdict.BLOCK, "ALTER SYSTEM changes the server's configuration"),
    "sql.privileges": (Verdict.REQUIRE_APPROVAL, "GRANT, REVOKE and role changes"),
    "sql.protected-table": (Verdict.BLOCK, "a write to a protected table"),
    "sql.unparseable": (Verdict.BLOCK, "SQL that cannot be split or classified"),
    "tool.read-only": (Verdict.BLOCK, "a write through a read-only tool (db_query)"),
    "tool.unknown": (Verdict.BLOCK, "a tool the harness does not know"),
    "tool.bad-parameters": (Verdict.BLOCK, "a required parameter missing or of the wrong type"),
    "path.protected": (Verdict.BLOCK, "a write to a protected path"),
    "path.runs-later": (Verdict.BLOCK, "a write to a file that runs later: shell startup "
                        "files, git hooks and git configuration"),
    "path.git-internals": (Verdict.BLOCK, "a write or delete inside the repository's .git "
                           "folder by anything but git"),
    "path.outside-workspace": (Verdict.BLOCK, "a file write outside the workspace, /tmp and "
                               "the agent's home"),
    "path.user-files": (Verdict.REQUIRE_APPROVAL, "on a real host (the pre-tool hook), a "
                        "delete, shred or move of the user's own files outside the project"),
}

SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                  "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/var",
                  "/home", "/mnt", "/media", "/snap", "/nix")
"""Folders of the system: nothing below them is the agent's to delete or rewrite."""
WRITABLE = (WORKSPACE, SCRATCH, HOME, "/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty",
            "/dev/fd", "/proc/self/fd")
"""Where a shell command may write without a finding."""
RUNS_LATER = (f"{HOME}/.bashrc", f"{HOME}/.bash_profile", f"{HOME}/.bash_login",
              f"{HOME}/.profile", f"{HOME}/.bash_logout", f"{HOME}/.bash_aliases",
              f"{HOME}/.zshrc", f"{HOME}/.zprofile", f"{HOME}/.zshenv", f"{HOME}/.zlogin",
              f"{HOME}/.config/autostart/**", f"{HOME}/.config/fish/**", f"{HOME}/.gitconfig",
              f"{HOME}/.config/git/**", f"{HOME}/.ssh/**", f"{HOME}/.inputrc",
              f"{HOME}/.vimrc", f"{HOME}/.npmrc", f"{HOME}/.curlrc", f"{HOME}/.wgetrc",
              f"{HOME}/.config/pip/**", f"{HOME}/.pip/**", "/etc/**")
"""Files something runs later: a write to them is code that runs outside this command."""
_DEVICE = re.compile(r"^/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk|md|dm-|loop|sr|mapper/|root|mem|"
                     r"kmem|port)")
_ALL_OPERANDS = frozenset({"rm", "rmdir", "unlink", "touch", "truncate", "shred", "mkdir",
                           "tee", "gzip", "gunzip", "bzip2", "bunzip2", "xz", "unxz", "zstd",
                           "chattr", "setfacl", "srm", "wipe"})
_AFTER_FIRST = frozenset({"chmod", "chown", "chgrp"})
_DESTINATION = frozenset({"cp", "mv", "ln", "install", "rsync", "scp", "link"})


@dataclass(frozen=True)
class Hit:
    """A built-in rule matched: which, why, and where (a span in the action's input)."""

    rule_id: str
    reason: str
    span: tuple[int, int] | None
    guessed: bool = False
    """Found in what a program the guard does not model may run: the policy asks."""


# ------------------------------------------------------------------ shell


def shell_hits(analysis: ShellAnalysis, *, protected_paths: list[str],
               protected_branches: list[str]) -> Iterator[Hit]:
    """Every built-in shell and git rule the analysed command line breaks."""
    for problem in analysis.problems:
        yield Hit(problem.rule_id, problem.reason, problem.span, problem.guessed)
    for name, body in analysis.functions.items():
        if sum(1 for command in body if command.argv and command.argv[0] == name) >= 2:
            span = body[0].span if body else None
            yield Hit("shell.fork-bomb", f"function {name!r} starts copies of itself", span)
    for command in analysis.commands:
        for hit in _command_hits(command, protected_paths, protected_branches):
            yield replace(hit, guessed=True) if command.guessed else hit


def _command_hits(command: Command, protected_paths: list[str], protected_branches: list[str]
                  ) -> Iterator[Hit]:
    program, args = command.program, command.args
    via = f" (through {' -> '.join(command.via)})" if command.via else ""
    parsed = programs.parse(program, args)
    deleted = list(_rm(command, parsed, via)) if program == "rm" else []
    yield from deleted
    if program == "rm":
        pass
    elif program == "find":
        yield from _find_delete(command, via)
    elif program in ("chmod", "chown", "chgrp") and parsed.has("-R", "--recursive"):
        for target in parsed.operands[1:]:
            path = command.path(target)
            if _is_system(path):
                yield Hit("shell.recursive-chmod-root",
                          f"{program} -R on {path}{via}", command.span)
    elif program == "dd":
        for arg in args:
            if arg.startswith("of=") and _DEVICE.match(command.path(arg[3:])):
                yield Hit("shell.disk-wipe", f"dd writes to the device {arg[3:]}{via}",
                          command.span)
    elif program.startswith("mkfs") or program in ("mke2fs", "mkswap", "wipefs", "blkdiscard",
                                                    "sgdisk", "sfdisk", "fdisk", "parted"):
        if program.startswith("mk") or program in ("wipefs", "blkdiscard") or any(
                _DEVICE.match(a) for a in args):
            yield Hit("shell.disk-wipe", f"{program} formats or wipes a disk{via}", command.span)
    elif program == "shred" and any(a.startswith("/dev/") for a in parsed.operands):
        yield Hit("shell.disk-wipe", f"shred on a device{via}", command.span)
    elif program == "git":
        yield from _git(command, protected_branches, via, protected_paths)
    elif program == "rsync" and parsed.has("--delete", "--delete-before", "--delete-after",
                                            "--delete-during", "--del") and parsed.operands:
        destination = parsed.operands[-1]
        danger = _dangerous_target(command, destination.rstrip("/") + "/*")
        if danger:
            yield Hit("shell.recursive-delete", f"rsync --delete empties {danger}{via}",
                      command.span)
        elif destination.startswith(DYNAMIC):
            yield Hit("shell.unknown-target", f"rsync --delete empties a folder only known "
                      f"at run time ({_show(destination)}){via}", command.span)
    yield from _destructive(command, parsed, via)
    for redirect in command.redirects:
        if redirect.op.startswith(">") or redirect.op in ("&>", "&>>", ">|", "<>"):
            if DYNAMIC in redirect.target:
                continue
            target = command.path(redirect.target)
            if _DEVICE.match(target):
                yield Hit("shell.disk-wipe", f"output redirected onto the device {target}{via}",
                          command.span)
            else:
                yield from _write_hits(command, target, protected_paths, f"redirect{via}",
                                       tree=False)
    if not deleted:  # a disastrous delete says enough about the paths it names
        yield from _writer_hits(command, parsed, protected_paths, via)
        if command.places.on_host:
            yield from _user_files(command, parsed, via)


_POWER = frozenset({"reboot", "shutdown", "poweroff", "halt", "kexec"})


def _destructive(command: Command, parsed: programs.Parsed, via: str) -> Iterator[Hit]:
    """Programs whose effect is destructive whatever their arguments name."""
    program, args = command.program, command.args
    words = [a for a in args if not a.startswith("-")]
    if program in _POWER or (program in ("systemctl", "loginctl") and set(words) & (
            _POWER | {"kexec", "suspend", "hibernate"})) or (
            program in ("init", "telinit") and words[:1] in (["0"], ["6"])):
        yield Hit("shell.destructive-program", f"{program} stops or restarts the machine{via}",
                  command.span)
    elif program in ("kill", "pkill", "killall") and _every_process(args):
        yield Hit("shell.destructive-program", f"{program} signals every process (or init)"
                  f"{via}", command.span)
    elif program in ("nvme", "hdparm", "sg_format") and (set(words) & {"format", "sanitize"}
                                                          or "--security-erase" in args):
        yield Hit("shell.destructive-program", f"{program} erases a disk{via}", command.span)
    name, given = _invoked(command, parsed)
    effect = effects.effect_of(name, given)
    if effect is not None:
        shown = " ".join([name, *[w for w in given if not w.startswith("-")][:3]])
        yield Hit(effect.rule_id, f"{shown} {effect.what}{via}", command.span)


_LAUNCHERS = re.compile(r"python[\d.]*|pypy3?|ruby|php|node|nodejs|bun|deno|perl|yarn|pnpm")


def _invoked(command: Command, parsed: programs.Parsed) -> tuple[str, list[str]]:
    """The program a command starts by name, and its arguments: the script an
    interpreter runs (`python manage.py flush`), the binary yarn or pnpm runs."""
    if _LAUNCHERS.fullmatch(command.program) and parsed.operands and not any(
            value is not None for option, value in parsed.options
            if option in programs.spec(command.program).code):
        script = parsed.operands[0]
        rest = command.args[command.args.index(script) + 1:] if script in command.args \
            else tuple(parsed.operands[1:])
        return posixpath.basename(script), list(rest)
    return command.program, list(command.args)


def _every_process(args: tuple[str, ...]) -> bool:
    """`kill -9 -1`, `kill -- -1`, `kill 1`: every process the user may signal, or init.
    (`kill -1 PID` sends SIGHUP to PID.)"""
    if "--" in args:
        return any(a in ("-1", "1") for a in args[args.index("--") + 1 :])
    targets = [a for a in args if not a.startswith("-")]
    return "1" in targets or (bool(args) and args[-1] == "-1" and len(args) >= 2)


def _written(command: Command, parsed: programs.Parsed) -> list[tuple[str, bool]]:
    """The operands a command writes, each with whether the write reaches below it (a
    recursive change, or a folder that receives files)."""
    program, operands = command.program, parsed.operands
    if program == "sed":
        in_place = any(o.startswith("-i") or o == "--in-place" for o, _ in parsed.options)
        if not in_place:
            return []
        script_given = parsed.has("-e", "--expression", "-f", "--file")
        return [(o, False) for o in (operands if script_given else operands[1:])]
    if program in ("perl", "ruby") and any(o.startswith("-i") for o, _ in parsed.options):
        return [(o, False) for o in operands]
    recursive = parsed.has("-r", "-R", "--recursive")
    if program in _ALL_OPERANDS:
        return [(o, recursive) for o in operands]
    if program in _AFTER_FIRST:
        return [(o, recursive) for o in operands[1:]]
    folder = parsed.value("-t", "--target-directory") if program in _DESTINATION else None
    if folder:
        return [(folder, True)] + ([(o, True) for o in operands] if program == "mv" else [])
    if program == "dd":
        return [(a[3:], False) for a in command.args if a.startswith("of=")]
    if program == "patch":
        output = parsed.value("-o", "--output")
        return [(output or operands[0], False)] if output or operands else []
    if program in _DESTINATION and len(operands) >= (1 if program == "ln" else 2):
        destination = operands[-1]
        written = [(destination, True)]
        if program == "mv":
            written += [(o, True) for o in operands[:-1]]
        return written
    if program == "tar" and parsed.has("-x", "--extract", "--get"):
        folder = parsed.value("-C", "--directory")
        return [(folder or ".", True)]
    if program == "unzip" and parsed.value("-d"):
        return [(parsed.value("-d") or ".", True)]
    if program in ("curl", "wget"):
        target = parsed.value("-o", "--output", "-O", "--output-document")
        return [(target, False)] if target and target != "-" else []
    if program in ("sponge", "ed", "ex"):
        return [(o, False) for o in operands[:1]]
    if program in ("yq", "jq") and parsed.has("-i", "--inplace", "--in-place"):
        return [(o, False) for o in operands[1:]]
    if program == "sort" and parsed.value("-o", "--output"):
        return [(parsed.value("-o", "--output") or "", False)]
    return []


_DESTROYERS = frozenset({"rm", "unlink", "shred", "srm", "wipe", "truncate", "rmdir"})


def _user_files(command: Command, parsed: programs.Parsed, via: str) -> Iterator[Hit]:
    """On a host, the files of the user's home outside the project are theirs: deleting,
    shredding or moving one away is asked about (caches excepted)."""
    program, operands = command.program, parsed.operands
    if program in _DESTROYERS:
        gone = operands
    elif program == "mv":
        gone = operands if parsed.value("-t", "--target-directory") else operands[:-1]
    else:
        return
    for operand in gone:
        if DYNAMIC in operand:
            continue
        path = command.path(operand)
        if inside(path, HOME) and path != HOME and not _disposable(path):
            yield Hit("path.user-files", f"{program} removes {path}, the user's own file "
                      f"outside the project{via}", command.span)
            return


def _writer_hits(command: Command, parsed: programs.Parsed, protected: list[str], via: str
                 ) -> Iterator[Hit]:
    for operand, tree in _written(command, parsed):
        if DYNAMIC in operand and operand.startswith(DYNAMIC):
            continue  # judged by the delete rules where it matters
        path = command.path(operand.replace(DYNAMIC, "x"))
        yield from _write_hits(command, path, protected, f"{command.program}{via}",
                               tree=tree or operand.endswith("/"))


def _write_hits(command: Command, path: str, protected: list[str], how: str, *, tree: bool
                ) -> Iterator[Hit]:
    """A write to `path` (and below it, for `tree`): protected paths, and anything outside
    the workspace, /tmp and the agent's home."""
    for pattern in protected:
        if affects(path, pattern) if tree else matches(path, pattern):
            yield Hit("path.protected", f"{how} writes {path}, protected by {pattern!r}",
                      command.span)
            break
    yield from write_path_hits(path, how, command.span, tree=tree,
                               by_git=command.program == "git")
    if not any(inside(path, folder) for folder in WRITABLE):
        yield Hit("path.outside-workspace", f"{how} writes {path}, outside the workspace, "
                  "/tmp and the agent's home", command.span)


def write_path_hits(path: str, how: str, span: tuple[int, int] | None, *, tree: bool = False,
                    by_git: bool = False) -> Iterator[Hit]:
    """The rules for any write to `path` (a shell command's or write_file's): files that
    run later, and the repository's own .git folder."""
    for pattern in RUNS_LATER:
        if affects(path, pattern) if tree else matches(path, pattern):
            yield Hit("path.runs-later", f"{how} writes {path}, which runs later "
                      f"({pattern})", span)
            break
    git_folder = WORKSPACE + "/.git"
    if not by_git and (inside(path, git_folder) or (tree and inside(git_folder, path))):
        yield Hit("path.git-internals", f"{how} changes {path}, inside the repository's .git "
                  "folder (hooks, refs and objects that git alone should write)", span)


def _rm(command: Command, parsed: programs.Parsed, via: str) -> Iterator[Hit]:
    if parsed.has("--no-preserve-root"):
        yield Hit("shell.recursive-delete", f"rm --no-preserve-root{via}", command.span)
        return
    if not parsed.has("-r", "-R", "--recursive", "-f", "--force"):
        return
    targets = parsed.operands
    if command.find_roots and "{}" in targets:
        if command.via[-1:] == ("find -exec",):
            return  # judged as the find command, with its filters
        producer = command.stdin_producer or ()
        yield from _find_roots(command, command.find_roots, filtered=_filtered(producer),
                               via=via)
        return
    for target in targets:
        if DYNAMIC in command.cwd and not target.startswith("/"):
            yield Hit("shell.unknown-target", f"rm {' '.join(_flags(parsed))} {target} in a "
                      f"folder only known at run time{via}", command.span)
            continue
        if target.startswith(DYNAMIC):
            # `$X/` is / when X is empty, `$X/build` something else: which, only the run
            # knows.
            yield Hit("shell.unknown-target", f"rm {' '.join(_flags(parsed))} on a path only "
                      f"known at run time ({_show(target)}){via}", command.span)
            continue
        danger = _dangerous_target(command, target)
        if danger:
            yield Hit("shell.recursive-delete", f"rm {' '.join(_flags(parsed))} {danger}{via}",
                      command.span)
            return


def _find_delete(command: Command, via: str) -> Iterator[Hit]:
    args = command.args
    deletes = "-delete" in args or any(
        args[i] in ("-exec", "-execdir", "-ok", "-okdir") and i + 1 < len(args)
        and posixpath.basename(args[i + 1]) in ("rm", "shred", "unlink", "srm")
        for i in range(len(args)))
    if not deletes:
        return
    roots = []
    for arg in args:
        if arg.startswith("-") or arg in ("(", "!"):
            break
        roots.append(arg)
    yield from _find_roots(command, tuple(roots or ["."]), filtered=_filtered(command.argv),
                           via=via)


def _filtered(producer: tuple[str, ...]) -> bool | None:
    """Whether a listing narrows what it lists (find's tests that select a part of what
    it finds; git ls-files' untracked, ignored, modified or deleted files, or a
    pathspec); None when a test it cannot evaluate decides."""
    if NARROWED in producer:
        return True
    if producer[:2] == ("git", "ls-files"):
        rest = producer[2:]
        return any(a in ("-o", "--others", "-i", "--ignored", "-m", "--modified", "-d",
                         "--deleted", "-u", "--unmerged") for a in rest) or any(
            not a.startswith("-") for a in rest)
    return bool(producer) and posixpath.basename(producer[0]) == "find" and \
        _find_narrows(producer[1:])


_FIND_OPTIONS = {"-maxdepth": 1, "-mindepth": 1, "-regextype": 1, "-files0-from": 1,
                 "-fprint": 1, "-fprint0": 1, "-fls": 1, "-printf": 1, "-fprintf": 2}
"""find's options and actions that take values (none of them selects files)."""
_FIND_BROAD_TESTS = frozenset({"-type", "-xtype", "-true", "-readable", "-writable",
                               "-fstype", "-context"})
"""Tests that hold for (nearly) everything a find in a project lists."""
_FIND_VALUED_TESTS = frozenset({
    "-name", "-iname", "-lname", "-ilname", "-path", "-ipath", "-wholename", "-iwholename",
    "-regex", "-iregex", "-newer", "-anewer", "-cnewer", "-mtime", "-mmin", "-atime",
    "-amin", "-ctime", "-cmin", "-size", "-user", "-group", "-uid", "-gid", "-perm",
    "-links", "-inum", "-samefile", "-used", "-type", "-xtype", "-fstype", "-context"})
_YEARS = 10 * 365


def _find_narrows(args: tuple[str, ...]) -> bool | None:
    """Whether find's expression selects a part of what it walks, in every branch of an
    `-o`: a test that holds for (nearly) everything (`-name '*'`, `-mtime -100000`,
    `! -name keep`) selects nothing less than all. None when it turns on a test the
    guard does not evaluate (a complex regular expression)."""
    index = 0
    while index < len(args) and not args[index].startswith("-") and \
            args[index] not in ("(", "!", ")", "\\(", ","):
        index += 1  # the roots
    root = (args[0] if index else ".").rstrip("/") or "/"
    branches: list[bool | None] = []
    narrow: bool | None = False
    negate, acted = False, False
    while index < len(args):
        word = args[index]
        index += 1
        if word in ("-o", "-or"):
            branches.append(narrow)
            narrow, negate, acted = False, False, False
        elif word in ("!", "-not"):
            negate = not negate
        elif word in ("-exec", "-execdir", "-ok", "-okdir"):
            while index < len(args) and args[index] not in (";", "+", "\\;"):
                index += 1
            index += 1
            acted = True
        elif word == "-delete":
            acted = True
        elif word in _FIND_OPTIONS:
            index += _FIND_OPTIONS[word]
        elif word.startswith("-") and (word in _FIND_VALUED_TESTS or
                                       re.fullmatch(r"-newer[aBcmt][aBcmt]", word)):
            value = args[index] if index < len(args) else ""
            index += 1
            if not acted and word not in ("-type", "-xtype"):
                broad = word in _FIND_BROAD_TESTS or _find_test_is_broad(word, value, root)
                selects = None if broad is None else (not broad) != negate
                narrow = True if True in (narrow, selects) else \
                    None if None in (narrow, selects) else False
            negate = False
        elif word in ("-empty", "-false", "-nouser", "-nogroup", "-executable") or \
                word in _FIND_BROAD_TESTS:
            if not acted:
                narrow = narrow or ((word not in _FIND_BROAD_TESTS) != negate)
            negate = False
    branches.append(narrow)
    return False if False in branches else None if None in branches else True


def _find_test_is_broad(test: str, value: str, root: str) -> bool | None:
    """Whether a find test holds for (nearly) everything in a project (None: a regular
    expression too complex to run safely on the guard's own time)."""
    if DYNAMIC in value:
        return False
    if test in ("-name", "-iname", "-lname", "-ilname"):
        fold = test.startswith("-i")
        names = [e.lower() for e in _TYPICAL_ENTRIES] if fold else list(_TYPICAL_ENTRIES)
        pattern = value.lower() if fold else value
        return 2 * sum(1 for n in names if _glob_matches(pattern, n, slashes=True)) >= len(names)
    if test in ("-path", "-ipath", "-wholename", "-iwholename", "-regex", "-iregex"):
        paths = [f"{root}/{entry}" for entry in _TYPICAL_ENTRIES]
        if test in ("-regex", "-iregex"):
            if len(value) > 200 or len(re.findall(r"[*+?{]", value)) > 3 or \
                    re.search(r"\)[*+?{]", value):
                return None  # backtracking could take the guard minutes
            try:
                expression = re.compile(value, re.IGNORECASE if test == "-iregex" else 0)
            except re.error:
                return False  # find refuses it too
            hits = sum(1 for p in paths if expression.fullmatch(p))
        else:
            hits = sum(1 for p in paths if _glob_matches(value, p, slashes=True))
        return 2 * hits >= len(paths)
    age = re.fullmatch(r"-(\d+)", value)
    if test in ("-mtime", "-atime", "-ctime") and age:
        return int(age.group(1)) >= _YEARS
    if test in ("-mmin", "-amin", "-cmin") and age:
        return int(age.group(1)) >= _YEARS * 24 * 60
    if re.fullmatch(r"-newer[aBcm]t", test):
        year = re.match(r"\s*(\d{4})", value)
        return year is not None and int(year.group(1)) <= 2000  # newer than 1970: all
    if test == "-size":
        size = re.fullmatch(r"([+-]?)(\d+)([bcwkMG]?)", value)
        if size:
            sign, number, unit = size.groups()
            scale = {"": 512, "b": 512, "c": 1, "w": 2, "k": 1024, "M": 1024 ** 2,
                     "G": 1024 ** 3}[unit]
            return (sign == "+" and int(number) == 0) or (
                sign == "-" and int(number) * scale >= 1024 ** 3)
    return False


def _find_roots(command: Command, roots: tuple[str, ...], *, filtered: bool | None,
                via: str) -> Iterator[Hit]:
    """Deleting what find lists under `roots`: a system folder or the home at any filter,
    the workspace (or, on a host, the user's files) only when nothing narrows what is
    listed."""
    for root in roots:
        if root.startswith(DYNAMIC) or DYNAMIC in command.cwd:
            yield Hit("shell.unknown-target", f"a delete under a folder only known at run "
                      f"time{via}", command.span)
            continue
        path = command.path(root)
        if _is_system(path) or path in ("/", HOME):
            yield Hit("shell.recursive-delete", f"find deletes under {path}{via}", command.span)
        elif path in (WORKSPACE, WORKSPACE + "/.git") or (
                command.places.on_host and inside(path, HOME) and not _disposable(path)):
            if filtered is None:
                yield Hit("shell.unknown-target", f"find deletes under {path} what a test "
                          f"the guard does not evaluate selects{via}", command.span)
            elif not filtered:
                yield Hit("shell.recursive-delete", f"find deletes under {path}{via}",
                          command.span)


def _dangerous_target(command: Command, target: str) -> str | None:
    """Why deleting `target` recursively is a disaster, if it is (a path only known at run
    time is judged by the callers, as needing approval)."""
    if target.startswith(DYNAMIC) or (DYNAMIC in command.cwd and not target.startswith("/")):
        return None
    path = command.path(target.replace(DYNAMIC, "x"))
    bare = _wiped(path)
    if bare in ("/", "/*") or _is_system(bare):
        return path
    if bare in (WORKSPACE, WORKSPACE + "/.git", HOME):
        return f"{path} (the {'agent home' if bare == HOME else 'workspace'})"
    if command.places.on_host and inside(bare, HOME) and not _disposable(bare):
        return f"{path} (the user's own files, outside the project)"
    if not any(inside(bare, folder) for folder in (WORKSPACE, SCRATCH, HOME)) and \
            bare.count("/") <= 2:
        return path
    return None


def _wiped(path: str) -> str:
    """What deleting `path` recursively wipes: the path, or the folder whose contents a
    pattern that matches (nearly) every name lists (`dir/*`, `dir/?*`, `dir/[a-z]*`), or
    the workspace's .git for a pattern that matches it (`.*`)."""
    folder, _, name = path.rstrip("/").rpartition("/")
    folder = folder or "/"
    if not any(c in name for c in "*?["):
        return path.rstrip("/") or "/"
    if folder == WORKSPACE and _glob_matches(name, ".git"):
        return WORKSPACE + "/.git"
    if sum(1 for entry in _TYPICAL_ENTRIES if _glob_matches(name, entry)) * 2 >= \
            len(_TYPICAL_ENTRIES):
        return folder
    return path


_TYPICAL_ENTRIES = ("src", "tests", "docs", "lib", "app", "build", "node_modules", "README.md",
                    "Makefile", "setup.py", "pyproject.toml", "package.json", "main.go",
                    "Cargo.toml", "LICENSE", "Dockerfile")
"""Names found at the top of a project: a pattern matching half of them or more empties
the folder as surely as `*` does."""
_POSIX_CLASSES = {"alpha": "a-zA-Z", "alnum": "a-zA-Z0-9", "digit": "0-9", "lower": "a-z",
                  "upper": "A-Z", "space": " \\t", "punct": "!-/:-@\\[-`{-~",
                  "xdigit": "0-9a-fA-F", "word": "a-zA-Z0-9_", "graph": "!-~", "print": " -~"}


def _glob_matches(pattern: str, name: str, *, slashes: bool = False) -> bool:
    """Whether a bash glob matches `name` (a leading dot only by a leading dot; with
    `slashes`, as find's -path does, `*` also crosses folders). Matched step by step, in
    time proportional to the pattern's length times the name's: no pattern can make the
    guard backtrack for long."""
    if name.startswith(".") and not pattern.startswith(".") and not slashes:
        return False
    reachable = {0}  # positions in the name the pattern so far can have consumed
    for kind, test in _glob_tokens(pattern):
        if kind == "*":
            extended: set[int] = set()
            for position in reachable:
                slash = -1 if slashes else name.find("/", position)
                extended.update(range(position, (slash if slash >= 0 else len(name)) + 1))
            reachable = extended
        else:
            reachable = {p + 1 for p in reachable if p < len(name) and
                         (slashes or kind == "=" or name[p] != "/") and test(name[p])}
        if not reachable:
            return False
    return len(name) in reachable


@functools.lru_cache(maxsize=256)
def _glob_tokens(pattern: str) -> tuple[tuple[str, Callable[[str], bool]], ...]:
    """A glob as steps: `*`, or one character that must pass a test (`=` for a literal)."""
    tokens: list[tuple[str, Callable[[str], bool]]] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            if not tokens or tokens[-1][0] != "*":
                tokens.append(("*", _ANY))
        elif char == "?":
            tokens.append(("?", _ANY))
        elif char == "[" and "]" in pattern[index + 2 :]:
            end = pattern.index("]", index + 2)
            body = pattern[index + 1 : end]
            if body.startswith("[:") and pattern[end + 1 : end + 2] == "]":
                end += 1  # [[:alpha:]]
                body = body + "]"
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            body = re.sub(r"\[:(\w+):\]", lambda m: _POSIX_CLASSES.get(m.group(1), "a-z"),
                          body.replace("\\", "\\\\"))
            tokens.append(("[", _one_of(f"[{'^' if negate else ''}{body}]")))
            index = end
        else:
            tokens.append(("=", char.__eq__))
        index += 1
    return tuple(tokens)


def _ANY(char: str) -> bool:
    return True


def _one_of(bracket: str) -> Callable[[str], bool]:
    """A character class's test (an odd class is read as matching anything)."""
    try:
        match = re.compile(bracket).fullmatch
    except re.error:
        return _ANY
    return lambda char: match(char) is not None


_DISPOSABLE = (".cache", ".npm", ".yarn", ".pnpm-store", ".cargo/registry", ".cargo/git",
               ".m2/repository", ".gradle/caches", ".ivy2/cache", ".nuget/packages",
               ".local/share/virtualenvs", ".node-gyp", ".pyenv/versions", ".rustup/tmp",
               "go/pkg/mod", ".bun/install/cache", ".deno", ".local/share/pnpm",
               "Library/Caches")
"""Caches in a user's home (as the sandbox's home folder): rebuilt when deleted."""


def _disposable(path: str) -> bool:
    """Whether `path` lies in a cache of the user's home (or is one)."""
    return any(inside(path, f"{HOME}/{cache}") for cache in _DISPOSABLE)


def _is_system(path: str) -> bool:
    bare = path[:-2] if path.endswith("/*") else path
    if bare in ("/", "/*"):
        return True
    return any(inside(bare, folder) for folder in SYSTEM_FOLDERS) and not inside(bare, HOME)


def _flags(parsed: programs.Parsed) -> list[str]:
    return [option for option, _ in parsed.options]


def _show(word: str) -> str:
    return word.replace(DYNAMIC, "$?") or "''"


# -------------------------------------------------------------------- git

_GIT_VALUE_OPTS = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace"})
_REVISION = re.compile(r"^(HEAD|@|ORIG_HEAD|FETCH_HEAD|MERGE_HEAD)([~^]\d*)*$|"
                       r"^[0-9a-f]{7,40}([~^]\d*)*$|^(origin|upstream)/[\w./-]+([~^]\d*)*$|"
                       r"^refs/|.*[~^]\d*$")


def _work_tree(command: Command) -> str:
    """Where a git command works: --work-tree, GIT_WORK_TREE, -C, or its folder."""
    args = list(command.args)
    for index, arg in enumerate(args):
        if arg.startswith("--work-tree="):
            return command.path(arg.split("=", 1)[1])
        if arg in ("--work-tree", "-C") and index + 1 < len(args):
            return command.path(args[index + 1])
        if not arg.startswith("-"):
            break
    for name, value in command.env:
        if name == "GIT_WORK_TREE":
            return command.path(value)
    return command.cwd


def _git_paths(sub: str, rest: list[str]) -> list[str]:
    """The paths a git subcommand writes in the work tree."""
    if sub in ("rm", "mv"):
        return [a for a in rest if not a.startswith("-")]
    if sub == "restore" and _has(rest, "S", "--staged") and not _has(rest, "W", "--worktree"):
        return []  # the index alone: no file of the work tree is written
    if sub in ("checkout", "restore") and "--" in rest:
        return rest[rest.index("--") + 1 :]
    if sub == "restore":
        return [a for a in rest if not a.startswith("-")]
    return []


def _git(command: Command, protected: list[str], via: str,
         protected_paths: list[str] | None = None) -> Iterator[Hit]:
    args = list(command.args)
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] in _GIT_VALUE_OPTS else args[1:]
    if not args:
        return
    sub, rest = args[0], args[1:]
    guarded = set(protected)
    protected_paths = protected_paths or []
    branch = command.branch
    where = _work_tree(command)
    for folder, checked_out in command.worktrees:
        if inside(where, folder):
            branch = checked_out
    if sub == "rebase":
        branch = _rebased_branch(rest) or branch
    if sub == "push":
        yield from _push(rest, guarded, branch, command, via)
    elif sub in ("filter-branch", "filter-repo"):
        yield Hit("git.rewrite-history", f"git {sub} rewrites every branch{via}", command.span)
    elif sub == "reflog" and rest[:1] in (["expire"], ["delete"]) and (
            rest[0] == "delete" or any(re.fullmatch(
                r"--expire(-unreachable)?=(now|all|0|[\d.]+\.seconds?\.ago)", a) for a in rest)):
        yield Hit("git.rewrite-history", f"git reflog {rest[0]} drops the record of where "
                  f"branches were: rewritten or reset commits can no longer be recovered{via}",
                  command.span)
    elif sub == "replace" and not _has(rest, "l", "--list", "d", "--delete") and \
            [a for a in rest if not a.startswith("-")]:
        yield Hit("git.rewrite-history", f"git replace makes history show other commits "
                  f"than the ones it has{via}", command.span)
    elif sub == "branch":
        yield from _branch(rest, guarded, command, via)
    elif sub in ("checkout", "switch"):
        forced = [f for f in ("-B", "-C", "--force-create") if f in rest]
        if forced:
            index = rest.index(forced[0])
            name = rest[index + 1] if index + 1 < len(rest) else ""
            if name in guarded or DYNAMIC in name:
                yield Hit("git.rewrite-history", f"git {sub} {forced[0]} moves {name or '?'}"
                          f"{via}", command.span)
    elif sub == "update-ref":
        refs = [a for a in rest if not a.startswith("-")]
        if refs and (refs[0].removeprefix("refs/heads/") in guarded or DYNAMIC in refs[0]):
            yield Hit("git.rewrite-history", f"git update-ref moves {refs[0]}{via}", command.span)
    elif sub == "clean" and _has(rest, "f", "--force"):
        where = _work_tree(command)
        danger = _dangerous_target(command, where)
        if danger and not danger.startswith(WORKSPACE):
            yield Hit("shell.recursive-delete", f"git clean in {where}{via}", command.span)
    elif sub == "fetch":
        positional = [a for a in rest if not a.startswith("-")]
        forcing = _has(rest, "f", "--force")
        for spec in positional[1:]:
            destination = spec.lstrip("+").partition(":")[2].removeprefix("refs/heads/")
            if destination and (destination in guarded or "*" in destination) and (
                    forcing or spec.startswith("+")):
                yield Hit("git.rewrite-history", f"git fetch overwrites {destination}{via}",
                          command.span)
    if sub in ("rm", "mv", "checkout", "restore", "apply", "am", "stash") and protected_paths:
        for path in _git_paths(sub, rest):
            yield from _write_hits(command, command.path(path), protected_paths,
                                   f"git {sub}{via}", tree=True)
    elif sub == "config":
        words = [a for a in rest if not a.startswith("-")]
        if len(words) >= 2 and re.fullmatch(r"remote\.[^.]+\.push", words[0]):
            spec = words[1]
            target = spec.lstrip("+").partition(":")[2].removeprefix("refs/heads/")
            if spec.startswith("+") and (target in guarded or "*" in target or not target):
                yield Hit("git.force-push", f"git config makes every push force {spec}{via}",
                          command.span)
    if branch is None or branch in guarded:
        rewriting = sub == "rebase" or (sub == "commit" and "--amend" in rest) or (
            sub == "reset" and _moves_branch(rest))
        if rewriting and not (sub == "rebase" and _has(rest, "--abort", "--quit", "--skip",
                                                       "--continue", "--show-current-patch")):
            name = branch or "a branch only known at run time"
            yield Hit("git.rewrite-history",
                      f"git {sub} rewrites the protected branch {name}{via}", command.span)


_REBASE_VALUED = frozenset({"--onto", "-x", "--exec", "-s", "--strategy", "-X",
                            "--strategy-option", "-C", "--whitespace"})


def _rebased_branch(rest: list[str]) -> str | None:
    """`git rebase [OPTIONS] UPSTREAM BRANCH` (or `--root BRANCH`) checks BRANCH out and
    rewrites it."""
    operands: list[str] = []
    skip = False
    for arg in rest:
        if skip:
            skip = False
        elif arg in _REBASE_VALUED:
            skip = True
        elif not arg.startswith("-"):
            operands.append(arg)
    wanted = 1 if "--root" in rest else 2
    return operands[wanted - 1] if len(operands) >= wanted else None


def _has(args: list[str], *flags: str) -> bool:
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


def _moves_branch(rest: list[str]) -> bool:
    """`git reset [mode] COMMIT` moves the branch; `git reset [COMMIT] -- PATHS` and
    `git reset PATHS` only unstage."""
    if "--" in rest:
        before = [a for a in rest[: rest.index("--")] if not a.startswith("-")]
        return False if rest.index("--") + 1 < len(rest) else bool(
            before and before[0] != "HEAD")
    operands = [a for a in rest if not a.startswith("-")]
    if not operands:
        return False
    if len(operands) > 1:
        return False  # `git reset HEAD file` / `git reset file1 file2`: paths
    first = operands[0]
    return first != "HEAD" and (_REVISION.match(first) is not None or DYNAMIC in first)


def _branch(rest: list[str], guarded: set[str], command: Command, via: str) -> Iterator[Hit]:
    names = [a for a in rest if not a.startswith("-")]
    if _has(rest, "D", "d", "--delete") and (guarded & set(names) or
                                              any(DYNAMIC in n for n in names)):
        yield Hit("git.delete-protected-branch",
                  f"git branch deletes {sorted(guarded & set(names)) or names}{via}",
                  command.span)
    elif _has(rest, "M", "C") or (_has(rest, "m", "c") and len(names) == 2):
        # `git branch -M [old] new`: new is overwritten (or renamed onto).
        target = names[-1] if names else ""
        old = names[0] if len(names) == 2 else command.branch
        if target in guarded or old in guarded or DYNAMIC in target:
            yield Hit("git.rewrite-history", f"git branch renames onto or away from "
                      f"{target if target in guarded else old}{via}", command.span)
    elif _has(rest, "f", "--force") and names and (names[0] in guarded or DYNAMIC in names[0]):
        yield Hit("git.rewrite-history", f"git branch -f moves {names[0]}{via}", command.span)


def _push(rest: list[str], guarded: set[str], branch: str | None, command: Command,
          via: str) -> Iterator[Hit]:
    forced = _has(rest, "f", "--force", "--force-with-lease", "--force-if-includes",
                  "--mirror") or any(a.startswith("--force-with-lease=") for a in rest)
    if "--mirror" in rest:
        yield Hit("git.force-push", f"git push --mirror overwrites and deletes every branch "
                  f"of the remote{via}", command.span)
        return
    deleting = _has(rest, "d", "--delete")
    if "--prune" in rest and any("*" in spec for spec in rest if not spec.startswith("-")):
        yield Hit("git.delete-protected-branch", f"git push --prune with a pattern deletes "
                  f"every remote branch the pattern does not cover, protected ones too{via}",
                  command.span)
    positional = [a for a in rest if not a.startswith("-")]
    refspecs = positional[1:]
    destinations = []
    for spec in refspecs:
        forced_spec = spec.startswith("+")
        spec = spec.lstrip("+")
        source, _, destination = spec.partition(":")
        target = (destination or source).removeprefix("refs/heads/")
        if ":" in spec and not source:
            yield from _deleted(target, guarded, command, via)
            continue
        if target in ("HEAD", "@"):
            target = branch or DYNAMIC
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
        if (forced or forced_spec) and (target in guarded or DYNAMIC in target or
                                        "*" in target):
            shown = "a branch only known at run time" if DYNAMIC in target else target
            yield Hit("git.force-push", f"force push to the protected branch {shown}{via}",
                      command.span)


def _deleted(target: str, guarded: set[str], command: Command, via: str) -> Iterator[Hit]:
    if target in guarded or DYNAMIC in target:
        yield Hit("git.delete-protected-branch",
                  f"git push deletes the protected branch {target.replace(DYNAMIC, '?')}{via}",
                  command.span)


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
    if statement.detaches:
        yield Hit("sql.drop-column", f"ALTER TABLE takes {statement.detaches} away from its "
                  "readers", span)
    if statement.locks:
        yield Hit("sql.exclusive-lock", statement.locks, span)
    if statement.silences:
        yield Hit("sql.replication-role", f"ALTER TABLE {targets} switches off "
                  f"{statement.silences}: they stop firing", span)
    if statement.library:
        yield Hit("sql.dangerous-function", f"the function loads the library "
                  f"{statement.library} into the server", span)
    if statement.access:
        yield Hit("sql.privileges", statement.access, span)
    if statement.renames:
        yield Hit("sql.rename", f"ALTER renames the {statement.renames}: its readers break",
                  span)
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
            if _in_catalog(target):
                yield Hit("sql.system-catalog", f"{kind} writes {target}, a catalogue of "
                          "PostgreSQL itself", span)
                break
        for target in statement.targets:
            match = protected_match(target, protected)
            if match:
                yield Hit("sql.protected-table",
                          f"{kind} writes {target}, a protected table ({match})", span)


def _in_catalog(target: str) -> bool:
    """Whether a table is one of PostgreSQL's catalogues (an unqualified `pg_*` name is
    found in pg_catalog first)."""
    try:
        name = TableName.parse(target)
    except ValueError:
        return False
    if name.schema is None:
        return name.name.startswith("pg_")
    return name.schema in SYSTEM_SCHEMAS


def protected_match(target: str, protected: list[str]) -> str | None:
    """The protected-table entry that `target` falls under, if any (`TableName.under`)."""
    try:
        return TableName.parse(target).under(protected)
    except ValueError:
        return None
