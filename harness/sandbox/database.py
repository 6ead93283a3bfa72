"""A sandbox's own database: a clone of a baseline, a role that can reach only it, and
the row delta of everything done in it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from harness.errors import SandboxError
from harness.sandbox import capture, catalog, labels
from harness.sandbox.layout import DATABASE_SOCKET
from harness.sandbox.masking import parse_masks
from harness.sandbox.postgres import (
    DatabaseServer,
    ServerAddress,
    choose_version,
)
from harness.sandbox.reflink import REFLINK_MIN_VERSION, CloneSupport
from harness.sandbox.settings import DatabaseSettings, size_bytes
from harness.sandbox.snapshot import (
    Baseline,
    SnapshotError,
    Source,
    TableCheck,
    compare,
    ensure_baseline,
    source_state,
    table_fingerprints,
)

_LOG = logging.getLogger("harness.database")
OWNER_PID = "owner_pid"


@dataclass(frozen=True)
class SourceProbe:
    """What a baseline needs to know of a live source before it is reused or copied."""

    major: int | None
    """The PostgreSQL major version (None for a seed file)."""
    state: str | None
    """`source_state` now; None for a seed file or when it cannot be told."""


def probe_source(source: Source) -> SourceProbe:
    """One connection to a DSN source: its version and state (nothing for a seed file)."""
    if source.kind != "dsn":
        return SourceProbe(None, None)
    try:
        with psycopg.connect(source.location, connect_timeout=10) as conn:
            state = source_state(conn)
            if state is None:
                _LOG.warning("%s counts no writes (track_counts is off), so a cached baseline "
                             "cannot be checked against it; baseline_max_age_s or --refresh "
                             "renew it", source.display)
            return SourceProbe(int(conn.info.server_version) // 10000, state)
    except psycopg.Error as exc:
        raise SnapshotError(f"cannot connect to the source {source.display}: {exc}") from exc


OWNER_OPTIONS = "-c search_path=pg_catalog,pg_temp"
"""How the harness's superuser connections to a sandbox database start."""


def open_baseline(source: str | Source, settings: DatabaseSettings | None = None, *,
                  refresh: bool = False) -> tuple[ServerAddress, Baseline]:
    """Start the right sandbox server and make sure an up-to-date baseline of the source is
    on it."""
    settings = settings or DatabaseSettings()
    parsed = source if isinstance(source, Source) else Source.parse(source)
    probe = probe_source(parsed)
    wanted = settings.server_version
    if settings.clone == "reflink" and wanted is None and (probe.major or 0) < REFLINK_MIN_VERSION:
        wanted = REFLINK_MIN_VERSION  # cloning by reflink is new in 18; it restores older dumps
    choice = choose_version(probe.major, wanted)
    _LOG.info("sandbox database server: %s", choice.reason)
    server = replace(clone_method(DatabaseServer(
        choice.version, data_image_size=size_bytes(settings.data_image_size)).ensure(),
        settings.clone), chosen_because=choice.reason)
    baseline = ensure_baseline(server, parsed, refresh=refresh,
                               max_age_s=settings.baseline_max_age_s,
                               state=probe.state, follow_source=settings.refresh_on_source_change,
                               source_major=probe.major, masks=parse_masks(settings.mask))
    if baseline.why_built and parsed.kind == "dsn":
        _LOG.info("baseline of %s built: %s", parsed.display, baseline.why_built)
    return server, baseline


def clone_method(server: ServerAddress, wanted: str) -> ServerAddress:
    """The server, cloning as `sandbox.database.clone` asks: by reflink where its data
    directory allows (`auto`), always (`reflink`: an error saying why it cannot), or never
    (`copy`)."""
    if wanted == "copy":
        return replace(server, clone=CloneSupport(False, "sandbox.database.clone is copy"))
    if wanted == "reflink" and not server.clone.reflink:
        raise SandboxError(f"sandbox.database.clone is reflink, but PostgreSQL {server.version}"
                           f" cannot clone by reflink here: {server.clone.detail}. Set it to "
                           f"auto (copies where it cannot) or copy")
    return server


UNDO_SUFFIX = "_undo"
"""The undo role is named after the sandbox's role with this."""


def drop_role(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop a sandbox's role if it exists; first its grant on a server parameter (the undo
    role's), without which PostgreSQL refuses to drop it."""
    role = sql.Identifier(name)
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    if exists is None:
        return
    with _parameter_acl(conn):
        conn.execute(sql.SQL("REVOKE ALL ON PARAMETER session_replication_role FROM {}"
                             ).format(role))
    conn.execute(sql.SQL("DROP ROLE {}").format(role))


_PARAMETER_ACL_LOCK = 0x6861726E6573  # one server-wide row: sandboxes made at once queue here


@contextlib.contextmanager
def _parameter_acl(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Hold the server-wide lock on the parameter's privileges: PostgreSQL keeps them in
    one row, and two sessions granting at once collide on it (a unique violation)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_PARAMETER_ACL_LOCK,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_PARAMETER_ACL_LOCK,))


TEMP_FILE_LIMIT_KB = 1 << 20
"""Temporary files one query of the agent may write (1 GiB)."""


class SandboxDatabase:
    """The database of one sandbox; `create()` clones the baseline, `drop()` removes it."""

    def __init__(self, server: ServerAddress, baseline: Baseline, sandbox_id: str) -> None:
        self.server = server
        self.baseline = baseline
        self.name = self.name_for(sandbox_id)
        self.role = self.name
        self.password = secrets.token_urlsafe(18)
        self.undo_role = f"{self.name}{UNDO_SUFFIX}"
        """The harness's role for undoing an action: the sandbox role's rights and, beside
        them, silencing triggers (session_replication_role). Never a superuser: whatever the
        agent planted in its tables (a CHECK, a trigger) runs with no more than that."""
        self._undo_password = secrets.token_urlsafe(18)
        self.clone_seconds = 0.0
        """How long `create()` took (the copy, the roles and their rights)."""
        self.clone_method = "reflink" if server.clone.reflink else "copy"
        """How the baseline was copied: `reflink` (blocks shared with the baseline until
        written) or `copy` (every file copied)."""
        self.clone_detail = server.clone.detail
        """Where the server's data is, and why it copies when it does."""
        self._reader: psycopg.Connection[Any] | None = None

    @staticmethod
    def name_for(sandbox_id: str) -> str:
        """The database (and role) name of a sandbox."""
        return "sb_" + re.sub(r"[^a-z0-9_]", "_", sandbox_id.lower())

    def create(self) -> SandboxDatabase:
        """Clone the baseline and make the sandbox's role, with rights on this database only."""
        started = time.monotonic()
        db = sql.Identifier(self.name)
        with self.server.connect() as conn:
            if (self.server.version or 0) >= REFLINK_MIN_VERSION:
                # FILE_COPY copies each file by this method; `clone` on a filesystem without
                # reflinks would quietly copy in the kernel, so it is asked for only where
                # the server's data directory was seen to clone.
                conn.execute(sql.SQL("SET file_copy_method = {}").format(
                    sql.SQL("clone" if self.clone_method == "reflink" else "copy")))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                db, sql.Identifier(self.baseline.dbname)))
            # Its owner, for `harness gc`: the database exists before its sandbox's container.
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                db, sql.Literal(json.dumps({OWNER_PID: os.getpid(), **labels.tags()}))))
        try:
            self._grant()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                self.drop()
            raise
        self.clone_seconds = time.monotonic() - started
        return self

    def _grant(self) -> None:
        """The sandbox's roles, and their rights on its database only."""
        db, role = sql.Identifier(self.name), sql.Identifier(self.role)
        with self.server.connect() as conn:
            # The database was just made, so roles by these names are a dead run's leftovers.
            for leftover in (self.undo_role, self.role):
                drop_role(conn, leftover)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT 20").format(
                role, sql.Literal(self.password)))
            # A sort or hash spilling to disk stops at this size (only a superuser may raise
            # it); rows themselves are bounded by the row budget, not in bytes.
            conn.execute(sql.SQL("ALTER ROLE {} SET temp_file_limit = {}").format(
                role, sql.Literal(f"{TEMP_FILE_LIMIT_KB}kB")))
            undo = sql.Identifier(self.undo_role)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                undo, sql.Literal(self._undo_password), role))
            with _parameter_acl(conn):
                conn.execute(sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}"
                                     ).format(undo))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role))
        with self.server.connect(self.name) as conn:
            # The harness's own DDL below is not the agent's: the capture's DDL hook skips it.
            conn.execute("SELECT set_config('harness_capture.busy', token, false) "
                         "FROM harness_capture.secret")
            schemas = [row[0] for row in conn.execute(
                f"SELECT n.nspname FROM pg_namespace n WHERE {catalog.USER_NAMESPACE}")]
            for schema in schemas:
                name = sql.Identifier(schema)
                for statement in (
                    "GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}",
                    "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES "
                    "ON ALL TABLES IN SCHEMA {schema} TO {role}",
                    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
                ):
                    conn.execute(sql.SQL(statement).format(schema=name, role=role))
            # The agent owns its copy's tables (so migrations can ALTER them); capture
            # triggers it disables or drops are put back by the capture's DDL hook.
            for (table,) in conn.execute(f"""
                    SELECT c.oid::regclass::text FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {catalog.USER_NAMESPACE}
                    """).fetchall():
                conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(table), role))
            for (sequence,) in conn.execute(f"""
                    SELECT c.oid::regclass::text FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    LEFT JOIN pg_depend d ON d.objid = c.oid AND d.deptype IN ('a', 'i')
                    WHERE c.relkind = 'S' AND d.objid IS NULL AND {catalog.USER_NAMESPACE}
                    """).fetchall():
                conn.execute(sql.SQL("ALTER SEQUENCE {} OWNER TO {}").format(sql.SQL(sequence),
                                                                              role))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA harness_capture TO {}").format(role))
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION harness_capture.recorded_changes("
                                 "bigint, bigint), harness_capture.masked_columns(), "
                                 "harness_capture.mark() TO {}").format(role))
            conn.execute("TRUNCATE harness_capture.ddl")  # the grants above are not the agent's

    def clone_report(self) -> dict[str, Any]:
        """How this database was copied from its baseline, for `exec --json` and traces."""
        return {"database": self.name, "clone_method": self.clone_method,
                "clone_seconds": round(self.clone_seconds, 4), "clone_detail": self.clone_detail,
                "server_version": self.server.version,
                "server_chosen_because": self.server.chosen_because}

    def drop(self) -> None:
        """Remove the database and the role; safe to call twice."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        with self.server.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.name)))
            for name in (self.undo_role, self.role):
                with contextlib.suppress(psycopg.Error):
                    drop_role(conn, name)

    # ------------------------------------------------------------ access

    def environment(self) -> dict[str, str]:
        """What the agent's container needs for psql and any libpq client to just work."""
        url = f"postgresql://{self.role}:{self.password}@/{self.name}?host={DATABASE_SOCKET}"
        return {"PGHOST": DATABASE_SOCKET, "PGDATABASE": self.name, "PGUSER": self.role,
                "PGPASSWORD": self.password, "DATABASE_URL": url}

    def secrets(self) -> list[str]:
        """Values to redact from anything shown or recorded."""
        return [self.password]

    def mounts(self) -> dict[str, str]:
        """The server's socket folder, mounted read-only into the agent's container."""
        return {str(self.server.socket_dir): DATABASE_SOCKET}

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A connection as the sandbox's own role (what the agent can do)."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(host=str(self.server.socket_dir), dbname=self.name,
                               user=self.role, password=self.password, **kwargs)

    def connect_to_undo(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A connection as the undo role: the agent's rights, triggers silenceable, and
        short lock and statement timeouts (what the agent left locked cannot hang it)."""
        return psycopg.connect(host=str(self.server.socket_dir), dbname=self.name,
                               user=self.undo_role, password=self._undo_password,
                               options="-c lock_timeout=5s -c statement_timeout=120s",
                               **kwargs)

    def end_other_sessions(self, keep: list[int]) -> int:
        """End every session of the agent's role but those whose backend pids are `keep`
        (a psql left running in the background, a transaction left open): what an action
        did is then done when it returns. How many were ended."""
        row = self._owner().execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND usename = %s AND NOT pid = ANY(%s)",
            (self.role, keep)).fetchone()
        return int(row[0]) if row else 0

    def connect_as_owner(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection to this database (for the harness's own reads). Names
        resolve in pg_catalog alone: the agent may create functions and operators in its
        schemas, and one matching a call better than PostgreSQL's own (an `=` taking
        exactly oid and regclass) would run with the superuser's rights."""
        kwargs.setdefault("options", OWNER_OPTIONS)
        return self.server.connect(self.name, **kwargs)

    def delta(self, between: tuple[capture.Mark, capture.Mark] | None = None
              ) -> capture.RowDelta:
        """The net row delta and DDL since the snapshot; with `between` (two `mark`s), the
        rows the statements between them changed, from the state before them, and the
        schema changes between them."""
        return capture.read_delta(self._owner(), between=between)

    def mark(self) -> capture.Mark:
        """How far the capture has got: the statements and schema changes an action runs
        fall between its marks before and after."""
        return capture.mark(self._owner())

    def _owner(self) -> psycopg.Connection[Any]:
        # One connection kept for the harness's reads: deltas are read after every action.
        if self._reader is None or self._reader.closed:
            self._reader = self.connect_as_owner()
        return self._reader


def verify_source(source: str, settings: DatabaseSettings | None = None) -> list[TableCheck]:
    """Snapshot a live `source` afresh and compare every table's row count and content
    checksum (and every sequence) between it and a copy of the snapshot."""
    parsed = Source.parse(source)
    if parsed.kind != "dsn":
        raise SnapshotError("db verify compares with a live database: give --source a DSN")
    server, baseline = open_baseline(parsed, settings, refresh=True)
    clone = SandboxDatabase(server, baseline, "verify").create()
    try:
        with psycopg.connect(parsed.location) as conn:
            expected = table_fingerprints(conn)
        with clone.connect_as_owner() as conn:
            found = table_fingerprints(conn)
    finally:
        clone.drop()
    return compare(expected, found)
