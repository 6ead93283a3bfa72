"""Real PostgreSQL, once per session: the sandbox database server, and separate target
servers (the "real systems"): a stock one (no prepared transactions, as PostgreSQL ships
and most managed services run) loaded with the Chinook sample database, and one that
allows prepared transactions."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness.errors import HarnessError
from harness.fixtures import fixtures_root
from harness.sandbox.database import SandboxDatabase
from harness.sandbox.postgres import DatabaseServer, ServerAddress, available_versions

CHINOOK = fixtures_root() / "datasets" / "chinook" / "chinook_postgresql.sql"
SANDBOX_VERSION = int(os.environ.get("HARNESS_TEST_SANDBOX_VERSION") or 15)
"""The sandbox server's major version for the session: `HARNESS_TEST_SANDBOX_VERSION=18`
runs the database tests on databases cloned by reflink (where the host can mount the
server's data image), against the same PostgreSQL 15 targets."""
KEEP_SERVERS = bool(os.environ.get("HARNESS_TEST_KEEP_SERVERS"))
"""Set by the mutation runner (tests/mutation/run.py): hundreds of short sessions share one
harness home, whose database servers then outlive each session."""


def _destroy(server: DatabaseServer) -> None:
    if not KEEP_SERVERS:
        server.destroy()


def _start(server: DatabaseServer) -> ServerAddress:
    try:
        return server.ensure()
    except HarnessError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the PostgreSQL sandbox image and a Docker engine: {exc}")
        pytest.skip(str(exc))
        raise


@pytest.fixture(scope="session", autouse=True)
def _remove_the_session_database_server(harness_home: Path, no_leftover_resources: None
                                        ) -> Iterator[None]:
    """Whoever started it (a fixture, a Sandbox, a CLI run), the session's sandbox database
    server goes at the end of the session."""
    yield
    for version in available_versions():
        with contextlib.suppress(HarnessError):
            _destroy(DatabaseServer(version))


@pytest.fixture(scope="session", autouse=True)
def _sandbox_server_version() -> Iterator[None]:
    """Sandboxes of the session's PostgreSQL 15 targets and seed files get a server of
    SANDBOX_VERSION (as `sandbox.database.server_version` asks); tests of other versions'
    targets keep their own."""
    if SANDBOX_VERSION == 15:
        yield
        return
    from harness.sandbox import database

    chosen = database.choose_version
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(database, "choose_version", lambda major, wanted=None: chosen(
            major, wanted or (SANDBOX_VERSION if major in (None, 15) else None)))
        yield


@pytest.fixture(scope="session")
def pg_server(docker_client: object, harness_home: Path) -> ServerAddress:
    """The sandbox database server of this test session."""
    return _start(DatabaseServer(SANDBOX_VERSION))


@pytest.fixture(scope="session")
def target_server(docker_client: object, harness_home: Path) -> Iterator[ServerAddress]:
    """A separate PostgreSQL server standing for the real target system, with PostgreSQL's
    default settings (max_prepared_transactions = 0)."""
    server = DatabaseServer(15, instance="target",
                            settings={"max_prepared_transactions": "0"})
    address = _start(server)
    yield address
    _destroy(server)


@pytest.fixture(scope="session")
def target_server_2pc(docker_client: object, harness_home: Path) -> Iterator[ServerAddress]:
    """A target server that allows prepared transactions (two-phase promotion)."""
    server = DatabaseServer(15, instance="target-2pc",
                            settings={"max_prepared_transactions": "16"})
    address = _start(server)
    yield address
    _destroy(server)


@pytest.fixture(scope="session")
def target_server_17(docker_client: object, harness_home: Path) -> Iterator[ServerAddress]:
    """A stock PostgreSQL 17 target (Debian trixie's packages, built offline)."""
    server = DatabaseServer(17, instance="target", settings={"max_prepared_transactions": "0"})
    address = _start(server)
    yield address
    _destroy(server)


def application_role(server: ServerAddress, dbname: str, *, replication_role: bool = False
                     ) -> str:
    """The DSN of a role that may only read and write the rows of `dbname` (DML on its
    tables and sequences, nothing else), as teams promote with; with `replication_role`
    it may also SET session_replication_role (PostgreSQL 15's GRANT SET ON PARAMETER)."""
    role = f"app_{dbname}"[:60]
    password = "app-" + role
    with server.connect(dbname) as conn:
        conn.execute(f'DROP OWNED BY "{role}"' if conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() else "SELECT 1")
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        conn.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO "{role}"')
        for schema, in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE "
                                    "'pg\\_%' AND nspname <> 'information_schema'").fetchall():
            conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA '
                         f'"{schema}" TO "{role}"')
            conn.execute(f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "{schema}" '
                         f'TO "{role}"')
        if replication_role:
            conn.execute(f'GRANT SET ON PARAMETER session_replication_role TO "{role}"')
    return psycopg.conninfo.make_conninfo(server.conninfo(dbname), user=role,
                                          password=password)


@pytest.fixture(scope="session")
def chinook_dsn(target_server: ServerAddress) -> str:
    """The Chinook database on the target server, loaded from the shared dataset."""
    target_server.run_script(CHINOOK)
    return target_server.conninfo("chinook")


def rows_of(conn: psycopg.Connection[object], table: str) -> list[dict[str, object]]:
    """Every row of `table` as the JSON objects the capture records."""
    return [row[0] for row in conn.execute(f"SELECT to_jsonb(t) FROM {table} t")]  # type: ignore[misc]


def run(db: SandboxDatabase, *statements: str) -> None:
    """Run `statements` in `db` as its agent would, each committed on its own."""
    with db.connect() as conn:
        for statement in statements:
            conn.execute(statement)
