"""What a migration's SQL does to a live PostgreSQL database (table rewrites, indexes built
without CONCURRENTLY, NOT NULL without a default, long locks), judged by squawk
(`squawk-cli`), run once over every migration of a pull request."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError


@dataclass(frozen=True)
class SquawkInput:
    """SQL to judge: where it comes from, its text, and which reported line each line of
    the text is (None: the text's own lines); only findings on `lines` count (None: all)."""

    path: str
    sql: str
    line_map: Sequence[int] | None = None
    lines: frozenset[int] | None = None


@dataclass(frozen=True)
class LockFinding:
    """One squawk finding: the file and line of the statement, the rule, what it means."""

    path: str
    line: int | None
    rule: str
    message: str


class SquawkError(HarnessError):
    """squawk is missing or failed."""


def squawk_binary() -> str:
    """The squawk executable: beside this Python (a venv's `bin/`), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if not found:
        raise SquawkError("squawk is not installed (pip install squawk-cli), so the lock "
                          "safety of migrations cannot be judged; or set gate.lock_safety: off")
    return found


def lock_findings(inputs: Sequence[SquawkInput], rules: Sequence[str],
                  postgres_version: str | None = None) -> list[LockFinding]:
    """squawk's findings of `rules` on `inputs`, in input and line order."""
    if not inputs or not rules:
        return []
    wanted = set(rules)
    with tempfile.TemporaryDirectory(prefix="harness-squawk-") as scratch:
        files = []
        for number, item in enumerate(inputs):
            target = Path(scratch) / f"{number:05d}.sql"
            target.write_text(item.sql)
            files.append(str(target))
        version = ["--pg-version", postgres_version] if postgres_version else []
        done = subprocess.run([squawk_binary(), "--reporter", "json",
                               *version, *files], capture_output=True, text=True, check=False,
                              cwd=scratch)
        if done.returncode not in (0, 1) or not done.stdout.strip().startswith("["):
            raise SquawkError(f"squawk failed (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-500:]}")
        reported = json.loads(done.stdout)
    found = []
    for entry in reported:
        if entry.get("rule_name") not in wanted:
            continue
        item = inputs[int(Path(entry["file"]).stem)]
        line = int(entry.get("line", 0)) + 1
        if item.line_map is not None:
            line = item.line_map[min(line, len(item.line_map)) - 1]
        if item.lines is not None and line not in item.lines:
            continue
        message = entry.get("message", "")
        if entry.get("help"):
            message += f" {entry['help']}"
        found.append((int(Path(entry["file"]).stem), line,
                      LockFinding(item.path, line, entry["rule_name"], message)))
    return [finding for _, _, finding in sorted(found, key=lambda f: (f[0], f[1]))]
