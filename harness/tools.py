"""The built-in tools an agent can call, each with the JSON schema of its parameters, so
that an LLM tool-calling client can offer them as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.actions import ToolAction


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does, and the JSON schema of its parameters."""

    name: str
    description: str
    parameters: dict[str, Any]

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the Chat Completions `tools` format."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


def _object(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


_STRING = {"type": "string"}

TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in [
    ToolSpec("shell_exec", "Run a bash command line in the workspace (/workspace). No network.",
             _object(["command"], command={**_STRING, "description": "The command line."},
                     timeout={"type": "number", "description": "Seconds before it is killed."})),
    ToolSpec("read_file", "Read a file (relative to the workspace root, or absolute).",
             _object(["path"], path=_STRING)),
    ToolSpec("write_file", "Write a file, creating parent folders; replaces its content.",
             _object(["path", "content"], path=_STRING, content=_STRING)),
    ToolSpec("list_files",
             "List files and folders below a path (two levels, .git skipped).",
             _object([], path={**_STRING, "default": "."})),
    ToolSpec("git_commit", "Stage every change in the workspace and commit it.",
             _object(["message"], message=_STRING)),
    ToolSpec("git_diff", "Show uncommitted changes (staged and not) in the workspace.",
             _object([])),
    ToolSpec("db_query", "Run read-only SQL on the database; returns the rows.",
             _object(["sql"], sql=_STRING)),
    ToolSpec("db_mutate", "Run SQL that changes the database, in one transaction.",
             _object(["sql"], sql=_STRING)),
    ToolSpec("http_request", "Make an HTTP request to an allow-listed host; the harness adds "
             "configured auth headers.",
             _object(["method", "url"], method={"type": "string",
                                                 "enum": ["GET", "POST", "PUT", "PATCH",
                                                          "DELETE", "HEAD"]},
                     url=_STRING, headers={"type": "object",
                                           "additionalProperties": {"type": "string"}},
                     body=_STRING)),
]}

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "number": (int, float), "object": dict, "integer": int}


def parameter_problem(action: ToolAction) -> str | None:
    """Why `action`'s parameters do not fit its tool's schema (None when they do)."""
    spec = TOOLS.get(action.tool)
    if spec is None:
        return f"unknown tool {action.tool!r}; known tools: {', '.join(TOOLS)}"
    schema = spec.parameters
    properties: dict[str, Any] = schema["properties"]
    missing = [name for name in schema["required"] if name not in action.parameters]
    if missing:
        return f"{action.tool} needs the parameter(s) {missing}"
    for name, value in action.parameters.items():
        if name not in properties:
            return f"{action.tool} has no parameter {name!r}; it takes {sorted(properties)}"
        expected = properties[name]["type"]
        if isinstance(value, bool) or not isinstance(value, _TYPES[expected]):
            return f"{action.tool}.{name} must be a {expected}, not {type(value).__name__}"
        allowed = properties[name].get("enum")
        if allowed and value not in allowed:
            return f"{action.tool}.{name} must be one of {allowed}"
    return None
