"""Real PostgreSQL, once per session: the sandbox database server, and a separate target
server (the "real system") loaded with the Chinook sample database."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness.errors import HarnessError
from harness.sandbox.postgres import DatabaseServer, ServerAddress

CHINOOK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "chinook" / \
    "chinook_postgresql.sql"


def _start(server: DatabaseServer) -> ServerAddress:
    try:
        return server.ensure()
    except HarnessError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the PostgreSQL sandbox image and a Docker engine: {exc}")
        pytest.skip(str(exc))
        raise


@pytest.fixture(scope="session")
def pg_server(docker_client: object, harness_home: Path) -> Iterator[ServerAddress]:
    """The sandbox database server of this test session."""
    server = DatabaseServer(15)
    address = _start(server)
    yield address
    server.destroy()


@pytest.fixture(scope="session")
def target_server(docker_client: object, harness_home: Path) -> Iterator[ServerAddress]:
    """A second, separate PostgreSQL server standing for the real target system."""
    server = DatabaseServer(15, instance="target")
    address = _start(server)
    yield address
    server.destroy()


@pytest.fixture(scope="session")
def chinook_dsn(target_server: ServerAddress) -> str:
    """The Chinook database on the target server, loaded from the shared dataset."""
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(target_server.socket_dir),
         "-U", "postgres", "-d", "postgres", "-f", str(CHINOOK)],
        capture_output=True, text=True, env={**os.environ, "PGPASSWORD": target_server.password},
        check=False)
    assert done.returncode == 0, done.stderr
    return target_server.conninfo("chinook")


def make_target_database(target: ServerAddress, name: str, setup_sql: str) -> str:
    """A fresh database on the target server, set up by `setup_sql`; returns its DSN."""
    with target.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    with target.connect(name) as conn:
        conn.execute(setup_sql)
    return target.conninfo(name)


def rows_of(conn: psycopg.Connection[object], table: str) -> list[dict[str, object]]:
    """Every row of `table` as the JSON objects the capture records."""
    return [row[0] for row in conn.execute(f"SELECT to_jsonb(t) FROM {table} t")]  # type: ignore[misc]
