"""Baselines: a copy of the target database made once, kept on the sandbox database
server, and cloned (CREATE DATABASE ... TEMPLATE) for every sandbox.

A source is a live PostgreSQL (a DSN, copied with pg_dump | pg_restore: schema, data,
sequences, constraints, indexes) or a seed SQL file (run with psql). A baseline is
cached by the source's identity and renewed on request, past a maximum age, or when a
live source has changed since it was made: an agent must not work on stale data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harness.errors import SandboxError
from harness.progress import report
from harness.sandbox import capture, catalog
from harness.sandbox.masking import ColumnMask, apply_masks, fingerprint, mask_key
from harness.sandbox.postgres import (
    ServerAddress,
    client_environment,
    client_major,
    client_tool,
)

_CONNECT = re.compile(r"^\s*\\(?:c|connect)\s+(?:-reuse-previous=\S+\s+)?\"?([\w$]+)\"?",
                      re.MULTILINE)


class SnapshotError(SandboxError):
    """A baseline could not be made from its source."""


@dataclass(frozen=True)
class Source:
    """Where a baseline comes from: a DSN or a seed SQL file."""

    kind: str  # "dsn" or "seed"
    location: str
    identity: str

    @classmethod
    def parse(cls, value: str | Path) -> Source:
        """A path to an existing .sql file is a seed; anything else is a DSN."""
        path = Path(value)
        if str(value).endswith(".sql") or path.is_file():
            if not path.is_file():
                raise SnapshotError(f"seed file {path} does not exist")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            return cls("seed", str(path.resolve()), digest)
        try:
            params = psycopg.conninfo.conninfo_to_dict(str(value))
        except psycopg.ProgrammingError as exc:
            raise SnapshotError(f"{value!r} is neither a .sql seed file nor a valid DSN: {exc}"
                                ) from exc
        params.pop("password", None)
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        return cls("dsn", str(value), digest)

    @property
    def display(self) -> str:
        """The location with any password hidden."""
        if self.kind == "seed":
            return self.location
        params = psycopg.conninfo.conninfo_to_dict(self.location)
        if "password" in params:
            params["password"] = "***"
        return psycopg.conninfo.make_conninfo("", **params)


@dataclass(frozen=True)
class Baseline:
    """A cached copy of a source on the sandbox database server."""

    dbname: str
    source_kind: str
    source_identity: str
    source: str
    created_at: float
    build_seconds: float
    server_version: str
    tables: int
    rows: int
    source_state: str | None = None
    """`source_state` of a live source just before it was copied (None for a seed)."""
    masked: dict[str, list[str]] = field(default_factory=dict)
    """Columns replaced by masking when it was built, per table (change sets' names)."""
    reused: bool = False
    why_built: str | None = None
    """Why this baseline was (re)built rather than reused; None when reused."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def baseline_name(source: Source, masking: str = "") -> str:
    """The database name of a source's baseline; it names the capture's version too, so a
    harness with a changed capture never clones a baseline made by an older one, and the
    masking (`masking.fingerprint`), so a masked copy and an unmasked one never mix."""
    return f"baseline_{source.kind}_{source.identity}_{capture.VERSION}" + (
        f"_m{masking}" if masking else "")


def ensure_baseline(server: ServerAddress, source: Source, *, refresh: bool = False,
                    max_age_s: float | None = None, state: str | None = None,
                    follow_source: bool = True, source_major: int | None = None,
                    masks: list[ColumnMask] | None = None) -> Baseline:
    """The baseline of `source`, built unless a cached one is fresh enough: not older than
    `max_age_s` and, when `follow_source`, made when a live source was in `state` (its
    `source_state` now; None when that cannot be told). `masks` are applied as it is
    built."""
    masks = masks or []
    key = mask_key() if masks else ""
    name = baseline_name(source, fingerprint(masks, key) if masks else "")
    asked_at = time.time()
    with server.connect() as lock:
        # One builder per baseline across processes (parallel episodes, MCP sessions); who
        # waited finds the baseline the other one built.
        lock.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        try:
            cached = _read_metadata(lock, name)
            if cached is None:
                why = "no baseline of this source was cached"
            elif refresh and cached.created_at < asked_at:
                why = "a refresh was asked for"
            elif max_age_s is not None and time.time() - cached.created_at > max_age_s:
                why = f"the cached one was older than {max_age_s:g} s"
            elif follow_source and state is not None and state != cached.source_state:
                why = f"the source has changed since {_when(cached.created_at)}"
            else:
                return Baseline(**{**asdict(cached), "reused": True})
            report(f"snapshotting {source.display} into a baseline ({why}); later "
                   "sandboxes clone it in a second")
            built = _build(server, source, name, state, why, source_major, masks, key)
            report(f"baseline of {source.display} built in {built.build_seconds:.1f} s: "
                   f"{built.tables} tables, {built.rows} rows")
            return built
        finally:
            lock.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))


_SOURCE_STATE = """
    SELECT current_setting('track_counts')::bool, json_build_object(
      'relations', (SELECT coalesce(json_agg(r ORDER BY r.oid), '[]') FROM (
        SELECT c.oid, c.relkind, c.relfilenode, c.xmin::text AS definition,
               s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
               (SELECT string_agg(a.attname || ' ' || a.atttypid || ' ' || a.attnotnull, ','
                                  ORDER BY a.attnum)
                FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
               (SELECT string_agg(o.oid || ' ' || o.xmin::text, ',' ORDER BY o.oid)
                FROM pg_constraint o WHERE o.conrelid = c.oid) AS constraints,
               (SELECT string_agg(i.indexrelid::text, ',' ORDER BY i.indexrelid)
                FROM pg_index i WHERE i.indrelid = c.oid) AS indexes
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND @USER_NAMESPACE@) r),
      'sequences', (SELECT json_agg(q.last_value ORDER BY q.schemaname, q.sequencename)
                    FROM pg_sequences q),
      'routines', (SELECT string_agg(p.oid || ' ' || p.xmin::text, ',' ORDER BY p.oid)
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE @USER_NAMESPACE@),
      'types', (SELECT string_agg(t.oid || ' ' || t.xmin::text, ',' ORDER BY t.oid)
                FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE @USER_NAMESPACE@))::text""".replace("@USER_NAMESPACE@", catalog.USER_NAMESPACE)


def source_state(conn: psycopg.Connection[Any]) -> str | None:
    """A digest of what a live database holds, cheap to take and different once anything a
    baseline copies has changed: rows written (the statistics counters of every table;
    a change is seen once its session reports it, at once or within seconds), TRUNCATE and
    rewrites (new files), DDL (catalogue rows), sequences. None when the server counts no
    writes (`track_counts` off). It may change without a change that matters (statistics
    reset, VACUUM FULL, an aborted write): that costs a rebuild, never a stale copy."""
    counting, state = conn.execute(_SOURCE_STATE).fetchone()  # type: ignore[misc]
    if not counting:
        return None
    return hashlib.sha256(str(state).encode()).hexdigest()[:32]


def _read_metadata(conn: psycopg.Connection[Any], name: str) -> Baseline | None:
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (name,)).fetchone()
    if row is None or not row[0]:
        return None
    try:
        return Baseline(**json.loads(row[0]))
    except (TypeError, ValueError):
        return None


def _build(server: ServerAddress, source: Source, name: str, state: str | None,
           why: str, source_major: int | None = None, masks: list[ColumnMask] | None = None,
           key: str = "") -> Baseline:
    started = time.monotonic()
    building = f"{name}_building"
    try:
        with server.connect() as conn:
            _drop(conn, building)
            if source.kind == "dsn":
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                    sql.Identifier(building)))
                _copy_from_dsn(server, source, building, source_major)
            else:
                _load_seed(server, conn, source, building)
        with server.connect() as conn:
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(building)))
        with server.connect(building) as conn:
            masked = apply_masks(conn, masks or [], key)  # before the capture: not a change
            capture.install(conn)
            capture.record_masked(conn, masked)
            conn.execute("SELECT harness_capture.forget()")
            tables, rows = _size(conn)
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except BaseException:
        # A failed build leaves nothing behind (`harness gc` drops what a kill leaves).
        with contextlib.suppress(psycopg.Error), server.connect() as conn:
            _drop(conn, building)
        raise
    baseline = Baseline(name, source.kind, source.identity, source.display, time.time(),
                        round(time.monotonic() - started, 3), version, tables, rows, state,
                        masked)
    with server.connect() as conn:
        _drop(conn, name)
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(building), sql.Identifier(name)))
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(json.dumps(baseline.to_dict()))))
        # A template may have no other connections while it is copied.
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"
                             ).format(sql.Identifier(name)))
    return replace(baseline, why_built=why)


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _copy_from_dsn(server: ServerAddress, source: Source, database: str,
                   source_major: int | None) -> None:
    """pg_dump | pg_restore, with the host's programs when they are as new as the source
    (pg_dump refuses a newer server), else with those of the sandbox server's image."""
    params = psycopg.conninfo.conninfo_to_dict(source.location)
    password = params.pop("password", None)
    source_dsn = psycopg.conninfo.make_conninfo("", **params)
    host_major = client_major()
    if source_major is not None and server.version is not None and (
            host_major is None or host_major < source_major):
        _copy_in_container(server, source, source_dsn, password, database)
        return
    dump = subprocess.Popen(
        [client_tool("pg_dump"), *_DUMP, f"--dbname={source_dsn}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=client_environment(str(password) if password is not None else None))
    restore = subprocess.run(
        [client_tool("pg_restore"), *_RESTORE,
         f"--dbname={server.conninfo(database, with_password=False)}"],
        stdin=dump.stdout, capture_output=True, env=client_environment(server.password), check=False)
    if dump.stdout is not None:
        dump.stdout.close()
    dump_errors = ""
    if dump.stderr is not None:
        dump_errors = dump.stderr.read().decode(errors="replace")
        dump.stderr.close()
    if dump.wait() != 0:
        raise SnapshotError(f"pg_dump of {source.display} failed: {dump_errors.strip()}")
    if restore.returncode != 0:
        raise SnapshotError(
            f"pg_restore into the sandbox server failed: {restore.stderr.decode().strip()}")


_DUMP = ["--format=custom", "--no-owner", "--no-privileges"]
_RESTORE = ["--no-owner", "--no-privileges", "--exit-on-error"]


def _copy_in_container(server: ServerAddress, source: Source, source_dsn: str,
                       password: Any, database: str) -> None:
    from harness.sandbox.postgres import DatabaseServer

    host = str(psycopg.conninfo.conninfo_to_dict(source_dsn).get("host") or "")
    sockets = [folder for folder in host.split(",") if folder.startswith("/")]
    target = psycopg.conninfo.make_conninfo("", host="/run/harness/sandbox-socket",
                                            user=server.user, dbname=database)
    script = ('set -o pipefail; PGPASSWORD="$SOURCE_PASSWORD" pg_dump ' + " ".join(_DUMP)
              + ' --dbname="$SOURCE" | PGPASSWORD="$TARGET_PASSWORD" pg_restore '
              + " ".join(_RESTORE) + ' --dbname="$TARGET"')
    assert server.version is not None
    code, errors = DatabaseServer(server.version).run_client(script, environment={
        "SOURCE": source_dsn, "SOURCE_PASSWORD": str(password or ""), "TARGET": target,
        "TARGET_PASSWORD": server.password}, socket_dirs=sockets)
    if code != 0:
        raise SnapshotError(f"copying {source.display} with PostgreSQL {server.version}'s "
                            f"pg_dump failed: {errors.strip()[-2000:]}")


def _load_seed(server: ServerAddress, conn: psycopg.Connection[Any], source: Source,
               database: str) -> None:
    """Run a seed file. A seed that makes and enters its own database (`CREATE DATABASE x;
    \\c x`), as many published samples do, is run from the maintenance database and the
    database it made becomes the baseline."""
    text = Path(source.location).read_text(errors="replace")
    switches = set(_CONNECT.findall(text))
    if len(switches) > 1:
        raise SnapshotError(f"seed {source.location} connects to several databases "
                            f"{sorted(switches)}; one baseline holds one database")
    if switches:
        own = switches.pop()
        if own.startswith(("baseline_", "sb_")) or own in ("postgres", "template0", "template1"):
            raise SnapshotError(f"seed {source.location} enters {own!r}, a reserved name")
        existed = bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                    (own,)).fetchone())
        try:
            _run_seed(server, "postgres", source)
        except SnapshotError:
            if not existed:  # what the failed seed made is not kept
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(own)))
            raise
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (own,)).fetchone():
            raise SnapshotError(f"seed {source.location} did not create the database {own!r}")
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(own), sql.Identifier(database)))
    else:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        _run_seed(server, database, source)


def _run_seed(server: ServerAddress, database: str, source: Source) -> None:
    try:
        server.run_script(Path(source.location), database)
    except SandboxError as exc:
        raise SnapshotError(f"seed {exc}") from exc


def _size(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    tables = catalog.user_tables(conn)
    rows = 0
    for table, kind in tables.items():
        result = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.SQL(catalog.scan(table, kind))))
        rows += int(result.fetchone()[0])  # type: ignore[index]
    return len(tables), rows


@dataclass(frozen=True)
class TableCheck:
    """One table compared between the source and a snapshot."""

    table: str
    source_rows: int | None
    snapshot_rows: int | None
    source_checksum: str | None
    snapshot_checksum: str | None

    @property
    def equal(self) -> bool:
        """Same row count and same content checksum."""
        return (self.source_rows, self.source_checksum) == (self.snapshot_rows,
                                                            self.snapshot_checksum)


def table_fingerprints(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent content checksum of every user table, and the
    state of every sequence."""
    found: dict[str, tuple[int, str]] = {}
    for table, kind in catalog.user_tables(conn).items():
        count, checksum = conn.execute(sql.SQL(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
            "FROM {} t").format(sql.SQL(catalog.scan(table, kind)))).fetchone()  # type: ignore[misc]
        found[table] = (int(count), str(checksum))
    for name, last_value, called in conn.execute("""
            SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename),
                   coalesce(last_value, 0), last_value IS NOT NULL
            FROM pg_sequences WHERE schemaname NOT IN ('harness_capture')"""):
        found[f"sequence {name}"] = (int(last_value), str(called))
    return found


def compare(source: dict[str, tuple[int, str]], snapshot: dict[str, tuple[int, str]]
            ) -> list[TableCheck]:
    """Every table of either side, compared."""
    checks = []
    for table in sorted(set(source) | set(snapshot)):
        a, b = source.get(table), snapshot.get(table)
        checks.append(TableCheck(table, a[0] if a else None, b[0] if b else None,
                                 a[1] if a else None, b[1] if b else None))
    return checks
