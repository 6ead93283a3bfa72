"""The tools an agent can call: one registry, read by the episode (to run them), the
guardrails (what to judge), the budget (which limits apply), the MCP server and every
model adapter (their schemas). A tool is one entry in its family's module."""

from __future__ import annotations

from typing import Any

from harness.tools import database, git, http, shell
from harness.tools.action import ActionError, ToolAction
from harness.tools.base import (
    Effect,
    Judged,
    Refusal,
    Status,
    Tool,
    ToolContext,
    ToolResult,
    in_workspace,
)

TOOLS: dict[str, Tool] = {tool.name: tool for family in (shell, git, database, http)
                          for tool in family.TOOLS}

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "number": (int, float), "object": dict, "integer": int, "array": list}


def parameter_problem(action: ToolAction) -> str | None:
    """Why `action`'s parameters do not fit its tool's schema (None when they do)."""
    tool = TOOLS.get(action.tool)
    if tool is None:
        return f"unknown tool {action.tool!r}; known tools: {', '.join(TOOLS)}"
    schema = tool.parameters
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
        items = properties[name].get("items") or properties[name].get("additionalProperties")
        if isinstance(value, list | dict) and isinstance(items, dict) \
                and items.get("type") == "string":
            values = value if isinstance(value, list) else list(value.values())
            if not all(isinstance(v, str) for v in values):
                return f"{action.tool}.{name} must hold only strings"
        if isinstance(value, list) and len(value) < properties[name].get("minItems", 0):
            return f"{action.tool}.{name} must not be empty"
    for group in tool.exclusive:
        given = [name for name in group if name in action.parameters]
        if len(given) > 1:
            return f"{action.tool} takes only one of {list(group)} (it has {given})"
    for group in tool.one_of:
        if not any(name in action.parameters for name in group):
            return f"{action.tool} needs one of {list(group)}"
    return None


__all__ = ["TOOLS", "ActionError", "Effect", "Judged", "Refusal", "Status", "Tool",
           "ToolAction", "ToolContext", "ToolResult", "in_workspace", "parameter_problem"]
