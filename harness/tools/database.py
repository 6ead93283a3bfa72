"""The database tools: read with SQL in a read-only transaction; write with SQL in one
transaction weighed against the row budget before it commits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.limits.violation import Limit
from harness.tools.base import (
    BOOLEAN,
    INTEGER,
    STRING,
    Effect,
    Judged,
    Refusal,
    Tool,
    ToolContext,
    ToolResult,
    nullable,
    object_schema,
    result_schema,
)

if TYPE_CHECKING:
    import psycopg


def db_query(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Each statement's status and rows (up to tools.max_query_rows)."""
    ending = _ends_the_transaction(p["sql"])
    if ending is not None:
        return ToolResult("refused", {"rolled_back": True}, Refusal(
            "invalid", "db_query.transaction-control",
            f"{ending} cannot be part of db_query's SQL: it reads in one read-only "
            f"transaction"))
    conn = context.connection()
    try:
        conn.execute("SET TRANSACTION READ ONLY")
        _read_as_the_guard_did(conn)
        results = _results(conn.execute(p["sql"]), context.config.tools.max_query_rows)
    finally:
        conn.rollback()
    context.count_output(len(json.dumps(results, default=str)))
    return ToolResult("ok", {"results": results})


def db_mutate(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Run the SQL; commit it if the rows it brings the episode to fit the budget."""
    from psycopg.pq import TransactionStatus

    from harness.sandbox.capture import read_delta

    ending = _ends_the_transaction(p["sql"])
    if ending is not None:
        return ToolResult("refused", {"rolled_back": True}, Refusal(
            "invalid", "db_mutate.transaction-control",
            f"{ending} cannot be part of db_mutate's SQL: it runs in one transaction that the "
            f"harness weighs against the row budget and then commits (or rolls back) itself; "
            f"send each transaction as its own db_mutate (SAVEPOINT and ROLLBACK TO work)"))
    conn = context.connection()
    try:
        _read_as_the_guard_did(conn)
        results = _results(conn.execute(p["sql"]), context.config.tools.max_query_rows)
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            return ToolResult("refused", {"rolled_back": False, "results": results}, Refusal(
                "invalid", "db_mutate.transaction-control",
                "the SQL ended db_mutate's transaction itself: what it committed stays, "
                "unweighed until this action is measured"))
        _fire_deferred_triggers(conn)
        # The harness's reads of the catalogue resolve names as PostgreSQL's own, whatever
        # search_path the agent set (a view named pg_index in its schema cannot answer).
        conn.execute("SET LOCAL search_path = pg_catalog, pg_temp")
        # The capture of this very transaction is visible to it: weigh, then decide.
        projected = read_delta(conn, ddl=False).rows
        overrun = context.weigh_rows(projected)
        if overrun is not None:
            conn.rollback()
            return ToolResult("refused", {"rolled_back": True,
                                          "rows_measured": projected - context.rows_counted()},
                              overrun)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return ToolResult("ok", {"results": results})


def _read_as_the_guard_did(conn: psycopg.Connection[Any]) -> None:
    """The server reads the agent's SQL as the guard and the transaction-control check
    did: with standard_conforming_strings on (off, a backslash in a literal hides the
    quote that ends it, and what the guard took for a string the server runs)."""
    conn.execute("SET LOCAL standard_conforming_strings = on")


def _fire_deferred_triggers(conn: psycopg.Connection[Any]) -> None:
    """Deferred triggers would fire at COMMIT, after the weighing: they fire now, and
    again while they keep writing (one may defer another, which would fire at COMMIT)."""
    mark = conn.execute("SELECT harness_capture.mark()").fetchone()
    for _ in range(DEFERRED_ROUNDS):
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        before, mark = mark, conn.execute("SELECT harness_capture.mark()").fetchone()
        if mark == before:
            return


DEFERRED_ROUNDS = 8
"""Rounds of firing deferred triggers before weighing; what a longer chain writes at
COMMIT is counted when the action is measured."""


def _ends_the_transaction(text: str) -> str | None:
    """The first statement that would end db_mutate's transaction (or start another) before
    its rows are weighed: COMMIT inside the SQL would commit them unweighed. SQL that does
    not parse is PostgreSQL's to refuse."""
    import pglast
    from pglast import ast, enums

    kinds = enums.TransactionStmtKind
    within = {kinds.TRANS_STMT_SAVEPOINT, kinds.TRANS_STMT_RELEASE, kinds.TRANS_STMT_ROLLBACK_TO}
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError:
        return None
    for raw in statements:
        kind = raw.stmt.kind if isinstance(raw.stmt, ast.TransactionStmt) else None
        if kind is not None and kind not in within:
            name = kind.name.removeprefix("TRANS_STMT_").replace("_", " ")
            return {"PREPARE": "PREPARE TRANSACTION", "START": "START TRANSACTION"}.get(name, name)
    return None


_RESULTS = result_schema({"results": {"type": "array", "items": {
    "type": "object", "properties": {
        "status": nullable(STRING), "rowcount": INTEGER,
        "columns": {"type": "array", "items": STRING},
        "rows": {"type": "array", "items": {"type": "array"}},
        "more_rows": BOOLEAN}}},
    "rolled_back": BOOLEAN, "rows_measured": INTEGER}, [])


def _results(cursor: psycopg.Cursor[Any], limit: int) -> list[dict[str, Any]]:
    """Every statement's outcome: its status, and its rows (up to `limit`) if it has any."""
    results = []
    while True:
        entry: dict[str, Any] = {"status": cursor.statusmessage, "rowcount": cursor.rowcount}
        if cursor.description is not None:
            rows = cursor.fetchmany(limit)
            entry["columns"] = [c.name for c in cursor.description]
            entry["rows"] = [[_plain(v) for v in row] for row in rows]
            entry["more_rows"] = cursor.fetchone() is not None
        results.append(entry)
        if not cursor.nextset():
            return results


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


TOOLS = [
    Tool("db_query", "Run read-only SQL on the database; returns the rows.",
         object_schema(["sql"], sql=STRING), db_query, Judged.SQL_READ_ONLY, "sql",
         output=_RESULTS),
    Tool("db_mutate", "Run SQL that changes the database, in one transaction.",
         object_schema(["sql"], sql=STRING), db_mutate, Judged.SQL, "sql",
         affects=frozenset({Effect.ROWS}), needs=frozenset({Limit.MAX_DATABASE_ROWS}),
         output=_RESULTS),
]
