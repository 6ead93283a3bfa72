"""The policy: every rule, built-in and configured, applied to one tool action.

Precedence: every rule is evaluated; the most severe verdict wins (block, then
require_approval, then warn, then allow). Among findings of equal severity the first
reported decides: built-in rules in catalogue order (per command or statement, in the
order they appear in the input), then configured rules in file order. Every finding is
kept in the decision.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import ConfigError
from harness.guardrails import programs, rules, shell, sql
from harness.guardrails.decision import Decision, Finding, Span, Verdict
from harness.guardrails.places import SANDBOX, Places
from harness.sandbox.layout import TMP as SCRATCH
from harness.sandbox.layout import WORKSPACE
from harness.sandbox.paths import inside, matches, resolve
from harness.tools import TOOLS, Judged, ToolAction

if TYPE_CHECKING:
    from harness.config import (
        GitRule,
        Guardrails,
        PathRule,
        PatternRule,
        SqlRule,
        _Rule,
    )

KNOWN_TOOLS = frozenset(TOOLS)
_FIRST_WORDS = re.compile(r"(?:^|;)\s*([A-Za-z]+)")
_CHANGING_WORDS = frozenset({"DROP", "TRUNCATE", "DELETE", "UPDATE", "ALTER", "RENAME",
                             "REPLACE", "GRANT", "REVOKE", "LOAD", "ATTACH", "DETACH",
                             "VACUUM", "PRAGMA"})
"""First words of statements in another engine's SQL that change what exists."""

Approver = Callable[[ToolAction, Decision], bool]
"""Answers a require_approval decision: True approves the action, False denies it."""


@dataclass(frozen=True)
class Context:
    """What the policy knows of where the action runs."""

    cwd: str = WORKSPACE
    """The folder the action runs in (a host's own path, for a hook on a real host)."""
    branch: str | None = None
    """The workspace's current branch, for history-rewrite rules."""
    tools: frozenset[str] = KNOWN_TOOLS
    places: Places = SANDBOX
    """The sandbox's layout, or a real host's project and home seen as that layout."""

    def path(self, text: str) -> str:
        """A path the action names, resolved where it runs and seen in the sandbox's
        terms (the project as the workspace, on a host)."""
        if text == "~" or text.startswith("~/"):
            text = self.places.home + text[1:]
        return self.places.view(resolve(text, self.cwd))


@dataclass(frozen=True)
class _Unit:
    """A rule finding before its verdict is settled."""

    rule_id: str
    verdict: Verdict
    reason: str
    span: tuple[int, int] | None


class Policy:
    """Deterministic guardrails built from the `guardrails` section of a config."""

    def __init__(self, guardrails: Guardrails | None = None, *, approver: Approver | None = None
                 ) -> None:
        if guardrails is None:
            from harness.config import Guardrails

            guardrails = Guardrails()
        self.guardrails = guardrails
        unknown = sorted(set(self.guardrails.builtin) - set(rules.CATALOGUE))
        if unknown:
            raise ConfigError(
                f"guardrails.builtin names unknown rules {unknown}; known rules: "
                f"{', '.join(rules.CATALOGUE)}")
        self.approver = approver
        self._patterns = list(enumerate(self.guardrails.rules))
        self._pattern_words = {index: _pattern_words(rule.pattern) for index, rule in self._patterns
                               if rule.kind == "pattern" and not rule.regex}

    # ------------------------------------------------------------ entry points

    def evaluate(self, action: ToolAction, context: Context | None = None) -> Decision:
        """The decision for `action`, with require_approval left unresolved."""
        context = context or Context()
        tool = TOOLS.get(action.tool)
        parameter = tool.judged_parameter if tool is not None else None
        if parameter is not None and parameter not in action.parameters:
            default = tool.parameters["properties"][parameter].get("default") if tool else None
            if default is not None:  # list_files of no path lists the workspace root
                action = ToolAction(action.tool, {**action.parameters, parameter: default})
        text = tool.judged_input(action.parameters) if tool is not None else ""
        units = list(self._units(action, context, text))
        findings = [Finding(u.rule_id, u.verdict, u.reason, _span(text or "", u.span))
                    for u in units]
        return Decision.from_findings(findings)

    def authorize(self, action: ToolAction, context: Context | None = None) -> Decision:
        """The decision for `action` with require_approval answered by the approver
        (denied when there is none): the verdict is then allow, warn or block."""
        decision = self.evaluate(action, context)
        if decision.verdict != Verdict.REQUIRE_APPROVAL:
            return decision
        if self.approver is None:
            return _settled(decision, Verdict.BLOCK, "no-approver",
                            f"{decision.reason} (needs approval; no approver is configured, "
                            "so it is denied)")
        if self.approver(action, decision):
            return _settled(decision, Verdict.WARN, "approved", f"{decision.reason} (approved)")
        return _settled(decision, Verdict.BLOCK, "denied", f"{decision.reason} (approval denied)")

    # ------------------------------------------------------------ rules

    def _units(self, action: ToolAction, context: Context, text: str | None
               ) -> Iterator[_Unit]:
        tool = action.tool
        yield from self._tool_rules(tool)
        if tool not in context.tools:
            yield self._builtin("tool.unknown", f"unknown tool {tool!r}", None)
            return
        if text is None:
            parameter = TOOLS[tool].judged_parameter or "its parameters"
            yield self._builtin("tool.bad-parameters",
                                f"{tool} needs the string parameter {parameter!r}"
                                if TOOLS[tool].judged_parameter else
                                f"{tool}: {parameter} do not say what it would do", None)
            return
        if len(text.encode(errors="replace")) > self.guardrails.max_input_bytes:
            yield self._builtin("input.too-large", f"{tool} input of {len(text)} characters is "
                                f"over the {self.guardrails.max_input_bytes}-byte limit",
                                (0, len(text)))
            return
        judged = TOOLS[tool].judged if tool in TOOLS else Judged.NOTHING
        if judged is Judged.SHELL:
            yield from self._shell(text, context)
        elif judged in (Judged.SQL, Judged.SQL_READ_ONLY):
            yield from self._sql(text, None, read_only=judged is Judged.SQL_READ_ONLY)
        elif judged is Judged.WRITE:
            yield from self._write(text, context)
        elif judged is Judged.READ:
            yield from self._path_rules(context.path(text), "read", (0, len(text)))
        elif judged is Judged.LISTING:
            # A listing reads the folder's entries: a rule on what lies in it applies.
            folder = context.path(text)
            yield from self._path_rules(folder, "read", (0, len(text)),
                                        also=posixpath.join(folder, "entry"))

    def _builtin(self, rule_id: str, reason: str, span: tuple[int, int] | None
                 ) -> _Unit:
        verdict, _ = rules.CATALOGUE[rule_id]
        override = self.guardrails.builtin.get(rule_id)
        if override is not None and override != "off":
            verdict = Verdict.parse(override)
        if not self.guardrails.fail_closed and rule_id in (
                "shell.unparseable", "sql.unparseable", "input.too-large"):
            verdict = min(verdict, Verdict.WARN)
        return _Unit(rule_id, verdict, reason, span)

    def _hits(self, hits: Iterator[rules.Hit]) -> Iterator[_Unit]:
        for hit in hits:
            if self.guardrails.builtin.get(hit.rule_id) == "off":
                continue
            yield from self._guessed(iter([self._builtin(hit.rule_id, hit.reason, hit.span)]),
                                     hit.guessed)

    def _guessed(self, units: Iterator[_Unit], guessed: bool) -> Iterator[_Unit]:
        """What a command found in the arguments of a program the guard does not model
        would do is only what that program may do: a stop becomes a question."""
        for unit in units:
            if not guessed or unit.verdict < Verdict.REQUIRE_APPROVAL:
                yield unit
            elif self.guardrails.builtin.get("shell.code-in-argument") != "off":
                yield self._builtin("shell.code-in-argument", f"{unit.reason}; the guard "
                                    "does not model the program that would run it",
                                    unit.span)

    def _shell(self, text: str, context: Context) -> Iterator[_Unit]:
        analysis = shell.analyse(text, cwd=context.cwd, branch=context.branch,
                                 places=context.places)
        yield from self._hits(self._shell_hits(analysis, context))
        for program, argument, span in analysis.suspect_arguments:
            inner = [unit for unit in self._shell(argument, context)
                     if unit.verdict >= Verdict.REQUIRE_APPROVAL]
            if inner:
                yield from self._hits(iter([rules.Hit(
                    "shell.code-in-argument", f"{program} is given {argument[:60]!r}, which "
                    f"reads as a command that would: {inner[0].reason}", span)]))
        for sql_text, span, guessed, dialect in analysis.sql:
            if sql_text.lstrip().startswith("\\"):
                units = self._psql_meta(sql_text.lstrip(), span, context)
            elif shell.DYNAMIC in sql_text:
                units = self._sql_with_unknowns(sql_text, span)
            elif dialect != "postgres":
                units = self._foreign_sql(sql_text, span, dialect)
            else:
                units = self._sql(sql_text, span, read_only=False)
            yield from self._guessed(units, guessed)
        for command in analysis.commands:
            yield from self._guessed(self._command_rules(command, context), command.guessed)

    def _shell_hits(self, analysis: shell.ShellAnalysis, context: Context
                    ) -> Iterator[rules.Hit]:
        g = self.guardrails
        return rules.shell_hits(analysis, protected_paths=g.protected_paths,
                                protected_branches=g.protected_branches)

    def _psql_meta(self, text: str, span: tuple[int, int], context: Context) -> Iterator[_Unit]:
        """A psql backslash command: `\\!` runs a shell, `\\copy ... program` a program."""
        if text.startswith("\\!"):
            inner = self._shell_hits(shell.analyse(text[2:], cwd=context.cwd,
                                                   branch=context.branch,
                                                   places=context.places), context)
            yield from self._hits(rules.Hit(hit.rule_id, f"psql \\! {hit.reason}", span,
                                            hit.guessed) for hit in inner)
        elif re.search(r"\\copy\b.*\bprogram\b", text, re.IGNORECASE | re.DOTALL):
            yield self._builtin("sql.copy-program", "psql \\copy ... program runs a command",
                                span)

    def _sql(self, text: str, span: tuple[int, int] | None, *, read_only: bool
             ) -> Iterator[_Unit]:
        try:
            analysis = sql.analyse(text)
        except sql.SqlSyntaxError as exc:
            at = span or (exc.offset, len(text))
            yield self._builtin("sql.unparseable", f"the SQL cannot be split: {exc}", at)
            return
        for statement in analysis.statements:
            yield from self._hits(rules.sql_hits(
                statement, protected_tables=self.guardrails.protected_tables, span=span))
            if read_only:
                writing = [s.kind for s in statement.walk() if s.writes]
                if writing:
                    yield self._builtin("tool.read-only", f"db_query is read-only but the SQL "
                                        f"runs {writing[0]}", span or statement.span)
        yield from self._statement_rules(analysis.statements, span)

    def _foreign_sql(self, text: str, span: tuple[int, int], dialect: str
                     ) -> Iterator[_Unit]:
        """SQL for another engine (mysql, sqlite3): judged as PostgreSQL reads it when it
        parses as PostgreSQL; when it does not, a statement that changes or drops what
        exists needs approval and the rest passes."""
        try:
            sql.analyse(text)
        except sql.SqlSyntaxError:
            changing = sorted({word.upper() for word in _FIRST_WORDS.findall(text)}
                              & _CHANGING_WORDS)
            if changing:
                yield from self._hits(iter([rules.Hit(
                    "sql.unknown-effect", f"{dialect} SQL that PostgreSQL's parser cannot "
                    f"read runs {', '.join(changing)}", span)]))
            return
        yield from self._sql(text, span, read_only=False)

    def _sql_with_unknowns(self, text: str, span: tuple[int, int]) -> Iterator[_Unit]:
        """SQL built from shell values only known at run time (`psql -c "... $X ..."`):
        a value can change what the statement does (even inside quotes, it can close
        them), so it needs approval; what the known parts say is judged as usual."""
        yield from self._hits(iter([rules.Hit(
            "sql.unknown-effect", "the SQL is built from shell values only known at run "
            "time, which can change what it does", span)]))
        known = text.replace(shell.DYNAMIC, "harness_unknown")
        try:
            sql.analyse(known)
        except sql.SqlSyntaxError:
            return  # the unknown part may be what makes it whole
        yield from self._sql(known, span, read_only=False)

    def _write(self, text: str, context: Context) -> Iterator[_Unit]:
        path = context.path(text)
        whole = (0, len(text))
        yield from self._hits(rules.write_path_hits(path, "write_file", whole))
        if not inside(path, WORKSPACE) and not inside(path, SCRATCH) and \
                self.guardrails.builtin.get("path.outside-workspace") != "off":
            yield self._builtin("path.outside-workspace",
                                f"{path} is outside the workspace and /tmp", whole)
        for pattern in self.guardrails.protected_paths:
            if matches(path, pattern) and self.guardrails.builtin.get("path.protected") != "off":
                yield self._builtin("path.protected",
                                    f"{path} is protected by {pattern!r}", whole)
                break
        yield from self._path_rules(path, "write", whole)

    # ------------------------------------------------------------ configured rules

    def _rule_id(self, index: int, rule: _Rule) -> str:
        return rule.id or f"config.rules[{index}]"

    def _unit(self, index: int, rule: _Rule, reason: str, span: tuple[int, int] | None
              ) -> _Unit:
        return _Unit(self._rule_id(index, rule), Verdict.parse(rule.action),
                     reason, span)

    def _tool_rules(self, tool: str) -> Iterator[_Unit]:
        for index, rule in self._patterns:
            if rule.kind != "tool":
                continue
            if any(fnmatch.fnmatchcase(tool, name) for name in rule.deny):
                yield self._unit(index, rule, f"the tool {tool!r} is denied", None)
            elif rule.allow is not None and not any(
                    fnmatch.fnmatchcase(tool, name) for name in rule.allow):
                yield self._unit(index, rule, f"the tool {tool!r} is not in the allow-list", None)

    def _command_rules(self, command: shell.Command, context: Context) -> Iterator[_Unit]:
        argv = command.argv
        if not argv:
            return
        joined = " ".join(argv)
        for index, rule in self._patterns:
            if rule.kind == "pattern":
                if rule.regex:
                    if re.search(rule.pattern, joined):
                        yield self._unit(index, rule, f"the command matches {rule.pattern!r}",
                                         command.span)
                elif _argv_matches(self._pattern_words[index], command):
                    yield self._unit(index, rule, f"the command matches {rule.pattern!r}",
                                     command.span)
            elif rule.kind == "shell":
                if not fnmatch.fnmatchcase(command.program, rule.program):
                    continue
                if rule.args and not all(arg in command.args for arg in rule.args):
                    continue
                if rule.args_regex and not re.search(rule.args_regex, " ".join(command.args)):
                    continue
                yield self._unit(index, rule, f"{command.program} is restricted by a rule",
                                 command.span)
            elif rule.kind == "git" and command.program == "git":
                yield from self._git_rule(index, rule, command)
            elif rule.kind == "path" and rule.access in ("write", "any"):
                for redirect in command.redirects:
                    if redirect.op.startswith(">") or redirect.op.startswith("&>"):
                        path = command.path(redirect.target)
                        if any(matches(path, g) for g in _globs(rule)):
                            yield self._unit(index, rule, f"writes {path}", command.span)

    def _git_rule(self, index: int, rule: GitRule, command: shell.Command) -> Iterator[_Unit]:
        # git's own options come before the subcommand, some with a value (`-C dir`).
        top = programs.parse("git", command.args)
        if not top.operands or top.operands[0] != rule.subcommand:
            return
        args = list(command.args[command.args.index(top.operands[0]) + 1:])
        words = [rule.subcommand, *(a for a in args if not a.startswith("-"))]
        if rule.force and not any(a in ("-f", "--force", "--force-with-lease") or
                                  a.startswith("+") for a in args):
            return
        if rule.branches and not any(
                w.lstrip("+").split(":")[-1].removeprefix("refs/heads/") in rule.branches
                for w in words[1:]):
            return
        yield self._unit(index, rule, f"git {rule.subcommand} is restricted by a rule",
                         command.span)

    def _statement_rules(self, statements: list[sql.Statement], span: tuple[int, int] | None
                         ) -> Iterator[_Unit]:
        for index, rule in self._patterns:
            if rule.kind == "sql" and rule.multi_statement:
                if len(statements) > 1:
                    yield self._unit(index, rule, f"{len(statements)} statements in one action",
                                     span or (statements[0].span[0], statements[-1].span[1]))
                continue
            for outer in statements:
                for statement in outer.walk():
                    where = span or statement.span
                    if rule.kind == "pattern":
                        if _sql_matches(rule, statement):
                            yield self._unit(index, rule,
                                             f"the statement matches {rule.pattern!r}", where)
                    elif rule.kind == "sql" and _sql_rule_matches(rule, statement):
                        yield self._unit(index, rule, f"{statement.kind} "
                                         f"{', '.join(statement.targets)} is restricted by a "
                                         "rule", where)

    def _path_rules(self, path: str, access: str, span: tuple[int, int], *,
                    also: str | None = None) -> Iterator[_Unit]:
        for index, rule in self._patterns:
            if rule.kind == "path" and rule.access in (access, "any") and any(
                    matches(path, g) or (also is not None and matches(also, g))
                    for g in _globs(rule)):
                yield self._unit(index, rule, f"{access} of {path} is restricted by a rule", span)


def _globs(rule: PathRule) -> list[str]:
    return [rule.glob] if isinstance(rule.glob, str) else rule.glob


def _pattern_words(pattern: str) -> list[str]:
    try:
        return shlex.split(pattern)
    except ValueError:
        return pattern.split()


def _argv_matches(words: list[str], command: shell.Command) -> bool:
    """The program is the pattern's first word, and the other words follow in order."""
    if not words or posixpath.basename(words[0]) != command.program:
        return False
    remaining = iter(command.args)
    return all(any(arg == word for arg in remaining) for word in words[1:])


def _sql_matches(rule: PatternRule, statement: sql.Statement) -> bool:
    if not rule.regex and not all(word.lower() in statement.text.lower()
                                  for word in rule.pattern.split()):
        return False  # a word of the pattern is nowhere in the text: no need to lex it
    text = " ".join(statement.words)
    if rule.regex:
        return re.search(rule.pattern, text, re.IGNORECASE) is not None
    # A run of whole words: compare with single spaces around both sides.
    return f" {' '.join(rule.pattern.upper().split())} " in f" {text} "


def _sql_rule_matches(rule: SqlRule, statement: sql.Statement) -> bool:
    if rule.statements and statement.kind not in {k.upper() for k in rule.statements}:
        return False
    if rule.tables and not any(rules.protected_match(t, rule.tables) for t in statement.targets):
        return False
    if rule.without_where:
        return statement.kind in ("UPDATE", "DELETE") and (
            not statement.has_where or statement.where_constant_true)
    return True


def _span(text: str, span: tuple[int, int] | None) -> Span | None:
    if span is None:
        return None
    start, end = span
    return Span(start, end, text[start:end])


def _settled(decision: Decision, verdict: Verdict, approval: str, reason: str) -> Decision:
    return Decision(verdict, decision.rule_id, reason, decision.span, decision.findings, approval)
