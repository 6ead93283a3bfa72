"""Real PostgreSQL, once per session: the sandbox database server, and a separate target
server (the "real system") loaded with the Chinook sample database."""

from __future__ import annotations

import contextlib
import os
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


@pytest.fixture(scope="session", autouse=True)
def _remove_the_session_database_server(harness_home: Path) -> Iterator[None]:
    """Whoever started it (a fixture, a Sandbox, a CLI run), the session's sandbox database
    server goes at the end of the session."""
    yield
    with contextlib.suppress(HarnessError):
        DatabaseServer(15).destroy()


@pytest.fixture(scope="session")
def pg_server(docker_client: object, harness_home: Path) -> ServerAddress:
    """The sandbox database server of this test session."""
    return _start(DatabaseServer(15))


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
    target_server.run_script(CHINOOK)
    return target_server.conninfo("chinook")


def rows_of(conn: psycopg.Connection[object], table: str) -> list[dict[str, object]]:
    """Every row of `table` as the JSON objects the capture records."""
    return [row[0] for row in conn.execute(f"SELECT to_jsonb(t) FROM {table} t")]  # type: ignore[misc]
