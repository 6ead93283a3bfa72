"""`harness check` as a process, as a pre-tool hook starts it for every tool call: it
loads the guardrails and nothing of the sandbox, the database or tracing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("docker", "psycopg", "psycopg2", "psycopg_pool", "opentelemetry", "git")
"""Top-level packages a check must not import: Docker's SDK, PostgreSQL drivers,
OpenTelemetry and GitPython (whose package is `git`)."""


def _imported(*args: str, stdin: str = "") -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", "check", *args],
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("--shell", "ls -la"), ("--shell", "rm -rf /"),
                                  ("--sql", "DELETE FROM orders"), ("--write", "/etc/passwd")])
def test_check_imports_no_docker_database_tracing_or_git_package(args: tuple[str, ...]) -> None:
    imported = _imported(*args)
    assert "harness" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_check_as_a_hook_imports_none_of_them_either() -> None:
    event = json.dumps({"cwd": "/tmp", "hook_event_name": "PreToolUse", "tool_name": "Bash",
                        "tool_input": {"command": "rm -rf ~/Documents"}})
    imported = _imported("--hook", stdin=event)
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
