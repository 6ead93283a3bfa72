"""Long work nobody asked for by name (a database snapshotted on first use) is told: on
stderr by the command line, and over MCP as progress notifications to a call that asks
for them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client

from harness.config import parse_config
from harness.fixtures import fixture_seed
from harness.mcpserver import build_server

pytestmark = [pytest.mark.docker, pytest.mark.postgres]


def test_a_first_snapshot_is_told_as_progress_notifications(
        shop_repo: Path, tmp_path: Path) -> None:
    seed = tmp_path / "fresh.sql"  # a seed no baseline was built from yet
    seed.write_text(fixture_seed("shop").read_text() + f"\n-- {tmp_path.name}\n")
    server, sessions = build_server(parse_config(
        f"target:\n  repo: {shop_repo}\n  database: {seed}\n"))
    told: list[tuple[float, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        told.append((value, message))

    async def run() -> bool:
        async with Client(server) as client:
            result = await client.call_tool("db_query", {"sql": "SELECT count(*) FROM orders"},
                                            progress_callback=progress)
            quiet = await client.call_tool("db_query", {"sql": "SELECT 1"})
            return not result.is_error and not quiet.is_error

    try:
        assert anyio.run(run)
    finally:
        sessions.close_all()
    messages = [message or "" for _, message in told]
    assert any(m.startswith(f"snapshotting {seed}") for m in messages), messages
    assert any("baseline of" in m and "built in" in m for m in messages), messages
    assert [value for value, _ in told] == sorted(value for value, _ in told)


def test_the_command_line_tells_a_first_snapshot_on_stderr(tmp_path: Path) -> None:
    seed = tmp_path / "fresh.sql"
    seed.write_text(fixture_seed("shop").read_text() + f"\n-- cli {tmp_path.name}\n")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "db", "snapshot", "--source",
                           str(seed), "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert f"harness: snapshotting {seed} into a baseline" in said
    assert "built in" in said and done.stdout.lstrip().startswith("{"), "stdout stays JSON"
