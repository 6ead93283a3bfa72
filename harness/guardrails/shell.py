"""Shell analysis: what commands a bash command line would really run.

The line is parsed with tree-sitter-bash (a real shell grammar); each simple command's
words are normalised the way bash would expand them (quotes and escapes removed,
`$'..'` decoded, braces expanded, variables whose value is visible in the same line
substituted, `$(echo x)` evaluated), and wrappers are looked through: `sudo`, `env`,
`xargs`, `find -exec`, `sh -c STRING`, `eval`, a script piped into a shell. What can
not be known before running (a program name from an unknown variable, decoded bytes
piped into a shell) is reported as a problem, so the policy can fail closed.
"""

from __future__ import annotations

import codecs
import functools
import posixpath
import re
import shlex
import unicodedata
from dataclasses import dataclass, field

import tree_sitter
import tree_sitter_bash

DYNAMIC = "\x00"
"""Stands in a word for text only known when the command runs."""

AGENT_HOME = "/home/agent"
WORKSPACE = "/workspace"
MAX_DEPTH = 8

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox-sh", "fish"})
INTERPRETERS = {"python": "-c", "python3": "-c", "python2": "-c", "perl": "-e", "ruby": "-e",
                "node": "-e", "nodejs": "-e", "php": "-r"}
DECODERS = frozenset({"base64", "base32", "xxd", "openssl", "gzip", "gunzip", "zcat", "bzip2",
                      "xz", "uudecode", "rev", "tr", "curl", "wget", "nc", "ncat", "socat"})
# Wrappers that run their operand as a command: name -> options that take a value.
_WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"}),
    "doas": frozenset({"-u", "-C"}),
    "env": frozenset({"-u", "-C", "-S", "--unset", "--chdir"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p"}),
    "nohup": frozenset(),
    "setsid": frozenset(),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "time": frozenset({"-f", "-o"}),
    "command": frozenset(),
    "builtin": frozenset(),
    "exec": frozenset({"-a"}),
    "unbuffer": frozenset(),
    "chronic": frozenset(),
    "flock": frozenset({"-w", "-E", "--timeout"}),
    "chroot": frozenset(),
    "watch": frozenset({"-n", "-d", "--interval"}),
    "strace": frozenset({"-e", "-o", "-p", "-s"}),
    "ltrace": frozenset({"-e", "-o", "-p", "-s"}),
    "torsocks": frozenset(),
    "proxychains": frozenset(),
    "busybox": frozenset(),
    "timeout": frozenset({"-s", "-k", "--signal", "--kill-after"}),
}
_WRAPPER_POSITIONALS = {"timeout": 1, "flock": 1, "chroot": 1}
_XARGS_VALUE_OPTS = frozenset({"-a", "-d", "-E", "-e", "-I", "-i", "-L", "-l", "-n", "-P", "-s",
                               "--arg-file", "--delimiter", "--max-args", "--max-procs",
                               "--replace", "--max-lines", "--max-chars"})
_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")


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

    @functools.cached_property
    def program(self) -> str:
        """The program's base name ('' when empty)."""
        return posixpath.basename(self.argv[0]) if self.argv else ""

    @property
    def args(self) -> tuple[str, ...]:
        """The arguments after the program."""
        return self.argv[1:]


@dataclass(frozen=True)
class Problem:
    """Something the analysis could not verify."""

    rule_id: str
    reason: str
    span: tuple[int, int]


@dataclass
class ShellAnalysis:
    """Every command a line would run, the functions it defines, and what stayed unknown."""

    text: str
    commands: list[Command] = field(default_factory=list)
    functions: dict[str, list[Command]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    sql: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    """SQL the line sends to psql, with the span of the psql command."""


@functools.cache
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))


def analyse(text: str) -> ShellAnalysis:
    """Analyse one shell command line."""
    analysis = ShellAnalysis(text)
    cleaned = _ZERO_WIDTH.sub("", text)
    if cleaned != text:
        analysis.problems.append(Problem(
            "shell.hidden-characters", "the command contains invisible (zero-width) characters",
            (0, len(text))))
    try:
        _Walker(analysis, cleaned, depth=0, outer_span=None, env={}).run()
    except RecursionError:
        analysis.problems.append(Problem(
            "shell.unparseable", "the command is nested too deeply to analyse", (0, len(text))))
    return analysis


class _Walker:
    def __init__(self, analysis: ShellAnalysis, text: str, *, depth: int,
                 outer_span: tuple[int, int] | None, env: dict[str, str],
                 via: tuple[str, ...] = ()) -> None:
        self.analysis = analysis
        self.text = text
        self.source = text.encode()
        self.depth = depth
        self.outer_span = outer_span
        self.env = env
        self.via = via
        self._ascii = self.source.isascii()

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
        self._visit(root)

    def _span(self, node: tree_sitter.Node) -> tuple[int, int]:
        if self.outer_span is not None:
            return self.outer_span
        if self._ascii:
            return node.start_byte, node.end_byte
        return (len(self.source[: node.start_byte].decode(errors="replace")),
                len(self.source[: node.end_byte].decode(errors="replace")))

    def _problem(self, rule_id: str, reason: str, span: tuple[int, int]) -> None:
        self.analysis.problems.append(Problem(rule_id, reason, span))

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
        if kind == "function_definition":
            name_node = node.child_by_field_name("name")
            body = node.child_by_field_name("body")
            name = self._node_text(name_node) if name_node else ""
            commands = self._visit(body) if body is not None else []
            self.analysis.functions[name] = commands
            return []
        produced: list[Command] = []
        if kind == "list":
            # `a && b && c ...` nests to the left: walk that spine without recursing.
            spine = [node]
            while spine[-1].named_children and spine[-1].named_children[0].type == "list":
                spine.append(spine[-1].named_children[0])
            for index, part in enumerate(reversed(spine)):
                for child in part.named_children[(1 if index else 0):]:
                    if not (index == 0 and child.type == "list"):
                        produced.extend(self._visit(child))
            return produced
        for child in node.named_children:
            produced.extend(self._visit(child))
        return produced

    def _assign(self, node: tree_sitter.Node) -> None:
        name_node = node.child_by_field_name("name")
        value_node = node.child_by_field_name("value")
        if name_node is None:
            return
        value = "".join(self._word(value_node, split=False)) if value_node is not None else ""
        self.env[self._node_text(name_node)] = value

    def _pipeline(self, node: tree_sitter.Node) -> list[Command]:
        produced: list[Command] = []
        previous: list[Command] = []
        for child in node.named_children:
            feed: Stdin = (_echo_output(previous), previous[-1].argv) if previous else (None, None)
            previous = self._visit(child, feed)
            produced.extend(previous)
        return produced

    def _redirected(self, node: tree_sitter.Node, stdin: Stdin
                    ) -> list[Command]:
        redirects: list[Redirect] = []
        script: str | None = stdin[0]
        body = node.child_by_field_name("body")
        for child in node.named_children:
            if child == body:
                continue
            if child.type == "file_redirect":
                op = "".join(self._node_text(c) for c in child.children
                             if not c.is_named)
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
                words = [c for c in child.named_children]
                script = " ".join("".join(self._word(w, split=False)) for w in words)
        if body is None:
            return []
        if body.type == "command":
            return self._command(body, tuple(redirects), (script, stdin[1]))
        produced = self._visit(body, (script, stdin[1]))
        return produced

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

    def _command(self, node: tree_sitter.Node, redirects: tuple[Redirect, ...],
                 stdin: Stdin) -> list[Command]:
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
                                  for w in child.named_children)
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
            for one in _join_segments(segments):
                argv.extend(_brace_expand(one) if "{" in one and "," in one else [one])
        if not argv:
            self.env.update(local_env)
            return []
        command = Command(tuple(argv), self._span(node), tuple(extra_redirects), script,
                          stdin[1], self.via)
        return self._expand(command)

    # ------------------------------------------------------------ words

    def _word(self, node: tree_sitter.Node | None, *, split: bool = True) -> list[str]:
        """The fields a word expands to: unquoted expansions are split on blanks (as with
        the default IFS) and unquoted brace lists expanded."""
        if node is None:
            return [""]
        fields = _join_segments(self._segments(node))
        if not split:
            return [" ".join(fields)]
        expanded: list[str] = []
        for one in fields:
            expanded.extend(_brace_expand(one) if "{" in one and "," in one else [one])
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
            self._visit_inner(node)
            return [(DYNAMIC + "/dev/fd", False)]
        if kind == "arithmetic_expansion":
            self._visit_expansions(node)
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
        if text == "~" or text.startswith("~/"):
            text = AGENT_HOME + text[1:]
        if "$" not in text:
            return [(_unescape(text), False)]
        pieces: list[tuple[str, bool]] = []
        last = 0
        for match in _VARIABLE.finditer(text):
            if match.start() > 0 and text[match.start() - 1] == "\\":
                continue
            pieces.append((_unescape(text[last : match.start()]), False))
            name = match.group(1) or match.group(2)
            pieces.append(({**_WELL_KNOWN, **self.env}.get(name, DYNAMIC), True))
            last = match.end()
        pieces.append((_unescape(text[last:]), False))
        return pieces

    def _string_part(self, node: tree_sitter.Node) -> str:
        if node.type == "string_content":
            return re.sub(r'\\([$`"\\\n])', r"\1", self._node_text(node))
        return "".join(self._word(node, split=False))

    def _expansion(self, node: tree_sitter.Node) -> str:
        names = [c for c in node.named_children if c.type in ("variable_name", "special_variable_name")]
        if not names:
            self._visit_expansions(node)
            return DYNAMIC
        name = self._node_text(names[0])
        extra = [c for c in node.named_children if c is not names[0]]
        known = {**_WELL_KNOWN, **self.env}
        if extra:  # ${X:-default} and friends: take the default only when X is unknown
            for child in extra:
                self._visit_expansions(child)
            if name in known:
                return known[name]
            return DYNAMIC
        return known.get(name, DYNAMIC)

    def _substitution(self, node: tree_sitter.Node) -> str:
        inner = self._visit_inner(node)
        if len(inner) == 1 and inner[0].program in ("echo", "printf") and not inner[0].redirects:
            output = _echo_output(inner)
            if output is not None and DYNAMIC not in output:
                return output.rstrip("\n")
        return DYNAMIC

    def _visit_inner(self, node: tree_sitter.Node) -> list[Command]:
        produced: list[Command] = []
        for child in node.named_children:
            produced.extend(self._visit(child))
        return produced

    def _visit_expansions(self, node: tree_sitter.Node) -> None:
        if node.type in ("command_substitution", "process_substitution"):
            self._visit_inner(node)
            return
        for child in node.named_children:
            self._visit_expansions(child)

    # ------------------------------------------------------------ unwrapping

    def _expand(self, command: Command) -> list[Command]:
        """Record `command` and whatever it runs in turn."""
        self.analysis.commands.append(command)
        produced = [command]
        program = command.program
        if not command.argv[0] or command.argv[0].startswith(DYNAMIC) or \
                (DYNAMIC in command.argv[0]):
            self._problem("shell.dynamic-command",
                          "the program to run is only known at run time "
                          f"({_show(command.argv[0])})", command.span)
            return produced
        if program in _WRAPPERS:
            inner = _unwrap(program, command.args)
            if inner:
                produced += self._expand(_derive(command, inner, program))
            return produced
        if program == "xargs":
            inner = _xargs_command(command.args)
            produced += self._expand(_derive(command, inner or ("echo",), "xargs"))
            return produced
        if program == "find":
            produced += self._find(command)
            return produced
        if program in SHELLS or program in ("source", "."):
            produced += self._shell(command)
            return produced
        if program == "eval":
            script = " ".join(command.args)
            self._nested(command, script, "eval")
            return produced
        if program in INTERPRETERS:
            self._interpreter(command)
        if program in ("psql",):
            self._psql(command)
        return produced

    def _nested(self, command: Command, script: str, how: str) -> None:
        if DYNAMIC in script:
            self._problem("shell.dynamic-command",
                          f"{how} runs text that is only known at run time", command.span)
            return
        _Walker(self.analysis, script, depth=self.depth + 1, outer_span=command.span,
                env=dict(self.env), via=(*command.via, how)).run()

    def _shell(self, command: Command) -> list[Command]:
        args = list(command.args)
        if command.program in ("source", "."):
            if args and args[0].startswith(DYNAMIC):
                self._stdin_script(command, f"{command.program} <(...)")
            return []
        script_index = None
        for index, arg in enumerate(args):
            if arg == "-c" or (arg.startswith("-") and not arg.startswith("--") and "c" in arg):
                script_index = index + 1
                break
            if not arg.startswith("-") and not arg.startswith("+"):
                if arg.startswith(DYNAMIC):  # bash <(curl ...)
                    self._stdin_script(command, f"{command.program} <(...)")
                return []  # a script file of the workspace
        if script_index is not None:
            if script_index < len(args):
                self._nested(command, args[script_index], f"{command.program} -c")
            return []
        self._stdin_script(command, f"| {command.program}")
        return []

    def _stdin_script(self, command: Command, how: str) -> None:
        if command.stdin_script is not None and DYNAMIC not in command.stdin_script:
            self._nested(command, command.stdin_script, how)
            return
        producer = command.stdin_producer
        source = posixpath.basename(producer[0]) if producer else "?"
        if source in DECODERS or producer is None or source not in ("echo", "printf", "cat"):
            self._problem(
                "shell.decode-exec",
                f"a shell runs a script produced at run time by {source!r}: it cannot be "
                "verified before it runs", command.span)
        else:
            self._problem("shell.dynamic-command", f"{how} runs text only known at run time",
                          command.span)

    def _find(self, command: Command) -> list[Command]:
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
                    derived = _derive(command, inner, "find -exec")
                    derived = Command(derived.argv, derived.span, (), None, None, derived.via,
                                      tuple(roots))
                    produced += self._expand(derived)
                index = end
            index += 1
        return produced

    def _interpreter(self, command: Command) -> None:
        flag = INTERPRETERS[command.program]
        args = list(command.args)
        code = None
        for index, arg in enumerate(args):
            if arg == flag and index + 1 < len(args):
                code = args[index + 1]
                break
            if arg.startswith(flag) and len(arg) > len(flag):
                code = arg[len(flag):]
                break
        if code is None:
            if command.stdin_script is not None or command.stdin_producer is not None:
                producer = command.stdin_producer or ("?",)
                if posixpath.basename(producer[0]) in DECODERS:
                    self._problem("shell.decode-exec",
                                  f"{command.program} runs code decoded at run time",
                                  command.span)
            return
        for problem in _scan_inline_code(code):
            self._problem(problem[0], f"{command.program} {flag}: {problem[1]}", command.span)
        for shell_text in _inline_shell_calls(code):
            self._nested(command, shell_text, f"{command.program} {flag}")

    def _psql(self, command: Command) -> None:
        args = list(command.args)
        found = False
        for index, arg in enumerate(args):
            sql = None
            if arg in ("-c", "--command") and index + 1 < len(args):
                sql = args[index + 1]
            elif arg.startswith("--command="):
                sql = arg.split("=", 1)[1]
            elif arg.startswith("-c") and len(arg) > 2:
                sql = arg[2:]
            if sql is not None:
                found = True
                self.analysis.sql.append((sql, command.span))
        if not found and command.stdin_script is not None:
            self.analysis.sql.append((command.stdin_script, command.span))
        elif not found and command.stdin_producer is not None:
            self._problem("shell.unverifiable-sql",
                          "psql reads SQL produced at run time; it cannot be checked",
                          command.span)


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_WELL_KNOWN = {"IFS": " ", "HOME": AGENT_HOME, "PWD": WORKSPACE, "USER": "agent",
               "SHELL": "/bin/bash"}


def _join_segments(segments: list[tuple[str, bool]]) -> list[str]:
    """Join word pieces into fields, splitting the splittable ones on blanks."""
    fields: list[str] = []
    current = ""
    started = False
    for text, splittable in segments:
        if not splittable or not any(c in text for c in " \t\n"):
            current += text
            started = True
            continue
        parts = text.split()
        if text[:1].isspace():
            if started and current:
                fields.append(current)
            current, started = "", False
        for index, part in enumerate(parts):
            if index:
                fields.append(current)
                current = ""
            current += part
            started = True
        if text[-1:].isspace():
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
    return Command(argv, command.span, command.redirects, command.stdin_script,
                   command.stdin_producer, (*command.via, how), command.find_roots)


def _unwrap(program: str, args: tuple[str, ...]) -> tuple[str, ...]:
    """The command a wrapper runs: its arguments after its own options (and operands)."""
    valued = _WRAPPERS[program]
    index = 0
    positionals = _WRAPPER_POSITIONALS.get(program, 0)
    while index < len(args):
        arg = args[index]
        if program == "env" and "=" in arg and not arg.startswith("-"):
            index += 1
            continue
        if arg == "--":
            index += 1
            break
        if arg.startswith("-") and len(arg) > 1:
            index += 2 if arg in valued else 1
            continue
        if positionals:
            positionals -= 1
            index += 1
            continue
        break
    return args[index:]


def _xargs_command(args: tuple[str, ...]) -> tuple[str, ...]:
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in _XARGS_VALUE_OPTS:
            index += 2
        elif arg.startswith("-"):
            index += 1
        else:
            break
    return args[index:]


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


_CODE_DECODE = re.compile(r"b64decode|base64|codecs\.decode|bytes\.fromhex|unhexlify|"
                          r"fromCharCode|decode\(\s*['\"](hex|rot)", re.IGNORECASE)
_CODE_EXEC = re.compile(r"\b(exec|eval|system|popen|spawn|Popen|run|call|check_output|"
                        r"check_call|execSync|spawnSync|`)", re.IGNORECASE)
_CODE_RMTREE = re.compile(r"rmtree\(\s*(['\"])(/|~|/home[^'\"]*|/workspace/?)\1\s*[,)]")
_CODE_SHELL_CALL = re.compile(
    r"(?:os\.system|os\.popen|subprocess\.(?:run|call|Popen|check_output|check_call)|"
    r"\bsystem|execSync|spawnSync|exec)\s*\(\s*(?P<q>['\"])(?P<cmd>(?:\\.|(?!(?P=q)).)*)(?P=q)",
    re.DOTALL)
_CODE_ARGV_CALL = re.compile(
    r"subprocess\.(?:run|call|Popen|check_output|check_call)\s*\(\s*\[(?P<items>[^\]]*)\]")
_CODE_LITERAL = re.compile(r"(['\"])((?:\\.|(?!\1).)*)\1")


def _scan_inline_code(code: str) -> list[tuple[str, str]]:
    problems = []
    if _CODE_DECODE.search(code) and _CODE_EXEC.search(code):
        problems.append(("shell.decode-exec", "inline code decodes and runs data"))
    if _CODE_RMTREE.search(code):
        problems.append(("shell.recursive-delete", "inline code deletes a protected folder tree"))
    if re.search(r"fork\s*\(\s*\).*while|while.*fork\s*\(|fork\s+while\s+fork", code, re.DOTALL):
        problems.append(("shell.fork-bomb", "inline code forks in a loop"))
    return problems


def _inline_shell_calls(code: str) -> list[str]:
    """Shell command lines that inline code passes to os.system, subprocess and friends."""
    commands = [m.group("cmd") for m in _CODE_SHELL_CALL.finditer(code)]
    for match in _CODE_ARGV_CALL.finditer(code):
        items = [m.group(2) for m in _CODE_LITERAL.finditer(match.group("items"))]
        if items:
            commands.append(shlex.join(items))
    return [unicodedata.normalize("NFKC", c) for c in commands]
