"""The guardrails as a coding agent's pre-tool hook: Claude Code's PreToolUse protocol.

The hook reads one JSON object on stdin (`tool_name`, `tool_input`, `cwd`, ...) and
answers on stdout with `hookSpecificOutput.permissionDecision`: `deny` (with the rule and
reason) for a block, `ask` for an action that needs approval, and nothing for an action
the guardrails allow, so the agent's own permission rules still apply.

The agent runs on a real machine, not in a sandbox: the project folder
(`CLAUDE_PROJECT_DIR`, else the event's `cwd`) is judged as the workspace and the user's
home (`HOME`) as the home, where the user's own files are. A command is read where it
runs (the event's `cwd`, `~` and `$HOME` the user's), and every path it names, like a
Write's or an Edit's, is judged as that layout (`places.Places`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.guardrails.decision import Decision, Verdict
from harness.guardrails.places import Places
from harness.guardrails.policy import Context, Policy
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
    if tool == "Bash":
        return ToolAction("shell_exec", {"command": given.get("command")})
    if tool in _FILE_TOOLS:
        return ToolAction("write_file", {"path": str(given.get(_FILE_TOOLS[tool]) or "")})
    return None


def project_of(event: dict[str, Any], environ: Mapping[str, str]) -> str:
    """The project folder: Claude Code's CLAUDE_PROJECT_DIR, else the event's cwd."""
    return environ.get("CLAUDE_PROJECT_DIR") or str(event.get("cwd") or "") or os.getcwd()


def context_of(event: dict[str, Any], environ: Mapping[str, str]) -> Context:
    """Where the event's action runs: in its cwd, on a host whose project is the
    workspace and whose user's home is the home, with the project's branch."""
    project = project_of(event, environ)
    home = environ.get("HOME") or os.path.expanduser("~")
    places = Places.host(project, home, tmp=environ.get("TMPDIR"), user=environ.get("USER"))
    cwd = str(event.get("cwd") or project)
    return Context(cwd=cwd if cwd.startswith("/") else os.path.join(project, cwd),
                   branch=branch_of(project), places=places)


def config_of(event: dict[str, Any], environ: Mapping[str, str]) -> str | None:
    """The project's harness.yaml, if it has one."""
    candidate = Path(project_of(event, environ)) / "harness.yaml"
    return str(candidate) if candidate.is_file() else None


def branch_of(project: str) -> str | None:
    """The branch checked out in the project (read from .git/HEAD, without running git)."""
    try:
        head = (Path(project) / ".git" / "HEAD").read_text().strip()
    except OSError:
        return None
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: ") else None


def read_event(raw: str) -> dict[str, Any]:
    """The hook event in `raw`; ValueError when it is not a JSON object."""
    event = json.loads(raw)
    if not isinstance(event, dict):
        raise ValueError("the event is not a JSON object")
    return event


def answer(policy: Policy, raw: str, environ: Mapping[str, str] | None = None
           ) -> dict[str, Any] | None:
    """The hook's reply to one event (None: no opinion, the action may go on), judged on
    the host `environ` describes (the process's own by default)."""
    try:
        event = read_event(raw)
    except ValueError as exc:
        return _reply("deny", f"harness could not read the hook event ({exc}); denied")
    action = action_of(event)
    if action is None:
        return None
    context = context_of(event, os.environ if environ is None else environ)
    decision = policy.evaluate(action, context)
    if decision.verdict == Verdict.BLOCK:
        return _reply("deny", context.places.show(_reason(decision)))
    if decision.verdict == Verdict.REQUIRE_APPROVAL:
        return _reply("ask", context.places.show(_reason(decision)))
    return None


def refusal(reason: str) -> dict[str, Any]:
    """A deny reply for a hook that cannot judge (no configuration it can read)."""
    return _reply("deny", reason)


def _reason(decision: Decision) -> str:
    return f"harness guardrails ({decision.rule_id}): {decision.reason}"


def _reply(permission: str, reason: str) -> dict[str, Any]:
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                   "permissionDecision": permission,
                                   "permissionDecisionReason": reason}}
