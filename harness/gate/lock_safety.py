"""What a migration's SQL does to a live PostgreSQL database (table rewrites, indexes built
without CONCURRENTLY, NOT NULL without a default, long locks), judged by squawk
(`squawk-cli`), run once over every migration of a pull request."""

from __future__ import annotations

import json
import re
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
    statements = [_statements(item.sql) for item in inputs]
    for entry in reported:
        if entry.get("rule_name") not in wanted:
            continue
        index = int(Path(entry["file"]).stem)
        item = inputs[index]
        line = int(entry.get("line", 0)) + 1
        if _on_a_new_table(statements[index], line):
            continue
        if item.line_map is not None:
            line = item.line_map[min(line, len(item.line_map)) - 1]
        if item.lines is not None and line not in item.lines:
            continue
        message = entry.get("message", "")
        if entry.get("help"):
            message += f" {entry['help']}"
        found.append((index, line,
                      LockFinding(item.path, line, entry["rule_name"], message)))
    return [finding for _, _, finding in sorted(found, key=lambda f: (f[0], f[1]))]


_CREATED = re.compile(r'(?is)^\s*CREATE\s+(?:UNLOGGED\s+|TEMP(?:ORARY)?\s+)?TABLE\s+'
                      r'(?:IF\s+NOT\s+EXISTS\s+)?([\w."]+)')
_TOUCHED = re.compile(r'(?is)^\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX\b.*?\bON\s+(?:ONLY\s+)?([\w."]+)'
                      r'|ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?([\w."]+))')


def _statements(sql: str) -> list[tuple[int, str]]:
    """The statements of `sql` with the line each starts on (1-based); empty when it does
    not parse (then nothing is excused)."""
    from pglast.parser import ParseError, split

    encoded = sql.encode()
    try:
        slices = split(sql, only_slices=True)
    except ParseError:
        return []
    return [(encoded[:part.start].count(b"\n") + 1, encoded[part].decode(errors="replace"))
            for part in slices]


def _table(name: str) -> str:
    parts = [part.strip('"').lower() for part in name.split(".")]
    return ".".join(parts[1:] if len(parts) == 2 and parts[0] == "public" else parts)


def _on_a_new_table(statements: list[tuple[int, str]], line: int) -> bool:
    """Whether the statement on `line` indexes or alters a table created earlier in the
    same migration: no one else can be holding or waiting for a lock on it."""
    created: set[str] = set()
    current = None
    for start, text in statements:
        if start > line:
            break
        if current is not None:
            match = _CREATED.match(current)
            if match:
                created.add(_table(match.group(1)))
        current = text
    touched = _TOUCHED.match(current or "")
    return touched is not None and _table(touched.group(1) or touched.group(2)) in created
