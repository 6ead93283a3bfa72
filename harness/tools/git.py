"""The git tools: commit everything, show what is not committed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.limits.violation import Limit
from harness.tools.base import (
    STRING,
    Effect,
    Tool,
    ToolContext,
    ToolResult,
    nullable,
    object_schema,
    result_schema,
)


def git_commit(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Stage every change and commit it; the new commit's id."""
    output = context.shell(["bash", "-c", 'git add -A && if git diff --cached --quiet; then '
                            'exit 3; fi && git commit -q -m "$1" && git rev-parse HEAD',
                            "commit", p["message"]])
    if output["exit_code"] == 3:
        return ToolResult("error", {"commit": None, "stderr": output["stderr"],
                                    "error": "nothing to commit: the workspace has no changes "
                                             "since the last commit"})
    ok = output["exit_code"] == 0
    return ToolResult("ok" if ok else "error", {
        "commit": output["stdout"].strip() if ok else None, "stderr": output["stderr"],
        **({} if ok else {"error": (output["stderr"] or output["stdout"]).strip()})})


def git_diff(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """The status and the diff against HEAD."""
    output = context.shell("git status --short && git --no-pager diff HEAD")
    return ToolResult("ok", {"diff": output["stdout"], "stderr": output["stderr"]})


TOOLS = [
    Tool("git_commit", "Stage every change in the workspace and commit it.",
         object_schema(["message"], message=STRING), git_commit,
         affects=frozenset({Effect.COMMITS}), needs=frozenset({Limit.MAX_COMMITS}),
         output=result_schema({"commit": nullable(STRING), "stderr": STRING})),
    Tool("git_diff", "Show uncommitted changes (staged and not) in the workspace.",
         object_schema([]), git_diff,
         output=result_schema({"diff": STRING, "stderr": STRING}, ["diff"])),
]
