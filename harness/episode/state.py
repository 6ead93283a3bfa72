"""Runtime state the harness gives the agent explicitly, so it need not guess: environment
variables, the database schema, which auth headers exist, and files with their checksum
and age (a stale or changed file is visible as such)."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from harness.config import (
    AuthHeaderSource,
    DbSchemaSource,
    EnvVarSource,
    FileSource,
    StateInjection,
)
from harness.sandbox import catalog
from harness.tables import TableName


@dataclass(frozen=True)
class InjectedFile:
    """A file as the agent's workspace holds it, with what tells whether to trust it."""

    path: str
    sha256: str
    bytes: int
    content: str
    last_commit: str | None
    """When the file was last committed (ISO 8601), None if never."""
    age_days: float | None
    uncommitted_changes: bool


@dataclass(frozen=True)
class InjectedState:
    """Everything injected, as one object an agent adapter can place in its prompt."""

    env: dict[str, str] = field(default_factory=dict)
    """Variables shown with their values (secret ones are in `secret_env`)."""
    secret_env: list[str] = field(default_factory=list)
    """Names of variables set in the shell whose values are not shown."""
    schema: dict[str, Any] = field(default_factory=dict)
    auth_headers: dict[str, bool] = field(default_factory=dict)
    """Header names, and whether a value is configured (values are never shown)."""
    files: list[InjectedFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)

    def prompt_text(self) -> str:
        """A compact text rendering for an agent's context."""
        lines = []
        if self.env:
            lines.append("Environment variables (set in your shell):")
            lines += [f"  {name}={value}" for name, value in sorted(self.env.items())]
        if self.secret_env:
            lines.append("Secret environment variables (set in your shell; their values are "
                         "never shown): " + ", ".join(sorted(self.secret_env)))
        if self.schema:
            lines.append("Database tables (PostgreSQL; use $DATABASE_URL or psql):")
            for table, info in self.schema.items():
                columns = ", ".join(
                    f"{c['name']} {c['type']}{'' if c['nullable'] else ' not null'}"
                    for c in info["columns"])
                key = f"; primary key ({', '.join(info['primary_key'])})" \
                    if info["primary_key"] else "; no primary key"
                lines.append(f"  {table}({columns}){key}")
                lines += [f"    {constraint}" for constraint in info["constraints"]]
        if self.auth_headers:
            lines.append("HTTP auth headers added by the harness to http_request (you never "
                         "see their values): " + ", ".join(
                             f"{n}{'' if ok else ' (not configured)'}"
                             for n, ok in self.auth_headers.items()))
        for f in self.files:
            age = f"last committed {f.last_commit} ({f.age_days:.0f} days ago)" \
                if f.last_commit and f.age_days is not None else "never committed"
            changed = "; CHANGED since its last commit" if f.uncommitted_changes else ""
            lines.append(f"File {f.path} (sha256 {f.sha256[:16]}, {f.bytes} bytes, {age}"
                         f"{changed}):")
            lines.append(f.content)
        return "\n".join(lines)


def environment(injection: StateInjection, host: Mapping[str, str] | None = None, *,
                secret: bool | None = None) -> dict[str, str]:
    """The env_var sources: host variables with each prefix, overridden by config values;
    only the secret sources' (or only the others') when `secret` is given."""
    host = os.environ if host is None else host
    found: dict[str, str] = {}
    for source in injection.sources:
        if isinstance(source, EnvVarSource) and secret in (None, source.secret):
            found.update({k: v for k, v in host.items() if k.startswith(source.prefix)})
            found.update({k: v for k, v in source.values.items() if k.startswith(source.prefix)})
    return found


def auth_headers(injection: StateInjection, host: Mapping[str, str] | None = None
                 ) -> dict[str, str | None]:
    """Header name -> value (None when not configured), from the auth_header sources."""
    host = os.environ if host is None else host
    headers: dict[str, str | None] = {}
    for source in injection.sources:
        if isinstance(source, AuthHeaderSource):
            variable = source.value_env or "HARNESS_AUTH_" + re.sub(
                r"[^A-Z0-9]", "_", source.key.upper())
            value = host.get(variable)
            # A value read from a file often ends with a newline, which HTTP forbids.
            headers[source.key] = value.strip() if value is not None else None
    return headers


def database_schema(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, Any]:
    """Columns, keys and constraints of `tables` (all user tables when empty)."""
    rows = conn.execute(f"""
        SELECT c.oid, n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {catalog.TOP_LEVEL_TABLE} AND {catalog.USER_NAMESPACE}
        ORDER BY 2, 3""").fetchall()
    schema: dict[str, Any] = {}
    for oid, namespace, name in rows:
        qualified = f"{namespace}.{name}"
        if tables and TableName(namespace, name).under(tables) is None:
            continue
        columns = [{"name": n, "type": t, "nullable": not nn, "default": d} for n, t, nn, d in
                   conn.execute("""
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(ad.adbin, ad.adrelid)
            FROM pg_attribute a LEFT JOIN pg_attrdef ad
              ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum""", (oid,))]
        constraints = conn.execute("""
            SELECT contype, conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = %s ORDER BY contype, conname""", (oid,)).fetchall()
        primary = [r[2] for r in constraints if r[0] == "p"]
        key = re.findall(r"[\w\"]+", primary[0].split("(", 1)[1]) if primary else []
        schema[qualified] = {
            "columns": columns, "primary_key": key,
            "constraints": [f"{n}: {d}" for t, n, d in constraints if t != "p"],
        }
    return schema


def file_state(path: str, content: bytes, last_commit_epoch: int | None, dirty: bool,
               *, now: float | None = None) -> InjectedFile:
    """An injected file from its bytes and git facts."""
    now = now if now is not None else datetime.datetime.now(datetime.UTC).timestamp()
    last = None if last_commit_epoch is None else datetime.datetime.fromtimestamp(
        last_commit_epoch, datetime.UTC).isoformat()
    age = None if last_commit_epoch is None else (now - last_commit_epoch) / 86400
    return InjectedFile(path, hashlib.sha256(content).hexdigest(), len(content),
                        content.decode("utf-8", errors="replace"), last, age, dirty)


def sources_of(injection: StateInjection, kind: type) -> list[Any]:
    """The sources of one kind (DbSchemaSource, FileSource, ...)."""
    return [s for s in injection.sources if isinstance(s, kind)]


__all__ = ["DbSchemaSource", "FileSource", "InjectedFile", "InjectedState", "auth_headers",
           "database_schema", "environment", "file_state", "sources_of"]
