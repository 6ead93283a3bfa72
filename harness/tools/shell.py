"""The shell and file tools: run a command line, read, write and list files, all in the
sandbox as the agent."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from harness.limits.violation import Limit
from harness.tools.base import (
    STRING,
    Effect,
    Judged,
    Tool,
    ToolContext,
    ToolResult,
    in_workspace,
    object_schema,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shell_exec(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Run the command line."""
    return ToolResult("ok", context.shell(p["command"], p.get("timeout")))


def read_file(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """The file's content (base64 when it is not text), checksum and size."""
    data = context.sandbox.read_file(in_workspace(p["path"]))
    context.count_output(len(data))
    try:
        return ToolResult("ok", {"content": data.decode(), "sha256": _sha(data),
                                 "bytes": len(data)})
    except UnicodeDecodeError:
        return ToolResult("ok", {"content_base64": base64.b64encode(data).decode(),
                                 "sha256": _sha(data), "bytes": len(data)})


def write_file(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Write the content, creating parent folders."""
    data = p["content"].encode()
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


TOOLS = [
    Tool("shell_exec", "Run a bash command line in the workspace (/workspace). No network.",
         object_schema(["command"], command={**STRING, "description": "The command line."},
                       timeout={"type": "number",
                                "description": "Seconds before it is killed."}),
         shell_exec, Judged.SHELL, "command",
         affects=frozenset({Effect.FILES, Effect.COMMITS, Effect.ROWS}),
         needs=frozenset({Limit.MAX_SHELL_SECONDS})),
    Tool("read_file", "Read a file (relative to the workspace root, or absolute).",
         object_schema(["path"], path=STRING), read_file, Judged.READ, "path"),
    Tool("write_file", "Write a file, creating parent folders; replaces its content.",
         object_schema(["path", "content"], path=STRING, content=STRING), write_file,
         Judged.WRITE, "path", affects=frozenset({Effect.FILES})),
    Tool("list_files", "List files and folders below a path (two levels, .git skipped).",
         object_schema([], path={**STRING, "default": "."}), list_files, Judged.LISTING,
         "path"),
]
