"""Which relations of a PostgreSQL database are the user's: the one catalogue predicate
that capture, snapshots, state injection and promotion share, and the canonical
`schema.table` spelling of a table."""

from __future__ import annotations

from typing import Any

import psycopg

CAPTURE_SCHEMA = "harness_capture"

USER_NAMESPACE = ("n.nspname NOT IN ('pg_catalog', 'information_schema', 'harness_capture', "
                  "'harness_capture_log') "
                  "AND n.nspname !~ '^pg_(toast|temp)'")
"""True for a namespace `n` (pg_namespace) the user's objects live in. No `%` in it, so it
goes into queries that also take parameters."""

TABLE = "c.relkind IN ('r', 'p')"
"""True for a relation `c` (pg_class) that is a table: ordinary, partition or partitioned."""

TOP_LEVEL_TABLE = f"{TABLE} AND NOT c.relispartition"
"""True for a table that is not a partition: the tables a user thinks in."""

QUALIFIED_NAME = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
"""The canonical spelling of a relation `c` in namespace `n`: `schema.table`, quoted where
PostgreSQL needs quotes (`public.orders`, `"Sales"."Order"`)."""


def user_tables(conn: psycopg.Connection[Any], *, partitions: bool = False) -> dict[str, str]:
    """Canonical name -> relkind of the user's tables, in name order; partitions only when
    asked."""
    predicate = TABLE if partitions else TOP_LEVEL_TABLE
    rows = conn.execute(
        f"SELECT {QUALIFIED_NAME}, c.relkind FROM pg_class c JOIN pg_namespace n "
        f"ON n.oid = c.relnamespace WHERE {predicate} AND {USER_NAMESPACE} ORDER BY 1"
    ).fetchall()
    return {name: str(kind) for name, kind in rows}


def scan(table: str, relkind: str) -> str:
    """How to read a table's own rows only: `ONLY t` for an ordinary table (which may have
    inheritance children holding rows of their own), `t` for a partitioned one (whose
    rows all live in its partitions)."""
    return table if relkind == "p" else f"ONLY {table}"
