"""Shell analysis: what commands a bash command line would really run, and where.

The line is parsed with tree-sitter-bash (a real shell grammar); each simple command's
words are normalised the way bash would expand them (quotes and escapes removed,
`$'..'` decoded, unquoted braces expanded, variables whose value is visible in the line
substituted (arrays, positional parameters, namerefs and `printf -v` too), `$(echo x)` and
`$(pwd)` evaluated, `for` loops over literal lists unrolled), and state is carried through
the line the way bash carries it: the working folder (`cd`, `pushd`, `popd`), symbolic
links made earlier, aliases, functions (a call runs the body with its arguments), files
written and the tools that run them later, the git branch checked out. Each program's argv
is read by its own conventions (`programs`): wrappers are looked through (`sudo -Eu root`,
`timeout -s 9 10`, `flock f -c ...`, `ssh host CMD`), and every
argument that carries code is analysed in turn: `-c` strings, `eval`, `trap`, `alias`,
`xargs` and `find -exec` commands, interpreter code (`code`), scripts fed on stdin or in
a here-document, `git -c alias.x=!...`. What cannot be known before running (a program
name from an unknown variable, decoded bytes piped into a shell, code built at run time)
is reported as a problem, so the policy can ask or fail closed.
"""

from __future__ import annotations

import codecs
import functools
import json
import posixpath
import re
import shlex
import unicodedata
from dataclasses import dataclass, field, replace

import tree_sitter
import tree_sitter_bash

from harness.guardrails import code as inline_code
from harness.guardrails import effects, programs
from harness.guardrails.places import SANDBOX, Places
from harness.sandbox.layout import WORKSPACE
from harness.sandbox.paths import resolve

DYNAMIC = "\x00"
"""Stands in a word for text only known when the command runs."""
FIELD = "\x01"
"""Separates the fields `"${a[@]}"` and `"$@"` expand to, inside quotes too."""
NO_FIELDS = "\x02"
"""What `"${a[@]}"` of an empty array expands to: no field at all, not an empty one."""

MAX_DEPTH = 8
MAX_LOOP_VALUES = 32

DECODERS = frozenset({"base64", "base32", "xxd", "openssl", "gzip", "gunzip", "zcat", "bzip2",
                      "xz", "uudecode", "rev", "tr", "curl", "wget", "nc", "ncat", "socat",
                      "basenc", "od", "perl", "python", "python3", "ruby", "node"})
_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad\u202a-\u202e]")
_STATIC_PRODUCERS = ("echo", "printf", "cat")


Stdin = tuple[str | None, tuple[str, ...] | None]
"""What feeds a command's stdin: static text if known, and the argv of the producer."""


@dataclass(frozen=True)
class Redirect:
    """An output or input redirection of a command."""

    op: str
    target: str


@dataclass(frozen=True)
class Command:
    """A simple command that would run, after normalisation and unwrapping."""

    argv: tuple[str, ...]
    span: tuple[int, int]
    redirects: tuple[Redirect, ...] = ()
    stdin_script: str | None = None
    """Static text fed to this command's stdin (a heredoc, here-string or echo pipe)."""
    stdin_producer: tuple[str, ...] | None = None
    """argv of the command piping into this one."""
    via: tuple[str, ...] = ()
    """The wrappers looked through to reach this command, outermost first."""
    find_roots: tuple[str, ...] = ()
    """For a command run by `find -exec`, the roots find searched."""
    cwd: str = WORKSPACE
    """The folder it runs in (DYNAMIC inside when only known at run time)."""
    branch: str | None = None
    """The git branch checked out when it runs, as far as the line shows."""
    links: tuple[tuple[str, str], ...] = ()
    """Symbolic links made earlier in the line: (link, target)."""
    env: tuple[tuple[str, str], ...] = ()
    """Variables set for this command alone (`NAME=value cmd`, `env NAME=value cmd`)."""
    worktrees: tuple[tuple[str, str], ...] = ()
    """Folders other than the workspace with a branch checked out (`git worktree add`)."""
    places: Places = SANDBOX
    """Where the line runs: the sandbox, or a real host whose paths `path` maps."""
    guessed: bool = False
    """Found in the arguments of a program the guard does not model, which may run it."""

    @functools.cached_property
    def program(self) -> str:
        """The program's base name ('' when empty)."""
        return posixpath.basename(self.argv[0]) if self.argv else ""

    @property
    def args(self) -> tuple[str, ...]:
        """The arguments after the program."""
        return self.argv[1:]

    def path(self, word: str) -> str:
        """An argument as the absolute path it names, in the sandbox's terms (what the
        rules judge): `real_path`, mapped from a host onto the sandbox's layout."""
        return self.places.view(self.real_path(word))

    def real_path(self, word: str) -> str:
        """An argument as the absolute path it names where the command runs: the working
        folder, `~` and symbolic links made earlier in the line resolved."""
        if word == "~" or word.startswith("~/"):
            word = self.places.home + word[1:]
        resolved = resolve(word, self.cwd)
        for link, target in reversed(self.links):
            if resolved == link or resolved.startswith(link.rstrip("/") + "/"):
                return resolve(target + resolved[len(link):], "/")
        return resolved

    def stdin_input(self) -> str | None:
        """The file its standard input is read from (`< FILE`), if any."""
        for redirect in self.redirects:
            if redirect.op == "<":
                return redirect.target
        return None


@dataclass(frozen=True)
class Problem:
    """Something the analysis could not verify."""

    rule_id: str
    reason: str
    span: tuple[int, int]
    guessed: bool = False
    """Found in what a program the guard does not model may run."""


@dataclass
class ShellAnalysis:
    """Every command a line would run, the functions it defines, and what stayed unknown."""

    text: str
    commands: list[Command] = field(default_factory=list)
    functions: dict[str, list[Command]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    sql: list[tuple[str, tuple[int, int], bool, str]] = field(default_factory=list)
    """SQL the line sends to a database, with the span of the command, whether it is
    only what a program the guard does not model may run, and its dialect (`postgres`,
    `mysql`, `sqlite`)."""
    suspect_arguments: list[tuple[str, str, tuple[int, int]]] = field(default_factory=list)
    """(program, argument, span): arguments of programs the analysis does not model that
    read as command lines; the policy judges what they would run."""


@dataclass
class _State:
    """What bash carries from one command of a line to the next."""

    cwd: str = WORKSPACE
    previous: str = WORKSPACE
    moved: bool = False
    """Whether the line changed folder (bash sets OLDPWD, and `~-`, only then)."""
    stack: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    branch: str | None = None
    previous_branch: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    """Files the line wrote with content it shows (`echo X > f`, `cat > f <<EOF`)."""
    git_aliases: dict[str, str] = field(default_factory=dict)
    traps: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    arrays: dict[str, list[str]] = field(default_factory=dict)
    """Indexed arrays the line set (`a=(x y)`, `declare -a`, `a+=(z)`)."""
    namerefs: dict[str, str] = field(default_factory=dict)
    """`declare -n ref=name`: ref stands for the variable name."""
    positional: list[str] | None = None
    """`$1`, `$@`...: set by `set --` or a function call (None: only known at run time)."""
    functions: dict[str, str] = field(default_factory=dict)
    """Functions the line defined: their body, run again with a call's arguments."""

    def fork(self) -> _State:
        """A copy a subshell can change without changing this one."""
        return replace(self, stack=list(self.stack), env=dict(self.env), links=list(self.links),
                       aliases=dict(self.aliases), files=dict(self.files),
                       git_aliases=dict(self.git_aliases), traps=list(self.traps),
                       worktrees=dict(self.worktrees),
                       arrays={k: list(v) for k, v in self.arrays.items()},
                       namerefs=dict(self.namerefs), functions=dict(self.functions),
                       positional=None if self.positional is None else list(self.positional))
    worktrees: dict[str, str] = field(default_factory=dict)
    """Folders `git worktree add` checked a branch out in."""


@functools.cache
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


def analyse(text: str, *, cwd: str = WORKSPACE, branch: str | None = None,
            places: Places = SANDBOX) -> ShellAnalysis:
    """Analyse one shell command line, run in `cwd` (among `places`) with `branch`
    checked out."""
    analysis = ShellAnalysis(text)
    cleaned = _ZERO_WIDTH.sub("", text)
    if cleaned != text:
        analysis.problems.append(Problem(
            "shell.hidden-characters", "the command contains invisible (zero-width or "
            "direction) characters", (0, len(text))))
    state = _State(cwd=cwd, previous=cwd, branch=branch)
    try:
        _Walker(analysis, _join_continued_lines(cleaned), depth=0, outer_span=None,
                state=state, places=places).run()
    except RecursionError:
        analysis.problems.append(Problem(
            "shell.unparseable", "the command is nested too deeply to analyse", (0, len(text))))
    return analysis


class _Walker:
    def __init__(self, analysis: ShellAnalysis, text: str, *, depth: int,
                 outer_span: tuple[int, int] | None, state: _State,
                 via: tuple[str, ...] = (), places: Places = SANDBOX,
                 guessing: bool = False) -> None:
        self.analysis = analysis
        self.places = places
        self.guessing = guessing
        """Reading what a program the guard does not model may run."""
        self.text = text
        self.source = text.encode()
        self.depth = depth
        self.outer_span = outer_span
        self.state = state
        self.via = via
        self._ascii = self.source.isascii()

    @property
    def env(self) -> dict[str, str]:
        return self.state.env

    # ------------------------------------------------------------ parsing

    def run(self) -> None:
        if self.depth > MAX_DEPTH:
            self._problem("shell.unparseable", "commands nested too deeply to analyse",
                          (0, len(self.text)))
            return
        tree = _parser().parse(self.source)
        root = tree.root_node
        if root.has_error:
            bad = _first_error(root)
            span = self._span(bad) if bad is not None else (0, len(self.text))
            self._problem("shell.unparseable",
                          "the command cannot be parsed (unbalanced quotes or brackets?)", span)
            return
        pending = len(self.state.traps)
        self._visit(root)
        for code, span in self.state.traps[pending:]:
            self._nested_text(span, code, "trap")

    def _span(self, node: tree_sitter.Node) -> tuple[int, int]:
        if self.outer_span is not None:
            return self.outer_span
        if self._ascii:
            return node.start_byte, node.end_byte
        return (len(self.source[: node.start_byte].decode(errors="replace")),
                len(self.source[: node.end_byte].decode(errors="replace")))

    def _problem(self, rule_id: str, reason: str, span: tuple[int, int]) -> None:
        self.analysis.problems.append(Problem(rule_id, reason, span, self.guessing))

    def _sql(self, text: str, span: tuple[int, int], dialect: str = "postgres") -> None:
        self.analysis.sql.append((text, span, self.guessing, dialect))

    def _node_text(self, node: tree_sitter.Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode(errors="replace")

    # ------------------------------------------------------------ walking

    def _visit(self, node: tree_sitter.Node, stdin: Stdin = (None, None)) -> list[Command]:
        kind = node.type
        if kind == "command":
            return self._command(node, (), stdin)
        if kind == "redirected_statement":
            return self._redirected(node, stdin)
        if kind == "pipeline":
            return self._pipeline(node)
        if kind == "variable_assignment":
            self._assign(node)
            return []
        if kind == "declaration_command":
            self._declare(node)
            return []
        if kind == "unset_command":  # the grammar's own node for `unset NAME...`
            words = [w for child in node.named_children for w in self._word(child)]
            self._carry(Command(("unset", *words), self._span(node), cwd=self.state.cwd,
                                places=self.places))
            return []
        if kind == "subshell":
            return self._isolated(lambda: self._children(node))
        if kind == "for_statement":
            return self._for(node)
        if kind == "function_definition":
            name_node = node.child_by_field_name("name")
            body = node.child_by_field_name("body")
            name = self._node_text(name_node) if name_node else ""
            commands = self._isolated(lambda: self._visit(body)) if body is not None else []
            self.analysis.functions[name] = commands
            if body is not None:
                self.state.functions[name] = self._node_text(body)
            return []
        if kind == "list":
            # `a && b && c ...` nests to the left: walk that spine without recursing.
            produced: list[Command] = []
            spine = [node]
            while spine[-1].named_children and spine[-1].named_children[0].type == "list":
                spine.append(spine[-1].named_children[0])
            for index, part in enumerate(reversed(spine)):
                for child in part.named_children[(1 if index else 0):]:
                    if not (index == 0 and child.type == "list"):
                        produced.extend(self._visit(child))
            return produced
        return self._children(node)

    def _children(self, node: tree_sitter.Node) -> list[Command]:
        produced: list[Command] = []
        for child in node.named_children:
            produced.extend(self._visit(child))
        return produced

    def _isolated(self, action: functools.partial[list[Command]] | object) -> list[Command]:
        """Run `action` on a copy of the state (a subshell: its cd does not leak)."""
        saved = self.state
        self.state = saved.fork()
        try:
            return action()  # type: ignore[operator]
        finally:
            self.state = saved

    def _for(self, node: tree_sitter.Node) -> list[Command]:
        variable = node.child_by_field_name("variable")
        body = node.child_by_field_name("body")
        name = self._node_text(variable) if variable is not None else ""
        values: list[str] = []
        for child in node.named_children:
            if child in (variable, body) or child.type in ("do_group", "compound_statement"):
                continue
            values.extend(self._word(child))
        produced: list[Command] = []
        if body is None:
            return produced
        if not values or len(values) > MAX_LOOP_VALUES or any(DYNAMIC in v for v in values):
            self.env[name] = DYNAMIC
            return self._visit(body)
        for value in values:
            self.env[name] = value
            produced.extend(self._visit(body))
        return produced

    def _assign(self, node: tree_sitter.Node, *, nameref: bool = False) -> None:
        name_node = node.child_by_field_name("name")
        value_node = node.child_by_field_name("value")
        if name_node is None:
            return
        appending = any(c.type == "+=" for c in node.children)
        if name_node.type == "subscript":  # a[$(cmd)]=x runs cmd
            self._visit_expansions(name_node)
            self._assign_element(name_node, value_node)
            return
        name = self._node_text(name_node)
        if name == "PGOPTIONS" and value_node is not None and \
                "session_replication_role" in self._node_text(value_node):
            self._problem("sql.replication-role", "PGOPTIONS sets session_replication_role for "
                          "every PostgreSQL session started after it: triggers and foreign "
                          "keys stop firing", self._span(node))
        if value_node is not None and value_node.type == "array":
            elements = [w for child in value_node.named_children for w in self._word(child)]
            before = self.state.arrays.get(name, []) if appending else []
            self.state.arrays[name] = before + elements
            self.env[name] = self.state.arrays[name][0] if self.state.arrays[name] else ""
            return
        value = "".join(self._word(value_node, split=False)) if value_node is not None else ""
        if nameref:
            self.state.namerefs[name] = value
            return
        if name in self.state.namerefs:  # assigning to ref assigns the variable it names
            name = self.state.namerefs[name]
        if appending:
            value = self._known().get(name, DYNAMIC) + value
        self.env[name] = value
        if name in self.state.arrays:
            self.state.arrays[name][:1] = [value]

    def _assign_element(self, subscript: tree_sitter.Node, value_node: tree_sitter.Node | None
                        ) -> None:
        """`a[2]=x`: one element of an array."""
        name_node = subscript.child_by_field_name("name")
        index_node = subscript.child_by_field_name("index")
        name = self._node_text(name_node) if name_node is not None else ""
        value = "".join(self._word(value_node, split=False)) if value_node is not None else ""
        index = "".join(self._word(index_node, split=False)) if index_node is not None else ""
        elements = self.state.arrays.setdefault(name, [])
        if not index.isdigit() or int(index) > len(elements):
            self.state.arrays[name] = [DYNAMIC]  # which element, or a sparse array
            return
        elements[int(index) : int(index) + 1] = [value]

    def _declare(self, node: tree_sitter.Node) -> None:
        """`declare`, `local`, `typeset`, `export`, `readonly`: assignments, with `-n`
        making a name stand for another variable."""
        flags = "".join(self._node_text(c)[1:] for c in node.named_children
                        if c.type == "word" and self._node_text(c).startswith("-"))
        for child in node.named_children:
            if child.type == "variable_assignment":
                self._assign(child, nameref="n" in flags)
            elif child.type != "word":
                self._visit_expansions(child)

    def _pipeline(self, node: tree_sitter.Node) -> list[Command]:
        produced: list[Command] = []
        previous: list[Command] = []
        for child in node.named_children:
            feed: Stdin = (_echo_output(previous), _origin(previous[-1])) if previous \
                else (None, None)
            previous = self._isolated(functools.partial(self._visit, child, feed))
            produced.extend(previous)
        return produced

    def _redirected(self, node: tree_sitter.Node, stdin: Stdin) -> list[Command]:
        redirects: list[Redirect] = []
        script: str | None = stdin[0]
        body = node.child_by_field_name("body")
        for child in node.named_children:
            if child == body:
                continue
            if child.type == "file_redirect":
                op = "".join(self._node_text(c) for c in child.children if not c.is_named)
                destination = child.child_by_field_name("destination")
                target = "".join(self._word(destination, split=False)) if destination else ""
                redirects.append(Redirect(op or ">", target))
            elif child.type == "heredoc_redirect":
                text_parts = [c for c in child.named_children if c.type == "heredoc_body"]
                heredoc = self._node_text(text_parts[0]) if text_parts else ""
                script = heredoc
                for inner in child.named_children:
                    if inner.type in ("pipeline", "command", "list"):
                        # `cat <<EOF | sh`: the heredoc feeds the first command of the pipe.
                        self._heredoc_pipeline(inner, heredoc)
                        script = None
                    elif inner.type == "heredoc_body":
                        for sub in inner.named_children:
                            self._visit(sub)
            elif child.type == "herestring_redirect":
                script = " ".join("".join(self._word(w, split=False))
                                  for w in child.named_children) + "\n"
        if body is None:  # `> file`: a command of redirections only, as `: > file`
            return self._null(node, tuple(redirects))
        if body.type == "command":
            return self._command(body, tuple(redirects), (script, stdin[1]),
                                 trailing=self._dropped_words(node, body))
        if body.type == "list" and body.named_children and \
                body.named_children[-1].type == "command":
            # `a && b < f` (as the grammar groups it): the redirection is b's.
            produced = []
            for child in body.named_children[:-1]:
                produced.extend(self._visit(child))
            return produced + self._command(body.named_children[-1], tuple(redirects),
                                            (script, stdin[1]))
        produced = self._visit(body, (script, stdin[1]))
        if not redirects or not produced:
            return produced
        if body.type in ("list", "pipeline"):
            # `a && b > f` (as the grammar groups it): the redirection is b's.
            return produced[:-1] + self._attach(produced[-1:], tuple(redirects))
        return self._attach(produced, tuple(redirects))

    def _attach(self, commands: list[Command], redirects: tuple[Redirect, ...]
                ) -> list[Command]:
        """Give recorded commands redirections that apply to them (a compound statement's,
        or the last command of a list's)."""
        changed = []
        for command in commands:
            updated = replace(command, redirects=command.redirects + redirects)
            for index, recorded in enumerate(self.analysis.commands):
                if recorded is command:
                    self.analysis.commands[index] = updated
            changed.append(updated)
        return changed

    def _heredoc_pipeline(self, node: tree_sitter.Node, script: str) -> None:
        if node.type == "command":
            self._command(node, (), (script, ("cat",)))
            return
        children = list(node.named_children)
        if not children:
            return
        first = self._command(children[0], (), (script, ("cat",))) \
            if children[0].type == "command" else self._visit(children[0])
        previous = first
        for child in children[1:]:
            feed: Stdin = (_echo_output(previous), previous[-1].argv) if previous \
                else (None, None)
            previous = self._visit(child, feed)

    def _null(self, node: tree_sitter.Node, redirects: tuple[Redirect, ...]) -> list[Command]:
        """Redirections with no command (`> file`, `>| file`): they open (and truncate)
        their files all the same."""
        if not redirects:
            return []
        return self._expand(Command((":",), self._span(node), redirects, None, None, self.via,
                                    (), self.state.cwd, self.state.branch,
                                    tuple(self.state.links), (),
                                    tuple(self.state.worktrees.items()), self.places))

    def _dropped_words(self, node: tree_sitter.Node, body: tree_sitter.Node
                       ) -> tuple[str, ...]:
        """Words between a command and its redirections that the grammar leaves out of
        both (`psql -f - <<EOF` parses as `psql -f` and the heredoc)."""
        following = [c for c in node.children if c.start_byte >= body.end_byte]
        if not following:
            return ()
        gap = self.source[body.end_byte : following[0].start_byte].decode(errors="replace")
        words = gap.split()
        return tuple(words) if all(re.fullmatch(r"[\w./=+-]+", w) for w in words) else ()

    def _command(self, node: tree_sitter.Node, redirects: tuple[Redirect, ...],
                 stdin: Stdin, trailing: tuple[str, ...] = ()) -> list[Command]:
        argv: list[str] = []
        local_env: dict[str, str] = {}
        extra_redirects = list(redirects)
        script = stdin[0]
        word_nodes: list[tree_sitter.Node] = []
        for child in node.named_children:
            if child.type == "variable_assignment":
                name_node = child.child_by_field_name("name")
                value_node = child.child_by_field_name("value")
                if name_node is not None:
                    value = "".join(self._word(value_node, split=False)) if value_node else ""
                    local_env[self._node_text(name_node)] = value
            elif child.type == "command_name":
                word_nodes.append(child.named_children[0] if child.named_children else child)
            elif child.type == "herestring_redirect":
                script = " ".join("".join(self._word(w, split=False))
                                  for w in child.named_children) + "\n"
            elif child.type == "file_redirect":
                destination = child.child_by_field_name("destination")
                op = "".join(self._node_text(c) for c in child.children if not c.is_named)
                target = "".join(self._word(destination, split=False)) if destination else ""
                extra_redirects.append(Redirect(op or ">", target))
            else:
                word_nodes.append(child)
        for group in _adjacent_groups(word_nodes):
            segments: list[tuple[str, bool]] = []
            for member in group:
                if segments and segments[-1][0].endswith("$") and member.type == "word":
                    # The grammar sometimes cuts `-rf$IFS/` into `-rf$` and `IFS/`.
                    text, _ = segments.pop()
                    segments.append((text[:-1], False))
                    segments.extend(self._unquoted_text("$" + self._node_text(member)))
                else:
                    segments.extend(self._segments(member))
            braces = _unquoted_braces(
                self.source[group[0].start_byte : group[-1].end_byte].decode(errors="replace"))
            for one in _join_segments(segments, self._ifs()):
                argv.extend(_brace_expand(one) if braces and "{" in one and "," in one
                            else [one])
        argv.extend(trailing)
        if not argv:
            self.env.update(local_env)
            return self._null(node, tuple(extra_redirects))
        if argv[0] in self.state.aliases and self.via[-1:] != ("alias",):
            text = self.state.aliases[argv[0]] + " " + " ".join(_quote(a) for a in argv[1:])
            self._nested_text(self._span(node), text, "alias")
        if any(c in argv[0] for c in "*?[") and argv[0] not in ("[", "[["):
            self._problem("shell.dynamic-command", f"the program name {argv[0]!r} is a "
                          "pattern, only resolved when the command runs", self._span(node))
        command = Command(tuple(argv), self._span(node), tuple(extra_redirects), script,
                          stdin[1], self.via, (), self.state.cwd, self.state.branch,
                          tuple(self.state.links), tuple(local_env.items()),
                          tuple(self.state.worktrees.items()), self.places)
        self._remember_written(command)
        return self._expand(command)

    def _remember_written(self, command: Command) -> None:
        """`echo X > f`, `printf ... >> f`, `cat > f <<EOF`, `tee f`: the line now knows what
        f holds, so running it later in the line is judged by that."""
        content = None
        if command.program in ("echo", "printf"):
            content = _echo_output([command])
        elif command.program in ("cat", "tee") and command.stdin_script is not None:
            content = command.stdin_script
        if content is None or DYNAMIC in content:
            return
        targets = [r for r in command.redirects if r.op in (">", ">>", ">|", "&>")]
        if command.program == "tee":
            targets += [Redirect(">>" if "-a" in command.args else ">", a)
                        for a in command.args if not a.startswith("-")]
        for redirect in targets:
            if DYNAMIC in redirect.target:
                continue
            path = command.path(redirect.target)
            before = self.state.files.get(path, "") if redirect.op == ">>" else ""
            self.state.files[path] = before + content

    # ------------------------------------------------------------ words

    def _word(self, node: tree_sitter.Node | None, *, split: bool = True) -> list[str]:
        """The fields a word expands to: unquoted expansions are split on the IFS
        characters and unquoted brace lists expanded."""
        if node is None:
            return [""]
        fields = _join_segments(self._segments(node), self._ifs())
        if not split:
            return [" ".join(fields)]
        expanded: list[str] = []
        braces = _unquoted_braces(self._node_text(node))
        for one in fields:
            expanded.extend(_brace_expand(one) if braces and "{" in one and "," in one
                            else [one])
        return expanded

    def _segments(self, node: tree_sitter.Node) -> list[tuple[str, bool]]:
        """(text, split-on-blanks) pieces of a word, in order."""
        kind = node.type
        if kind in ("word", "number", "file_descriptor", "test_operator", "regex",
                    "extglob_pattern"):
            return self._unquoted_text(self._node_text(node))
        if kind == "raw_string":
            return [(self._node_text(node)[1:-1], False)]
        if kind == "ansi_c_string":
            return [(_decode_ansi_c(self._node_text(node)[2:-1]), False)]
        if kind == "string":
            if not node.named_children:
                return [(self._node_text(node)[1:-1], False)]
            return [("".join(self._string_part(child) for child in node.named_children), False)]
        if kind == "translated_string":
            return self._segments(node.named_children[0]) if node.named_children else []
        if kind in ("simple_expansion", "expansion"):
            return [(self._expansion(node), True)]
        if kind == "command_substitution":
            return [(self._substitution(node), True)]
        if kind == "process_substitution":
            feed: Stdin = (None, ("?",)) if self._node_text(node).startswith(">(") \
                else (None, None)
            self._isolated(lambda: [c for child in node.named_children
                                    for c in self._visit(child, feed)])
            return [(DYNAMIC + "/dev/fd", False)]
        if kind == "arithmetic_expansion":
            self._visit_expansions(node)
            # Arithmetic evaluates variables' values as expressions, subscripts included:
            # `x='a[$(cmd)]'; $(( x ))` runs cmd.
            for name in re.findall(r"[A-Za-z_]\w*", self._node_text(node)):
                value = self.env.get(name, "")
                if "$(" in value or "`" in value:
                    self._unquoted_text(value)
            return [(DYNAMIC, False)]
        if kind == "concatenation":
            pieces: list[tuple[str, bool]] = []
            for child in node.children:  # unnamed children are literal text such as a `$`
                pieces.extend(self._segments(child) if child.is_named
                              else [(self._node_text(child), False)])
            return pieces
        # Anything else (arrays, test expressions...): its text, after its substitutions.
        self._visit_expansions(node)
        return [(_unescape(self._node_text(node)), False)]

    def _unquoted_text(self, text: str) -> list[tuple[str, bool]]:
        """An unquoted word: escapes removed, a leading ~ expanded, and `$NAME` inside it
        expanded (the grammar leaves some of those as plain text)."""
        if text.startswith("~"):
            text = self._tilde(text)
        if "`" in text or "$(" in text:
            # Substitutions the grammar left inside plain text (`${x:-`cmd`}`): they run.
            for inner in re.findall(r"`([^`]*)`|\$\(([^()]*)\)", text):
                self._nested_text(self.outer_span or (0, len(self.text)), inner[0] or inner[1],
                                  "command substitution")
            text = re.sub(r"`[^`]*`|\$\([^()]*\)", DYNAMIC, text)
        if "$" not in text:
            return [(_unescape(text), False)]
        pieces: list[tuple[str, bool]] = []
        last = 0
        for match in _VARIABLE.finditer(text):
            if match.start() > 0 and text[match.start() - 1] == "\\":
                continue
            pieces.append((_unescape(text[last : match.start()]), False))
            name = match.group(1) or match.group(2)
            pieces.append((self._known().get(name, DYNAMIC), True))
            last = match.end()
        pieces.append((_unescape(text[last:]), False))
        return pieces

    def _tilde(self, text: str) -> str:
        """bash's tilde expansion of a word's start: `~`, `~+` (the working folder), `~-`
        (the previous one, once the line changed folder), `~user`."""
        prefix, slash, rest = text.partition("/")
        if prefix == "~":
            home = self._known().get("HOME", self.places.home)
            return home + slash + rest if DYNAMIC not in home else DYNAMIC + slash + rest
        if prefix == "~+":
            return self.state.cwd + slash + rest
        if prefix == "~-":
            return self.state.previous + slash + rest if self.state.moved else text
        if re.fullmatch(r"~[a-z_][\w.-]*", prefix):
            return self.places.user_home(prefix[1:]) + slash + rest
        return text

    def _ifs(self) -> str:
        return self.env.get("IFS", " \t\n") if DYNAMIC not in self.env.get("IFS", "") \
            else " \t\n"

    def _known(self) -> dict[str, str]:
        known = {**_well_known(self.places), "PWD": self.state.cwd,
                 **({"OLDPWD": self.state.previous} if self.state.moved else {}), **self.env}
        positional = self.state.positional
        if positional is not None:
            known.update({str(n): "" for n in range(1, 10)})
            known.update({str(n): arg for n, arg in enumerate(positional, 1)})
            known.update({"@": FIELD.join(positional) or NO_FIELDS, "*": " ".join(positional),
                          "#": str(len(positional))})
        for ref, target in self.state.namerefs.items():
            known[ref] = known.get(target, DYNAMIC)
        return known

    def _string_part(self, node: tree_sitter.Node) -> str:
        if node.type == "string_content":
            return re.sub(r'\\([$`"\\\n])', r"\1", self._node_text(node))
        if node.type in ("simple_expansion", "expansion"):
            return self._expansion(node)  # "$@" keeps its fields apart
        return "".join(self._word(node, split=False))

    def _expansion(self, node: tree_sitter.Node) -> str:
        names = [c for c in node.named_children
                 if c.type in ("variable_name", "special_variable_name")]
        subscripts = [c for c in node.named_children if c.type == "subscript"]
        if subscripts and not names:
            return self._element(node, subscripts[0])
        if not names:
            self._visit_expansions(node)
            return DYNAMIC
        name = self._node_text(names[0])
        extra = [c for c in node.named_children if c is not names[0]]
        known = self._known()
        whole = self._node_text(node)
        if name in ("@", "*") and whole.startswith("${") and len(whole) > 4:
            # ${@:2}, ${*:1:2}: a slice of the positional parameters, counted from $0.
            slice_ = re.fullmatch(r"\$\{[@*]:\s*(\d+)(?::\s*(\d+))?\}", whole)
            if slice_ is None or self.state.positional is None:
                return DYNAMIC
            start, count = int(slice_.group(1)), slice_.group(2)
            chosen = [DYNAMIC, *self.state.positional][start:]  # $0 is not known
            chosen = chosen[: int(count)] if count is not None else chosen
            return (FIELD if name == "@" else " ").join(chosen) or NO_FIELDS
        if whole.startswith("${!"):  # ${!v}: the variable v names
            target = known.get(name)
            return known.get(target, DYNAMIC) if target and DYNAMIC not in target else DYNAMIC
        transformed = _transform(whole, name, known)
        if transformed is not None:
            for child in extra:
                self._visit_expansions(child)
            return transformed
        if extra:
            for child in extra:
                self._visit_expansions(child)
            operator = self._node_text(node)[2 + len(name):][:2]
            defaults = [c for c in extra if c.type not in ("variable_name",)] if (
                operator in (":-", "-") or operator.startswith("-")) else []
            default = "".join(self._word(defaults[-1], split=False)) if defaults else None
            if name in known and name in _UNSET_MAYBE and name not in self.env and \
                    default is not None and default != known[name]:
                # Known only by convention (TMPDIR may well be unset): either value.
                return DYNAMIC
            if name in known:
                return known[name]
            # ${X:-default}: X is not set anywhere the line or the harness shows, so bash
            # takes the default.
            return default if default is not None else DYNAMIC
        return known.get(name, DYNAMIC)

    def _element(self, node: tree_sitter.Node, subscript: tree_sitter.Node) -> str:
        """`${a[0]}`, `${a[@]}`, `${a[*]}`, `${a[@]:1:2}`, `${#a[@]}` of an array the line
        set (a plain variable is an array of one)."""
        self._visit_expansions(subscript)
        name_node = subscript.child_by_field_name("name")
        index_node = subscript.child_by_field_name("index")
        name = self._node_text(name_node) if name_node is not None else ""
        name = self.state.namerefs.get(name, name)
        known = self._known()
        elements = self.state.arrays.get(name)
        if elements is None:
            elements = [known[name]] if name in known else None
        whole = self._node_text(node)
        after = self.source[subscript.end_byte : node.end_byte].decode(errors="replace")[:-1]
        if elements is None or whole.startswith("${!") or (after and not re.fullmatch(
                r":\s*\d+(:\s*\d+)?", after)):
            return DYNAMIC
        index = "".join(self._word(index_node, split=False)) if index_node is not None else ""
        if index not in ("@", "*"):
            if whole.startswith("${#") or after or not re.fullmatch(r"-?\d+", index):
                return DYNAMIC
            position = int(index)
            return elements[position] if -len(elements) <= position < len(elements) else ""
        if after:
            numbers = [int(n) for n in after[1:].replace(" ", "").split(":")]
            elements = elements[numbers[0] :][: numbers[1]] if len(numbers) > 1 else \
                elements[numbers[0] :]
        if whole.startswith("${#"):
            return str(len(elements))
        if not elements:
            return NO_FIELDS if index == "@" else ""
        return (FIELD if index == "@" else " ").join(elements)

    def _substitution(self, node: tree_sitter.Node) -> str:
        inner = self._isolated(functools.partial(self._visit_inner, node))
        if len(inner) == 1 and not inner[0].redirects:
            only = inner[0]
            if only.program in ("echo", "printf"):
                output = _echo_output(inner)
                if output is not None and DYNAMIC not in output:
                    return output.rstrip("\n")
            if only.program == "pwd":
                return self.state.cwd
            if only.program == "mktemp":
                made = programs.parse("mktemp", only.args)
                folder = made.value("-p", "--tmpdir") or self.places.tmp
                return posixpath.join(only.real_path(folder), "tmp." + DYNAMIC)
            if only.program in ("dirname", "basename", "realpath", "readlink") and \
                    only.args and DYNAMIC not in only.args[-1]:
                path = only.real_path(only.args[-1])
                return posixpath.dirname(path) if only.program == "dirname" else \
                    posixpath.basename(path) if only.program == "basename" else path
            if only.program == "git" and self.state.branch and _names_branch(only.args):
                return self.state.branch
            if only.program == "git" and only.args == ("rev-parse", "--show-toplevel") and \
                    only.path(".").startswith(WORKSPACE) and DYNAMIC not in only.cwd:
                return self.places.workspace
        return DYNAMIC

    def _visit_inner(self, node: tree_sitter.Node) -> list[Command]:
        produced: list[Command] = []
        for child in node.named_children:
            produced.extend(self._visit(child))
        return produced

    def _visit_expansions(self, node: tree_sitter.Node) -> None:
        if node.type in ("command_substitution", "process_substitution"):
            self._isolated(functools.partial(self._visit_inner, node))
            return
        for child in node.named_children:
            self._visit_expansions(child)

    # ------------------------------------------------------------ running

    def _expand(self, command: Command) -> list[Command]:
        """Record `command` and whatever it runs in turn; carry its effect on the state."""
        if self.guessing and not command.guessed:
            command = replace(command, guessed=True)
        self.analysis.commands.append(command)
        produced = [command]
        program = command.program
        if not command.argv[0] or DYNAMIC in command.argv[0]:
            self._problem("shell.dynamic-command",
                          "the program to run is only known at run time "
                          f"({_show(command.argv[0])})", command.span)
            return produced
        self._carry(command)
        self._environment_code(command)
        if command.argv[0] in self.state.functions and command.via[-1:] not in (
                ("command",), ("builtin",)):
            self._call(command)
            return produced
        conventions = programs.spec(program)
        parsed = programs.parse(program, command.args)
        if "/" in command.argv[0] and command.path(command.argv[0]) in self.state.files:
            self._run_file(command, command.argv[0], _language_of(
                self.state.files[command.path(command.argv[0])]), command.argv[0])
        unmodelled = program not in programs.PROGRAMS and program not in _HANDLERS and \
            program not in _DATA_PROGRAMS
        if unmodelled:
            for arg in command.args:
                if " " in arg.strip() and DYNAMIC not in arg and _reads_as_command(arg):
                    self.analysis.suspect_arguments.append((program, arg, command.span))
        for option, value in parsed.options:
            language = conventions.code.get(option)
            if language is not None and value is not None:
                self._code(command, language, value, f"{program} {option}")
        if conventions.runs == "script" and conventions.stdin == "shell":
            self._startup(command, parsed)
        for flag, language in conventions.flag_code.items():
            if parsed.has("-" + flag) and parsed.operands:
                self._code(command, language, parsed.operands[0], f"{program} -{flag}")
                return produced
        if self.state.files:
            self._project_code(command, parsed)
        handler = _HANDLERS.get(program)
        if handler is not None:
            produced += handler(self, command, parsed)
            return produced
        if conventions.runs in ("argv", "string") and parsed.rest:
            if conventions.runs == "string":
                self._nested(command, " ".join(parsed.rest), program)
            else:
                produced += self._expand(_derive(command, tuple(parsed.rest), program))
        elif conventions.runs == "strings":
            for operand in parsed.operands:
                self._nested(command, operand, program)
        elif conventions.runs == "script":
            produced += self._script(command, parsed, conventions)
        elif conventions.runs and conventions.runs.startswith("code:") and parsed.operands \
                and not parsed.value("-f", "--file"):
            self._code(command, conventions.runs[5:], parsed.operands[0], program)
        elif conventions.stdin and not parsed.operands:
            self._stdin_code(command, conventions.stdin)
        for subcommand, skip in programs.RUNNERS.get(program, {}).items():
            words = subcommand.split()
            if parsed.operands[: len(words)] == words:
                inner = _runner_command(program, command.args, words, skip)
                if inner:
                    produced += self._expand(_derive(command, tuple(inner),
                                                     f"{program} {subcommand}"))
                return produced
        if unmodelled and not self.guessing:
            produced += self._guess(command)
        return produced

    def _call(self, command: Command) -> None:
        """A function the line defined, called: its body runs in this shell with the
        call's arguments as `$1`, `$@`... (a function calling itself is read once)."""
        name = command.argv[0]
        how = f"function {name}"
        if how in self.via or self.depth >= MAX_DEPTH:
            return
        saved = self.state.positional
        self.state.positional = list(command.args)
        try:
            _Walker(self.analysis, self.state.functions[name], depth=self.depth + 1,
                    outer_span=command.span, state=self.state, via=(*self.via, how),
                    places=self.places, guessing=self.guessing).run()
        finally:
            self.state.positional = saved

    def _guess(self, command: Command) -> list[Command]:
        """A program the guard does not model whose arguments hold a command a rule
        judges (`some-wrapper rm -rf /etc`, `foo --flag psql -c ...`): it may run it. That
        command is read, marked as guessed, so that what it would do asks for approval."""
        produced: list[Command] = []
        tried = 0
        for index, arg in enumerate(command.args):
            if tried >= _MAX_GUESSES or (tried and len(command.args) - index > 256):
                break  # later tails are suffixes of the first: read long ones once
            if not _names_program(arg):
                continue
            tried += 1
            tails = [command.args[index:]]
            if command.args[index + 1 : index + 2] == ("--",):  # `--exec rm -- -rf /x`
                tails.append((arg, *command.args[index + 2 :]))
            self.guessing = True
            try:
                for argv in tails:
                    produced += self._expand(replace(
                        _derive(command, argv, f"{command.program}, which may run it"),
                        redirects=(), stdin_script=None, stdin_producer=None))
            finally:
                self.guessing = False
        return produced

    def _carry(self, command: Command) -> None:
        """What a command changes for the commands after it in the same shell."""
        state, program, args = self.state, command.program, command.args
        if program in ("cd", "pushd"):
            operands = [a for a in args if not a.startswith("-") or a == "-"]
            home = self._known().get("HOME", self.places.home)
            target = operands[0] if operands else (home if program == "cd" else state.previous)
            destination = state.previous if target == "-" else command.real_path(target)
            if ({**self._known(), **dict(command.env)}.get("CDPATH")
                    and not target.startswith(("/", "."))):
                destination = DYNAMIC + "/" + target  # CDPATH decides where it goes
            if program == "pushd":
                state.stack.append(state.cwd)
            state.previous, state.cwd, state.moved = state.cwd, destination, True
        elif program == "popd" and state.stack:
            state.previous, state.cwd, state.moved = state.cwd, state.stack.pop(), True
        elif program == "ln":
            parsed = programs.parse("ln", args)
            if parsed.has("-s", "--symbolic") and len(parsed.operands) >= 2:
                target, link = parsed.operands[0], command.real_path(parsed.operands[-1])
                target_path = resolve(target, posixpath.dirname(link)) \
                    if not target.startswith("/") else resolve(target, "/")
                state.links.append((link, target_path))
        elif program == "git":
            branch = _checked_out(args)
            if branch == "-":
                branch = state.previous_branch
            if branch is not None:
                state.previous_branch, state.branch = state.branch, branch
            words = [a for a in args if not a.startswith("-")]
            if words[:2] == ["worktree", "add"] and len(words) >= 4:
                state.worktrees[command.path(words[2])] = words[3]
        elif program in ("declare", "typeset", "local", "readonly"):
            nameref = "-n" in args or any(a.startswith("-") and "n" in a for a in args)
            for arg in args:
                name, equals, value = arg.partition("=")
                if equals and not name.startswith("-"):
                    state.env[name] = self._known().get(value, DYNAMIC) if nameref else value
        elif program == "hash":
            parsed = programs.parse("hash", args)
            path = parsed.value("-p")
            for name in parsed.operands if path else ():
                state.aliases[name] = path or ""
        elif program == "export":
            for arg in args:
                name, equals, value = arg.partition("=")
                if equals:
                    state.env[name] = value
        elif program == "unset":
            functions = "-f" in args
            for name in (a for a in args if not a.startswith("-")):
                if functions:
                    state.functions.pop(name, None)
                    continue
                state.namerefs.pop(name, None)
                state.arrays[name] = []  # unset: it expands to nothing from now on
                state.env[name] = ""
        elif program == "set" and (args[:1] == ("--",) or (
                args and not args[0].startswith(("-", "+")))):
            state.positional = list(args[1:] if args[0] == "--" else args)
        elif program == "shift" and state.positional is not None:
            count = args[0] if args else "1"
            state.positional = state.positional[int(count):] if count.isdigit() else None
        elif program == "printf" and args[:1] == ("-v",) and len(args) >= 3:
            output = _echo_output([replace(command, argv=("printf", *args[2:]))])
            state.env[args[1]] = output if output is not None else DYNAMIC

    # ------------------------------------------------------------ code

    def _nested(self, command: Command, script: str, how: str) -> None:
        if DYNAMIC in script:
            self._problem("shell.dynamic-command",
                          f"{how} runs text that is only known at run time", command.span)
            return
        self._nested_text(command.span, script, how)

    def _nested_text(self, span: tuple[int, int], script: str, how: str) -> None:
        state = self.state.fork()
        _Walker(self.analysis, _ZERO_WIDTH.sub("", script), depth=self.depth + 1,
                outer_span=span, state=state, via=(*self.via, how), places=self.places,
                guessing=self.guessing).run()

    def _code(self, command: Command, language: str, text: str, how: str) -> None:
        """Code handed to a program: analysed in its own language."""
        if language == "shell":
            self._nested(command, text, how)
        elif language == "sql":
            self._sql(text, command.span)
        elif language == "mysql":
            self._sql(text, command.span, "mysql")
        elif language == "sqlite":
            # The sqlite3 shell: dot-commands (`.shell CMD` runs one) and SQL.
            lines = text.splitlines()
            dots = "\n".join(line for line in lines if line.lstrip().startswith("."))
            statements = "\n".join(line for line in lines if not line.lstrip().startswith("."))
            if dots:
                self._inline(command, "sqlite", dots, how)
            if statements.strip():
                self._sql(statements, command.span, "sqlite")
        elif language == "argv-string":
            if DYNAMIC in text:
                self._nested(command, text, how)
            else:
                self._nested(command, text, how)
        elif language == "git-config":
            self._git_config(command, text, how)
        elif language == "tar-action":
            if text.startswith("exec="):
                self._nested(command, text[5:], how)
        else:
            if DYNAMIC in text:
                self._problem("shell.unverifiable-code",
                              f"{how} runs {language} code only known at run time",
                              command.span)
                return
            self._inline(command, language, text, how)

    def _inline(self, command: Command, language: str, text: str, how: str) -> None:
        effects = inline_code.scan(language, unicodedata.normalize("NFKC", text),
                                   depth=self.depth)
        if effects.decode_exec:
            self._problem("shell.decode-exec", f"{how}: the code decodes data and runs it",
                          command.span)
        if effects.fork_loop:
            self._problem("shell.fork-bomb", f"{how}: the code forks in a loop", command.span)
        for statement in effects.sql:
            self._sql(statement, command.span)
        for reason in effects.unverifiable:
            self._problem("shell.unverifiable-code", f"{how}: {reason}", command.span)
        for line in effects.shell:
            self._nested(command, line, how)
        for argv in effects.argv:
            if argv and self.depth <= MAX_DEPTH:
                self._expand(_derive(command, argv, how))
        for nested_language, nested in effects.nested:
            if self.depth < MAX_DEPTH:
                self._inline(command, nested_language, nested, how)

    def _project_code(self, command: Command, parsed: programs.Parsed) -> None:
        """Files of the project the tool runs as code (`pytest` imports conftest.py, `pip
        install .` runs setup.py, `npm test` the package.json script): judged by the
        content the line wrote to them."""
        tool, words = command.program, list(parsed.operands)
        module = parsed.value("-m") if programs.spec(tool) is programs.spec("python") else None
        if module:
            after = command.args[command.args.index(module) + 1:] \
                if module in command.args else ()
            tool, words = module, [a for a in after if not a.startswith("-")]
        tool = re.sub(r"\d[\d.]*$", "", tool) if tool.startswith("pip") else tool
        scripts = programs.package_scripts(tool, words)
        manifest = self.state.files.get(command.path("package.json")) if scripts else None
        if manifest is not None:
            try:
                table = json.loads(manifest).get("scripts", {})
            except (ValueError, AttributeError):
                table = {}
            for script in scripts:
                if isinstance(table, dict) and isinstance(table.get(script), str):
                    self._nested(command, table[script], f"{tool} script {script}")
        here = command.path(".")
        for entry in programs.PROJECT_FILES:
            if entry.program != tool or words[: len(entry.words)] != list(entry.words):
                continue
            folders = [command.path(w) for w in words[len(entry.words):] if DYNAMIC not in w] \
                if entry.where == "operand" else [here]
            for path, content in list(self.state.files.items()):
                folder, name = posixpath.split(path)
                if name in entry.names and (folder in folders or (
                        entry.where == "below" and folder.startswith(here.rstrip("/") + "/"))):
                    self._code(command, entry.language, content, f"{tool} runs {path}")

    def _stdin_code(self, command: Command, language: str) -> None:
        """A program that runs what it reads on stdin (`| sh`, `python3 - <<EOF`,
        `at now <<< CMD`, `crontab -`)."""
        how = f"{command.program} reading stdin"
        input_file = command.stdin_input()
        if input_file is not None:
            self._run_file(replace(command, redirects=()), input_file, language, how)
            return
        if command.stdin_script is not None and DYNAMIC not in command.stdin_script:
            script = command.stdin_script
            if language == "crontab":
                script = "\n".join(" ".join(line.split()[5:]) for line in script.splitlines()
                                   if line.strip() and not line.startswith("#"))
                language = "shell"
            self._code(command, language, script, how)
            return
        producer = command.stdin_producer
        if producer is None and command.stdin_script is None:
            return  # an interactive session: nothing is run without more input
        source = posixpath.basename(producer[0]) if producer else "?"
        if source in DECODERS or source not in _STATIC_PRODUCERS:
            self._problem(
                "shell.decode-exec",
                f"{command.program} runs a script produced at run time by {source!r}: it "
                "cannot be verified before it runs", command.span)
        else:
            self._problem("shell.dynamic-command", f"{how} runs text only known at run time",
                          command.span)

    def _script(self, command: Command, parsed: programs.Parsed,
                conventions: programs.Program) -> list[Command]:
        """A shell or an interpreter given no code option: a script file, or stdin. A
        shell also runs its startup files (`--rcfile F`, BASH_ENV, ENV)."""
        language = conventions.stdin or "shell"
        if parsed.operands and parsed.operands[0] not in _STDIN_FILES:
            self._run_file(command, parsed.operands[0], language,
                           f"{command.program} {parsed.operands[0]}")
            return []
        input_file = command.stdin_input()
        if input_file is not None:
            self._run_file(command, input_file, language, f"{command.program} < {input_file}")
            return []
        self._stdin_code(command, language)
        return []

    def _environment_code(self, command: Command) -> None:
        """Variables whose value a program runs or loads: prompts a shell expands, the
        libraries and startup code interpreters load, PGOPTIONS that silence triggers."""
        exported = [tuple(a.split("=", 1)) for a in command.args if "=" in a] \
            if command.program == "export" else []
        for name, value in [*command.env, *exported]:
            if name == "PGOPTIONS" and "session_replication_role" in value:
                self._problem("sql.replication-role", "PGOPTIONS sets session_replication_role "
                              "for every PostgreSQL session it starts: triggers and foreign "
                              "keys stop firing", command.span)
        for name, value in [*command.env, *((k, v) for k, v in self.env.items()
                                             if k in _CODE_VARIABLES)]:
            if name in ("PS0", "PS1", "PS2", "PS4", "PROMPT_COMMAND") and value:
                if name == "PROMPT_COMMAND":
                    self._nested(command, value, name)
                elif "$(" in value or "`" in value:
                    self._unquoted_text(value)  # its command substitutions run
            elif value and (name in _LOADED_VARIABLES or (name == "NODE_OPTIONS" and re.search(
                    r"(^|\s)(-r|--require|--import|--loader|--experimental-loader)", value))):
                self._problem("shell.unverifiable-code", f"{name} makes {command.program} "
                              f"load code from {value}", command.span)

    def _startup(self, command: Command, parsed: programs.Parsed) -> None:
        """Files a shell runs before anything else: --rcfile, BASH_ENV, ENV."""
        startup = [v for o, v in parsed.options if o in ("--rcfile", "--init-file") and v]
        startup += [v for k, v in command.env if k in ("BASH_ENV", "ENV")]
        for path in startup:
            self._run_file(command, path, "shell", f"{command.program} startup file")

    def _run_file(self, command: Command, path: str, language: str, how: str) -> None:
        """A program runs the file `path`: judged by its content when the line wrote it, as
        code produced at run time when it is a process substitution, and otherwise taken
        as a file of the workspace."""
        if path.startswith(DYNAMIC):  # bash <(curl ...)
            self._stdin_code(replace(command, stdin_script=None, stdin_producer=("?",),
                                     redirects=()), language)
            return
        content = self.state.files.get(command.path(path))
        if content is not None:
            self._code(command, language, content, how)

    def _git_config(self, command: Command, setting: str, how: str) -> None:
        """`git -c key=value`: aliases starting with `!`, and keys whose value git runs."""
        key, _, value = setting.partition("=")
        key = key.lower()
        if key.startswith("alias.") and value.startswith("!"):
            self._nested(command, value[1:], f"{how} {key}")
        elif key.startswith("alias."):
            self.state.git_aliases[key[6:]] = value
        elif key in _GIT_COMMAND_KEYS or (key.startswith("credential.") and
                                          value.startswith("!")) or \
                re.match(r"^(filter|diff|merge)\.[^.]+\.(clean|smudge|process|command|"
                         r"textconv|driver)$", key):
            self._nested(command, value.lstrip("!"), f"{how} {key}")
        elif key in ("core.hookspath", "include.path") or key.startswith("includeif."):
            self._problem("shell.unverifiable-code", f"{how} {key} makes git run hooks or "
                          "configuration from elsewhere", command.span)


def _handle_xargs(walker: _Walker, command: Command, parsed: programs.Parsed
                  ) -> list[Command]:
    """xargs runs its command with the words it reads on stdin added (or put in place of
    the -I token)."""
    inner = tuple(parsed.rest) or ("echo",)
    items = _stdin_items(command, parsed)
    token = parsed.value("-I", "--replace", "-i")
    roots = _producer_roots(command)
    if items is None and roots is not None:
        # Paths that find (or ls) printed: each lies below one of its roots.
        argv = tuple(a.replace(token, "{}") for a in inner) if token else (*inner, "{}")
        return walker._expand(replace(_derive(command, argv, "xargs"), find_roots=roots))
    words = items if items is not None else [DYNAMIC]
    if not token:
        return walker._expand(_derive(command, (*inner, *words), "xargs"))
    produced: list[Command] = []
    for word in words:
        produced += walker._expand(_derive(command, tuple(a.replace(token, word)
                                                          for a in inner), "xargs"))
    return produced


def _stdin_items(command: Command, parsed: programs.Parsed) -> list[str] | None:
    """The words xargs would read, when its stdin is static."""
    if parsed.value("-a", "--arg-file") is not None:
        return None
    if command.stdin_script is not None and DYNAMIC not in command.stdin_script:
        text = command.stdin_script
        if parsed.has("-0", "--null") or parsed.value("-d", "--delimiter") in ("\\0", "\\x00"):
            return [w for w in text.split("\0") if w.strip()]
        return text.split()
    return None


def _producer_roots(command: Command) -> tuple[str, ...] | None:
    """For paths piped from `find ROOTS...` (or `ls`, `git ls-files`): the roots."""
    producer = command.stdin_producer
    if producer and posixpath.basename(producer[0]) == "find":
        roots = []
        for arg in producer[1:]:
            if arg.startswith("-") or arg in ("(", "!"):
                break
            roots.append(arg)
        return tuple(roots or ["."])
    if producer and posixpath.basename(producer[0]) in ("ls", "git"):
        return (".",)
    return None


def _handle_find(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    args = list(command.args)
    roots: list[str] = []
    for arg in args:
        if arg.startswith("-") or arg in ("(", "!", ")"):
            break
        roots.append(arg)
    roots = roots or ["."]
    produced: list[Command] = []
    index = 0
    while index < len(args):
        if args[index] in ("-exec", "-execdir", "-ok", "-okdir"):
            end = index + 1
            while end < len(args) and args[end] not in (";", "+", "\\;"):
                end += 1
            inner = tuple(args[index + 1 : end])
            if inner:
                derived = replace(_derive(command, inner, "find -exec"),
                                  find_roots=tuple(roots), redirects=())
                produced += walker._expand(derived)
            index = end
        elif args[index] in ("-fprint", "-fprint0", "-fprintf", "-fls") and \
                index + 1 < len(args):
            produced += walker._expand(_derive(command, ("tee", args[index + 1]), "find"))
        index += 1
    return produced


def _handle_eval(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    walker._nested(command, " ".join(command.args), "eval")
    return []


def _handle_source(walker: _Walker, command: Command, parsed: programs.Parsed
                   ) -> list[Command]:
    if not command.args:
        return []
    script = command.args[0]
    if script in _STDIN_FILES:
        walker._stdin_code(command, "shell")
    else:
        walker._run_file(command, script, "shell", f"{command.program} {script}")
    return []


_STDIN_FILES = frozenset({"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0", "-"})


def _handle_trap(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    """A trap's code runs when its signal comes (at the latest, when the shell exits): it
    is judged with the state the line ends in."""
    operands = [a for a in command.args if a not in ("--", "-p", "-l")]
    if operands and operands[0] not in ("-", ""):
        walker.state.traps.append((operands[0], command.span))
    return []


def _handle_alias(walker: _Walker, command: Command, parsed: programs.Parsed
                  ) -> list[Command]:
    for arg in command.args:
        name, equals, value = arg.partition("=")
        if equals:
            walker.state.aliases[name] = value
            walker._nested(command, value, "alias")
    return []


def _handle_parallel(walker: _Walker, command: Command, parsed: programs.Parsed
                     ) -> list[Command]:
    words = list(parsed.rest)
    if ":::" in words:
        at = words.index(":::")
        template, values = words[:at], [w for w in words[at + 1 :] if w not in (":::", "::::")]
    else:
        template, values = words, [DYNAMIC]
    produced: list[Command] = []
    for value in values or [DYNAMIC]:
        if len(template) == 1 and " " in template[0]:
            text = template[0].replace("{}", value) if "{}" in template[0] else \
                f"{template[0]} {value}"
            walker._nested(command, text, "parallel")
            continue
        argv = tuple(a.replace("{}", value) for a in template) if any(
            "{}" in a for a in template) else (*template, value)
        if argv:
            produced += walker._expand(_derive(command, argv, "parallel"))
    return produced


def _handle_busybox(walker: _Walker, command: Command, parsed: programs.Parsed
                    ) -> list[Command]:
    return walker._expand(_derive(command, command.args, "busybox")) if command.args else []


def _handle_sudo_shell(walker: _Walker, command: Command, parsed: programs.Parsed
                       ) -> list[Command]:
    """sudo/su/runuser/sg/script/ssh and friends are read from the table; `sudo -s CMD`
    and `sudo -i CMD` run the command through a shell."""
    if parsed.has("-s", "--shell", "-i", "--login") and parsed.rest:
        walker._nested(command, " ".join(parsed.rest), "sudo -s")
        return []
    return walker._expand(_derive(command, tuple(parsed.rest), "sudo")) if parsed.rest else []


_PSQL_INCLUDE = re.compile(r"^\s*\\(?:i|ir|include|include_relative)\s+(\S+)", re.MULTILINE)


def _handle_psql(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    given = [v for o, v in parsed.options if o in ("-c", "--command") and v is not None]
    for text in given:  # `\i FILE` runs the file's SQL
        for path in _PSQL_INCLUDE.findall(text):
            walker._run_file(command, path, "sql", "psql \\i")
    if given:
        return []  # read as code from the option table
    sql_file = parsed.value("-f", "--file")
    if sql_file in _STDIN_FILES:
        sql_file = None
    if sql_file is not None:
        walker._run_file(command, sql_file or "", "sql", "psql -f")
        return []
    if command.stdin_input() is not None:
        walker._run_file(replace(command, redirects=()), command.stdin_input() or "", "sql",
                         "psql <")
        return []
    if command.stdin_script is not None and DYNAMIC not in command.stdin_script:
        walker._sql(command.stdin_script, command.span)
    elif command.stdin_producer is not None:
        walker._problem("shell.unverifiable-sql",
                        "psql reads SQL produced at run time; it cannot be checked",
                        command.span)
    return []


def _handle_mysql(walker: _Walker, command: Command, parsed: programs.Parsed
                  ) -> list[Command]:
    """mysql and mariadb: -e SQL is read from the option table; otherwise the SQL on
    stdin, as psql's."""
    if parsed.value("-e", "--execute") is not None or command.stdin_input() is not None:
        return []
    if command.stdin_script is not None and DYNAMIC not in command.stdin_script:
        walker._sql(command.stdin_script, command.span, "mysql")
    elif command.stdin_producer is not None:
        walker._problem("shell.unverifiable-sql", f"{command.program} reads SQL produced at "
                        "run time; it cannot be checked", command.span)
    return []


def _handle_su(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    return []  # its -c code is read from the option table; without it, a login shell


def _handle_env(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    """env [OPTIONS] [NAME=VALUE]... [COMMAND]: the assignments are the command's."""
    rest = list(parsed.rest)
    assigned: list[tuple[str, str]] = []
    while rest and re.match(r"^[A-Za-z_][\w%]*=", rest[0]):
        name, _, value = rest.pop(0).partition("=")
        assigned.append((name, value))
        if name.startswith("BASH_FUNC_"):  # an exported function: its body runs
            walker._nested(command, value.removeprefix("()").strip().strip("{}"),
                           "env BASH_FUNC")
    if not rest:
        return []
    derived = replace(_derive(command, tuple(rest), "env"), env=command.env + tuple(assigned))
    return walker._expand(derived)


def _handle_git(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    """Configuration values, environment variables and options that git runs as commands,
    and git aliases."""
    environment = dict(command.env)
    for name, value in command.env:
        if name in _GIT_COMMAND_ENV and value:
            walker._nested(command, value, f"{name} for git")
    count = environment.get("GIT_CONFIG_COUNT", "")
    for index in range(int(count) if count.isdigit() else 0):
        key = environment.get(f"GIT_CONFIG_KEY_{index}")
        if key:
            walker._git_config(command, f"{key}={environment.get(f'GIT_CONFIG_VALUE_{index}', '')}",
                               "GIT_CONFIG")
    words = list(parsed.operands)
    if words and words[0] in walker.state.git_aliases:
        alias = walker.state.git_aliases[words[0]]
        try:
            expanded = shlex.split(alias)
        except ValueError:
            expanded = alias.split()
        return walker._expand(_derive(command, ("git", *expanded, *words[1:]),
                                      f"git alias {words[0]}"))
    if words[:1] == ["rebase"]:
        for option, given in programs.parse("git-rebase", words[1:]).options:
            if option in ("-x", "--exec") and given:
                walker._nested(command, given, "git rebase --exec")
    elif words[:2] == ["submodule", "foreach"] and len(words) > 2:
        walker._nested(command, " ".join(w for w in words[2:] if w != "--recursive"),
                       "git submodule foreach")
    elif words[:2] == ["bisect", "run"] and len(words) > 2:
        walker._expand(_derive(command, tuple(words[2:]), "git bisect run"))
    elif words[:1] == ["filter-branch"]:
        for option, given in programs.parse("git-filter-branch", words[1:]).options:
            if given and option.endswith("-filter"):
                walker._nested(command, given, f"git filter-branch {option}")
    words = [w for w in parsed.operands]
    if len(words) >= 3 and words[0] == "config" and not words[1].startswith("-"):
        walker._git_config(command, f"{words[1]}={words[2]}", "git config")
    elif words[:1] == ["config"]:
        values = [w for w in command.args[command.args.index("config") + 1 :]
                  if not w.startswith("-")]
        if len(values) >= 2:
            walker._git_config(command, f"{values[0]}={values[1]}", "git config")
    return []


def _handle_socat(walker: _Walker, command: Command, parsed: programs.Parsed
                  ) -> list[Command]:
    for address in parsed.operands:
        kind, _, rest = address.partition(":")
        if kind.upper() in ("EXEC", "SYSTEM"):
            walker._nested(command, rest.split(",", 1)[0], f"socat {kind.upper()}")
    return []


def _handle_ssh(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    for option, value in parsed.options:
        if option == "-o" and value:
            key, _, setting = value.replace("=", " ", 1).partition(" ")
            if key.lower() in ("proxycommand", "localcommand", "knownhostscommand",
                               "remotecommand"):
                walker._nested(command, setting, f"ssh -o {key}")
    if parsed.rest:
        walker._nested(command, " ".join(parsed.rest), "ssh")
    return []


def _handle_less(walker: _Walker, command: Command, parsed: programs.Parsed
                 ) -> list[Command]:
    for word in command.args:
        if word.startswith("+") and "!" in word:
            walker._nested(command, word.split("!", 1)[1], "less +!")
    return []


def _handle_npm(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    words = list(command.args)
    if words[:2] == ["pkg", "set"]:
        for setting in words[2:]:
            key, _, value = setting.partition("=")
            if key.startswith("scripts."):
                walker._nested(command, value, f"npm script {key[8:]}")
        return []
    if words[:1] in (["exec"], ["x"]):
        inner = programs.parse("npx", words[1:])
        for option, given in inner.options:
            if option in ("-c", "--call") and given:
                walker._nested(command, given, "npm exec -c")
        if inner.rest:
            return walker._expand(_derive(command, tuple(inner.rest), "npm exec"))
    return []


def _handle_deno(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    if parsed.operands[:1] == ["eval"] and len(parsed.operands) > 1:
        walker._code(command, "deno", parsed.operands[1], "deno eval")
    return []


def _handle_make(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    makefile = parsed.value("-f", "--file", "--makefile")
    if makefile == "-":
        walker._stdin_code(command, "make")
        return []
    folder = parsed.value("-C", "--directory") or "."
    names = [makefile] if makefile else ["GNUmakefile", "makefile", "Makefile"]
    for name in names:
        path = command.path(posixpath.join(folder, name))
        if path in walker.state.files:
            walker._code(command, "make", walker.state.files[path], "make")
            break
    return []


def _handle_at(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    """at/batch run the script on stdin (or the -f file) later; crontab installs the table
    on stdin (`-`) or in a file."""
    if command.program == "crontab":
        if parsed.operands[:1] in ([], ["-"]) and not parsed.has("-l", "-r", "-e"):
            walker._stdin_code(command, "crontab")
        return []
    script = parsed.value("-f")
    if script:
        walker._run_file(command, script, "shell", f"{command.program} -f")
    else:
        walker._stdin_code(command, "shell")
    return []


def _handle_runuser(walker: _Walker, command: Command, parsed: programs.Parsed
                    ) -> list[Command]:
    if parsed.value("-u", "--user") and parsed.operands:
        return walker._expand(_derive(command, tuple(parsed.operands), "runuser"))
    return []  # `runuser [-l] USER -c CMD`: the -c code is read from the option table


def _handle_sqlite(walker: _Walker, command: Command, parsed: programs.Parsed
                   ) -> list[Command]:
    for text in parsed.operands[1:]:
        walker._code(command, "sqlite", text, "sqlite3")
    if len(parsed.operands) <= 1:
        walker._stdin_code(command, "sqlite")
    return []


def _handle_tmux(walker: _Walker, command: Command, parsed: programs.Parsed) -> list[Command]:
    words = list(command.args)
    for index, word in enumerate(words):
        if word in _TMUX_RUNNERS:
            inner = programs.parse("tmux-" + word, words[index + 1 :])
            if inner.operands:
                how = f"tmux {word}"
                text = " ".join(inner.operands) if word not in ("send-keys", "send") else \
                    " ".join(o for o in inner.operands if o not in ("Enter", "C-m"))
                walker._nested(command, text, how)
            break
    return []


def _runner_command(program: str, args: tuple[str, ...], subcommand: list[str], skip: int
                    ) -> list[str]:
    """The command `uv run [OPTIONS] CMD ARGS...` runs: everything after the subcommand,
    the runner's own options and the operands it skips (`direnv exec DIR`), verbatim
    (CMD's options are CMD's, not the runner's)."""
    words = list(args)
    start = 0
    for word in subcommand:  # the subcommand's words, after any options of the runner
        start = words.index(word, start) + 1 if word in words[start:] else len(words)
    valued = programs.PROGRAMS.get(program, programs.Program()).valued
    rest = words[start:]
    index = 0
    while index < len(rest):
        if rest[index] == "--":
            index += 1
            break
        if rest[index].startswith("-"):
            index += 2 if rest[index] in valued else 1
        elif skip:
            skip -= 1
            index += 1
        else:
            break
    return rest[index:]


_TMUX_RUNNERS = frozenset({"new", "new-session", "new-window", "neww", "split-window",
                           "splitw", "respawn-pane", "respawnp", "respawn-window", "run-shell",
                           "run", "send-keys", "send", "pipe-pane"})


def _handle_screen(walker: _Walker, command: Command, parsed: programs.Parsed
                   ) -> list[Command]:
    for option, value in parsed.options:
        if option == "-X" and value == "stuff":
            walker._nested(command, " ".join(parsed.operands).replace("\\n", "\n"),
                           "screen stuff")
            return []
    if parsed.operands:
        return walker._expand(_derive(command, tuple(parsed.operands), "screen"))
    return []


def _handle_container(walker: _Walker, command: Command, parsed: programs.Parsed
                      ) -> list[Command]:
    """`docker exec C CMD`, `docker run IMAGE CMD`, `kubectl exec POD -- CMD`: a command
    run elsewhere, judged all the same."""
    words = list(command.args)
    verbs = ("exec", "run") if command.program != "kubectl" else ("exec",)
    if words[:1] == ["compose"] and command.program != "kubectl":  # compose [OPTIONS] exec
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] in _COMPOSE_VALUED else words[1:]
    if not words or words[0] not in verbs:
        return []
    inner = programs.parse(f"{command.program}-{words[0]}", words[1:])
    rest = inner.operands[1:] if command.program != "kubectl" or "--" not in words else \
        words[words.index("--") + 1 :]
    if rest:
        return walker._expand(_derive(command, tuple(rest), f"{command.program} {words[0]}"))
    return []


_COMPOSE_VALUED = frozenset({"-f", "--file", "-p", "--project-name", "--profile",
                             "--env-file", "--project-directory", "--ansi", "--progress"})

_HANDLERS = {
    "xargs": _handle_xargs, "find": _handle_find, "eval": _handle_eval,
    "source": _handle_source, ".": _handle_source, "trap": _handle_trap,
    "alias": _handle_alias, "parallel": _handle_parallel, "busybox": _handle_busybox,
    "sudo": _handle_sudo_shell, "psql": _handle_psql, "mysql": _handle_mysql,
    "mariadb": _handle_mysql, "su": _handle_su, "env": _handle_env,
    "git": _handle_git, "socat": _handle_socat, "ssh": _handle_ssh, "less": _handle_less,
    "npm": _handle_npm, "deno": _handle_deno, "make": _handle_make, "at": _handle_at,
    "batch": _handle_at, "crontab": _handle_at, "runuser": _handle_runuser,
    "sqlite3": _handle_sqlite, "tmux": _handle_tmux, "screen": _handle_screen,
    "docker": _handle_container, "podman": _handle_container, "kubectl": _handle_container,
}

_CODE_VARIABLES = frozenset({"PS0", "PS1", "PS2", "PS4", "PROMPT_COMMAND"})
_LOADED_VARIABLES = frozenset({"LD_PRELOAD", "LD_AUDIT", "PERL5OPT", "RUBYOPT"})
"""Variables that make a program load and run code before its own (NODE_OPTIONS only with
--require/--import; PYTHONPATH and friends only say where modules are found)."""
_DATA_PROGRAMS = frozenset({
    "echo", "printf", "grep", "egrep", "fgrep", "rg", "ag", "ack", "cat", "ls", "wc", "head",
    "tail", "sort", "uniq", "cut", "tr", "diff", "cmp", "comm", "jq", "yq", "logger", "test",
    "[", "[[", "true", "false", "read", "mapfile", "readarray", "basename", "dirname",
    "realpath", "readlink", "stat", "file", "du", "df", "date", "sleep", "wait", "type",
    "which", "whereis", "man", "less", "more", "column", "fold", "fmt", "tee", "touch", "mkdir",
    "cp", "mv", "ln", "chmod", "chown", "rm", "rmdir", "pytest", "gh", "hub", "notify-send",
    "wall", "write", "mail", "git", "export", "unset", "set", "shift", "return", "exit",
    "cd", "pushd", "popd", "declare", "typeset", "local", "readonly", "hash", "getopts",
    "pip", "pip3", "npm", "yarn", "pnpm", "cargo", "go", "mvn", "gradle", "dotnet", "curl",
    "wget", "tar", "zip", "unzip", "sqlite3", "psql", "mysql", "redis-cli", "ruff", "black",
    "mypy", "pylint", "flake8", "isort", "eslint", "prettier", "tsc", "node", "python",
    "python3", "make", "cmake", "ctest", "tox", "nox", "pre-commit", "commitizen", "cz"})
"""Programs whose arguments are data (messages, patterns, names), never command lines."""


def _reads_as_command(text: str) -> bool:
    """Whether an argument looks like a command line: a plausible program name first."""
    first = text.strip().split()[0]
    return re.fullmatch(r"[\w./~-]+", first) is not None and not first.startswith("-")


def _language_of(script: str) -> str:
    """The language of a script by its first line (`#!/usr/bin/env python3`)."""
    first = script.lstrip().split("\n", 1)[0]
    if first.startswith("#!"):
        for name, language in (("python", "python"), ("node", "node"), ("perl", "perl"),
                               ("ruby", "ruby"), ("php", "php")):
            if name in first:
                return language
    return "shell"


_GIT_COMMAND_ENV = frozenset({"GIT_EDITOR", "EDITOR", "VISUAL", "GIT_SEQUENCE_EDITOR",
                              "GIT_PAGER", "PAGER", "GIT_SSH_COMMAND", "GIT_SSH",
                              "GIT_EXTERNAL_DIFF", "GIT_ASKPASS", "SSH_ASKPASS",
                              "GIT_PROXY_COMMAND"})

_GIT_COMMAND_KEYS = frozenset({"core.fsmonitor", "core.sshcommand", "core.pager",
                               "core.editor", "sequence.editor", "diff.external",
                               "core.askpass", "gpg.program", "pager.log", "pager.diff",
                               "pager.show", "uploadpack.packobjectshook",
                               "core.gitproxy", "ssh.variant"})


_FILTERS = frozenset({"grep", "egrep", "fgrep", "rg", "sort", "uniq", "head", "tail", "cut",
                      "tr", "sed", "awk", "tac", "nl", "cat"})


NARROWED = "\x00narrowed"
"""Marks a producer whose listing passed through a filter (`ls | grep -v keep`)."""


def _origin(command: Command) -> tuple[str, ...]:
    """The command whose output flows through a chain of filters (`ls | grep -v x`: ls,
    marked as narrowed when a filter selects lines)."""
    if command.program in _FILTERS and command.stdin_producer and not any(
            a for a in command.args if a.startswith("/")):
        narrowing = command.program in ("grep", "egrep", "fgrep", "rg", "head", "tail", "sed",
                                        "awk")
        marker = (NARROWED,) if narrowing and NARROWED not in command.stdin_producer else ()
        return command.stdin_producer + marker
    return command.argv


def _checked_out(args: tuple[str, ...]) -> str | None:
    """The branch `git checkout B`, `git switch B`, `checkout -b B` leave checked out."""
    words = list(args)
    while words and words[0].startswith("-"):
        words = words[2:] if words[0] in ("-C", "-c", "--git-dir", "--work-tree") else words[1:]
    if words[:2] == ["symbolic-ref", "HEAD"] and len(words) >= 3:
        return words[2].removeprefix("refs/heads/")
    if not words or words[0] not in ("checkout", "switch"):
        return None
    rest = words[1:]
    if rest == ["-"]:
        return "-"
    for flag in ("-b", "-B", "-c", "-C", "--create", "--force-create"):
        if flag in rest and rest.index(flag) + 1 < len(rest):
            return rest[rest.index(flag) + 1]
    operands = [w for w in rest if not w.startswith("-")]
    if "--" in rest or len(operands) != 1:
        return None
    return operands[0]


def _names_branch(args: tuple[str, ...]) -> bool:
    """`git branch --show-current`, `git rev-parse --abbrev-ref HEAD`, `git symbolic-ref
    --short HEAD`: they print the checked-out branch."""
    joined = " ".join(args)
    return joined in ("branch --show-current", "rev-parse --abbrev-ref HEAD",
                      "symbolic-ref --short HEAD", "symbolic-ref --short -q HEAD")


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@functools.cache
def _well_known(places: Places) -> dict[str, str]:
    """Variables whose value is known by convention where the line runs: the home, the
    user, the temporary folder, the XDG folders (their defaults below the home), and on a
    host the project folder Claude Code names."""
    home = places.home
    known = {"IFS": " ", "HOME": home, "USER": places.user, "LOGNAME": places.user,
             "SHELL": "/bin/bash", "TMPDIR": places.tmp, "TMP": places.tmp,
             "TEMP": places.tmp, "XDG_CACHE_HOME": f"{home}/.cache",
             "XDG_CONFIG_HOME": f"{home}/.config", "XDG_DATA_HOME": f"{home}/.local/share",
             "XDG_STATE_HOME": f"{home}/.local/state"}
    if places.on_host:
        known["CLAUDE_PROJECT_DIR"] = places.workspace
    return known


_UNSET_MAYBE = frozenset({"TMPDIR", "TMP", "TEMP", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
                          "XDG_DATA_HOME", "XDG_STATE_HOME"})
"""Well-known variables judged at their conventional value, which may also be unset: a
default the line gives for them (`${TMPDIR:-/}`) is a second possible value."""

_MAX_GUESSES = 3
"""Arguments of one unmodelled program read as the command it may run."""


def _names_program(word: str) -> bool:
    """Whether an argument names a program a rule judges or the table models (`rm`,
    `/usr/bin/psql`, `mkfs.ext4`)."""
    if not word or word[0] in "-+=" or DYNAMIC in word:
        return False
    name = posixpath.basename(word)
    return name in programs.JUDGED or name in programs.PROGRAMS or name in _HANDLERS or \
        name in programs.RUNNERS or name.startswith("mkfs.") or effects.names(name)


def _join_segments(segments: list[tuple[str, bool]], ifs: str = " \t\n") -> list[str]:
    """Join word pieces into fields, splitting the splittable ones on the IFS characters."""
    if any(FIELD in text or NO_FIELDS in text for text, _ in segments):
        # "${a[@]}": each element a field of its own, whatever the quoting.
        pieces: list[tuple[str, bool]] = []
        for text, splittable in segments:
            parts = text.split(FIELD)
            for index, part in enumerate(parts):
                if index:
                    pieces.append((FIELD, False))
                pieces.append((part, splittable))
        joined: list[str] = []
        group: list[tuple[str, bool]] = []
        for piece in [*pieces, (FIELD, False)]:
            if piece[0] == FIELD:
                joined.extend(field.replace(NO_FIELDS, "")
                              for field in _join_plain(group, ifs) if field != NO_FIELDS)
                group = []
            else:
                group.append(piece)
        return joined
    return _join_plain(segments, ifs)


def _join_plain(segments: list[tuple[str, bool]], ifs: str) -> list[str]:
    """`_join_segments` for pieces that hold no field separator."""
    fields: list[str] = []
    current = ""
    started = False
    pattern = "[" + re.escape(ifs) + "]+" if ifs else None
    for text, splittable in segments:
        if not splittable or pattern is None or not any(c in text for c in ifs):
            current += text
            started = True
            continue
        parts = [part for part in re.split(pattern, text) if part]
        if text[:1] in ifs:
            if started and current:
                fields.append(current)
            current, started = "", False
        for index, part in enumerate(parts):
            if index:
                fields.append(current)
                current = ""
            current += part
            started = True
        if text[-1:] in ifs:
            if started:
                fields.append(current)
            current, started = "", False
    if started or not fields:
        fields.append(current)
    return fields


def _adjacent_groups(nodes: list[tree_sitter.Node]) -> list[list[tree_sitter.Node]]:
    """Nodes with no blank between them form one shell word."""
    groups: list[list[tree_sitter.Node]] = []
    for node in nodes:
        if groups and groups[-1][-1].end_byte == node.start_byte:
            groups[-1].append(node)
        else:
            groups.append([node])
    return groups


def _derive(command: Command, argv: tuple[str, ...], how: str) -> Command:
    """The command a wrapper runs: where and how the wrapper runs (its folder, its
    redirections and input), another argv."""
    return replace(command, argv=argv, via=(*command.via, how))


def _echo_output(commands: list[Command]) -> str | None:
    """What an `echo`/`printf` (or a `cat` of a heredoc) would print, when static."""
    if not commands:
        return None
    last = commands[-1]
    if last.program == "echo":
        words = [a for a in last.args if not re.fullmatch(r"-[neE]+", a)]
        return " ".join(words) + "\n"
    if last.program == "printf" and last.args:
        fmt, *rest = last.args
        if "%" not in fmt:
            return _decode_ansi_c(fmt)
        if fmt.startswith("%s") or fmt == "%b":
            return "".join(rest)
        return None
    if last.program == "cat" and last.stdin_script is not None and not last.args:
        return last.stdin_script
    return None


def _unescape(text: str) -> str:
    """Remove bash's backslash escapes and empty quote pairs from an unquoted word."""
    if "\\" not in text and "'" not in text and '"' not in text:
        return text
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            if text[index + 1] != "\n":
                out.append(text[index + 1])
            index += 2
            continue
        if char in "'\"":
            closing = text.find(char, index + 1)
            if closing > index:
                out.append(text[index + 1 : closing])
                index = closing + 1
                continue
        out.append(char)
        index += 1
    return "".join(out)


_BRACE = re.compile(r"\{([^{}]*,[^{}]*)\}")
_QUOTED = re.compile(r"\$?'[^']*'|\"(?:\\.|[^\"\\])*\"")


def _unquoted_braces(text: str) -> bool:
    """Whether a word's source has a brace list outside quotes (bash expands only those:
    `'{"a":1,"b":2}'` is one word)."""
    return "{" in text and _BRACE.search(_QUOTED.sub("", text)) is not None


def _brace_expand(word: str, limit: int = 256) -> list[str]:
    """bash brace expansion of `{a,b}` lists (not ranges), bounded in size."""
    match = _BRACE.search(word)
    if match is None:
        return [word]
    head, tail = word[: match.start()], word[match.end():]
    results: list[str] = []
    for option in match.group(1).split(","):
        for expanded in _brace_expand(head + option + tail, limit):
            results.append(expanded)
            if len(results) >= limit:
                return results
    # `{rm,-rf,/}` alone is one word that bash splits into fields.
    return results


def _decode_ansi_c(body: str) -> str:
    """Decode the body of a `$'...'` string as bash does."""
    try:
        return codecs.decode(re.sub(r"\\'", "'", body), "unicode_escape")
    except (UnicodeDecodeError, ValueError):
        return body


def _first_error(node: tree_sitter.Node) -> tree_sitter.Node | None:
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        if child.has_error:
            found = _first_error(child)
            if found is not None:
                return found
    return None


def _show(word: str) -> str:
    return word.replace(DYNAMIC, "$?") or "''"


def _transform(whole: str, name: str, known: dict[str, str]) -> str | None:
    """`${v//a/b}`, `${v/a/b}`, `${v#a}`, `${v%a}`, `${v:1:2}`, `${v^^}`, `${v,,}` for a
    known v and literal patterns (None when it is not one of these)."""
    value = known.get(name)
    body = whole[2 + len(name) : -1] if whole.startswith("${") else ""
    if value is None or DYNAMIC in value or not body or body[0] not in "/#%:^,":
        return None
    if body.startswith(("^^", ",,")):
        return value.upper() if body.startswith("^^") else value.lower()
    if body[0] == "/":
        every = body.startswith("//")
        pattern, _, replacement = body[2 if every else 1 :].partition("/")
        if any(c in pattern for c in "*?[") or not pattern:
            return DYNAMIC
        return value.replace(pattern, replacement) if every else \
            value.replace(pattern, replacement, 1)
    if body[0] in "#%":
        pattern = body.lstrip("#%")
        if any(c in pattern for c in "*?["):
            return DYNAMIC
        if body[0] == "#":
            return value.removeprefix(pattern)
        return value.removesuffix(pattern)
    if body[0] == ":" and re.fullmatch(r":\d+(:\d+)?", body):
        numbers = [int(n) for n in body[1:].split(":")]
        start = numbers[0]
        return value[start : start + numbers[1]] if len(numbers) > 1 else value[start:]
    return None


def _join_continued_lines(text: str) -> str:
    """Remove backslash-newline pairs outside single quotes, as bash's reader does before
    it splits words (`r\\<newline>m` is `rm`). Offsets after one shift by two characters;
    spans stay close enough to point at the command."""
    if "\\\n" not in text:
        return text
    out: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "'" and (index == 0 or text[index - 1] != "\\"):
            quoted = not quoted
        if not quoted and char == "\\" and text[index + 1 : index + 2] == "\n":
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)
