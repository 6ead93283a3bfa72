"""The shell and file tools: run a command line, read, write and list files, all in the
sandbox as the agent."""

from __future__ import annotations

import base64
import hashlib
import posixpath
import shlex
from collections.abc import Mapping
from typing import Any

from harness.limits.violation import Limit
from harness.tools.base import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    Effect,
    Judged,
    Tool,
    ToolContext,
    ToolResult,
    in_workspace,
    nullable,
    object_schema,
    result_schema,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shell_exec(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Run the command line."""
    return ToolResult("ok", context.shell(p["command"], p.get("timeout")))


def exec_argv(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Run the argv, with its input, environment and working folder."""
    return ToolResult("ok", context.shell(list(p["argv"]), p.get("timeout"), cwd=p.get("cwd"),
                                          env=p.get("env"), stdin=_stdin(p), user=p.get("user")))


def _stdin(p: Mapping[str, Any]) -> bytes | None:
    if "stdin_base64" in p:
        return base64.b64decode(p["stdin_base64"])
    return p["stdin"].encode() if "stdin" in p else None


_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"}
_INLINE = {"python": "-c", "python3": "-c", "perl": "-e", "ruby": "-e", "node": "-e",
           "php": "-r", "psql": "-c"}


def exec_command_line(p: Mapping[str, Any]) -> str | None:
    """What an argv call does, as a command line the guardrails read: the argv joined,
    and when it reads its program from its input (a shell, an interpreter or psql given
    no script), that program too."""
    argv = p.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    line = shlex.join(_shown(argv))
    try:
        stdin = _stdin(p)
        program = stdin.decode() if stdin is not None else None
    except (ValueError, UnicodeDecodeError):
        program = "$(cat)"  # a program nobody can read: judged as unknown
    if not program:
        return line
    name = posixpath.basename(argv[0])
    takes_program = not any(a in ("-c", "-e", "-r", "-f", "--file", "--command") or
                            not a.startswith("-") for a in argv[1:])
    if name in _SHELLS and takes_program:
        return program
    flag = _INLINE.get(name) or _INLINE.get(name.rstrip("0123456789."))
    if flag and takes_program:
        return shlex.join([*argv, flag, program])
    return line


_LONG = 4096
"""No path is longer (PATH_MAX): a longer argument is data, unless it is a program."""


def _shown(argv: list[str]) -> list[str]:
    """The argv as the guardrails read it: a long argument that is data (printf's text,
    not a `sh -c` program) stands as its length, so that a large input is no large line."""
    name = posixpath.basename(argv[0])
    interpreter = name in _SHELLS or name.rstrip("0123456789.") in _INLINE
    shown = []
    for index, argument in enumerate(argv):
        program = interpreter and index > 0 and (
            argv[index - 1] in ("-c", "-e", "-r", "--command") or not argument.startswith("-"))
        shown.append(argument if len(argument) <= _LONG or program or index == 0
                     else f"<{len(argument)} characters>")
    return shown


def read_file(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """The file's content (base64 when it is not text), checksum and size."""
    data = context.sandbox.read_file(in_workspace(p["path"]), max_bytes=p.get("max_bytes"))
    context.count_output(len(data))
    try:
        return ToolResult("ok", {"content": data.decode(), "sha256": _sha(data),
                                 "bytes": len(data)})
    except UnicodeDecodeError:
        return ToolResult("ok", {"content_base64": base64.b64encode(data).decode(),
                                 "sha256": _sha(data), "bytes": len(data)})


def write_file(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Write the content, creating parent folders."""
    data = p["content"].encode() if "content" in p else base64.b64decode(p["content_base64"])
    context.sandbox.write_file(in_workspace(p["path"]), data)
    return ToolResult("ok", {"written": len(data), "sha256": _sha(data)})


def list_files(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Files and folders two levels below the path, .git skipped."""
    path = in_workspace(p.get("path", "."))
    output = context.shell(["find", path, "-mindepth", "1", "-maxdepth", "2", "-not", "-path",
                            "*/.git", "-not", "-path", "*/.git/*", "-printf", "%y %s %P\\n"])
    entries = sorted(line.split(" ", 2) for line in output["stdout"].splitlines())
    ok = output["exit_code"] == 0
    return ToolResult("ok" if ok else "error", {
        "path": path,
        "entries": [{"type": "dir" if t == "d" else "file", "bytes": int(s), "path": n}
                    for t, s, n in entries],
        **({} if ok else {"error": output["stderr"]})})


EXEC_RESULT = result_schema({
    "exit_code": INTEGER, "stdout": STRING, "stderr": STRING, "duration_s": NUMBER,
    "timed_out": BOOLEAN, "truncated": BOOLEAN, "oom_killed": BOOLEAN,
    "interrupted": BOOLEAN, "disk_limit_hit": BOOLEAN}, ["exit_code", "stdout", "stderr"])
FILE_READ = result_schema({
    "content": {**STRING, "description": "The text (UTF-8 files)."},
    "content_base64": {**STRING, "description": "The bytes (other files)."},
    "sha256": STRING, "bytes": INTEGER, "limit": nullable(INTEGER)})
FILE_WRITTEN = result_schema({"written": INTEGER, "sha256": STRING})
LISTING = result_schema({"path": STRING, "entries": {"type": "array", "items": {
    "type": "object", "properties": {"type": {"type": "string", "enum": ["dir", "file"]},
                                     "bytes": INTEGER, "path": STRING}}}})

TOOLS = [
    Tool("shell_exec", "Run a bash command line in the workspace (/workspace). No network.",
         object_schema(["command"], command={**STRING, "description": "The command line."},
                       timeout={"type": "number",
                                "description": "Seconds before it is killed."}),
         shell_exec, Judged.SHELL, "command",
         affects=frozenset({Effect.FILES, Effect.COMMITS, Effect.ROWS}),
         needs=frozenset({Limit.MAX_SHELL_SECONDS}), output=EXEC_RESULT),
    Tool("read_file", "Read a file (relative to the workspace root, or absolute).",
         object_schema(["path"], path=STRING,
                       max_bytes={"type": "integer", "description": "Refuse a larger file."}),
         read_file, Judged.READ, "path", output=FILE_READ),
    Tool("write_file", "Write a file, creating parent folders; replaces its content.",
         object_schema(["path"], path=STRING, content=STRING,
                       content_base64={**STRING, "description": "Bytes, base64-encoded, "
                                       "instead of content."}), write_file,
         Judged.WRITE, "path", affects=frozenset({Effect.FILES}),
         exclusive=(("content", "content_base64"),), one_of=(("content", "content_base64"),),
         output=FILE_WRITTEN),
    Tool("exec", "Run a program (an argv, no shell), with its standard input, environment "
         "and working folder (relative to the workspace).",
         object_schema(["argv"], argv={"type": "array", "items": STRING, "minItems": 1},
                       cwd=STRING, env={"type": "object", "additionalProperties": STRING},
                       timeout={"type": "number"}, stdin=STRING, stdin_base64=STRING,
                       user={**STRING, "description": "Another user than the agent: one of "
                             "sandbox.hardening.exec_users."}),
         exec_argv, Judged.SHELL, None,
         affects=frozenset({Effect.FILES, Effect.COMMITS, Effect.ROWS}),
         needs=frozenset({Limit.MAX_SHELL_SECONDS}), judged_text=exec_command_line,
         exclusive=(("stdin", "stdin_base64"),), offered=False, output=EXEC_RESULT),
    Tool("list_files", "List files and folders below a path (two levels, .git skipped).",
         object_schema([], path={**STRING, "default": "."}), list_files, Judged.LISTING,
         "path", output=LISTING),
]
