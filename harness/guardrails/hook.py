"""The guardrails as a coding agent's pre-tool hook: Claude Code's PreToolUse protocol.

The hook reads one JSON object on stdin (`tool_name`, `tool_input`, `cwd`, ...) and
answers on stdout with `hookSpecificOutput.permissionDecision`: `deny` (with the rule and
reason) for a block, `ask` for an action that needs approval, and nothing for an action
the guardrails allow, so the agent's own permission rules still apply. Paths inside the
project folder are judged as the sandbox's workspace (`/workspace/...`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.guardrails.decision import Decision, Verdict
from harness.guardrails.policy import Context, Policy
from harness.sandbox.layout import WORKSPACE
from harness.tools import ToolAction

_FILE_TOOLS = {"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path",
               "NotebookEdit": "notebook_path"}


def action_of(event: dict[str, Any]) -> ToolAction | None:
    """The harness action a hook event asks to run (None for tools the guardrails do not
    judge, such as Read)."""
    tool = event.get("tool_name")
    given = event.get("tool_input") or {}
    if not isinstance(given, dict):
        return ToolAction("shell_exec", {"command": None})  # judged as malformed
    project = str(event.get("cwd") or "")
    if tool == "Bash":
        return ToolAction("shell_exec", {"command": given.get("command")})
    if tool in _FILE_TOOLS:
        return ToolAction("write_file", {"path": _in_workspace(str(given.get(
            _FILE_TOOLS[tool]) or ""), project)})
    return None


def _in_workspace(path: str, project: str) -> str:
    if project and (path == project or path.startswith(project.rstrip("/") + "/")):
        return WORKSPACE + path[len(project.rstrip("/")):]
    return path


def branch_of(project: str) -> str | None:
    """The branch checked out in the project (read from .git/HEAD, without running git)."""
    try:
        head = (Path(project) / ".git" / "HEAD").read_text().strip()
    except OSError:
        return None
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: ") else None


def answer(policy: Policy, raw: str) -> dict[str, Any] | None:
    """The hook's reply to one event (None: no opinion, the action may go on)."""
    try:
        event = json.loads(raw)
        if not isinstance(event, dict):
            raise ValueError("the event is not a JSON object")
    except ValueError as exc:
        return _reply("deny", f"harness could not read the hook event ({exc}); denied")
    action = action_of(event)
    if action is None:
        return None
    decision = policy.evaluate(action, Context(branch=branch_of(str(event.get("cwd") or ""))))
    if decision.verdict == Verdict.BLOCK:
        return _reply("deny", _reason(decision))
    if decision.verdict == Verdict.REQUIRE_APPROVAL:
        return _reply("ask", _reason(decision))
    return None


def _reason(decision: Decision) -> str:
    return f"harness guardrails ({decision.rule_id}): {decision.reason}"


def _reply(permission: str, reason: str) -> dict[str, Any]:
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                   "permissionDecision": permission,
                                   "permissionDecisionReason": reason}}
