"""Applying row deltas to the real database, set-based, inside the caller's transaction,
with optimistic concurrency: every UPDATE and DELETE applies only if the real row still
equals the before-image the snapshot saw, every INSERT only if its key is free. All
conflicts are collected and reported row by row; the caller rolls back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from harness.sandbox.capture import RowDelta, TableDelta

_CHUNK = 5000


@dataclass(frozen=True)
class Conflict:
    """A row of the real database that is not as the snapshot saw it."""

    table: str
    key: dict[str, Any] | None
    expected: dict[str, Any] | None
    found: dict[str, Any] | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


@dataclass
class Applied:
    """What an apply did."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    ddl: int = 0


def apply_delta(conn: psycopg.Connection[Any], delta: RowDelta, *, ddl: bool
                ) -> tuple[Applied, list[Conflict]]:
    """Apply `delta` in `conn`'s open transaction; conflicts are returned, nothing raised
    for them (the caller must roll back when there are any)."""
    applied = Applied()
    if ddl:
        for statement in delta.ddl:
            if statement.query:
                conn.execute(statement.query)
                applied.ddl += 1
    order = _dependency_order(conn, list(delta.tables))
    conflicts: list[Conflict] = []
    tables = [delta.tables[name] for name in order]
    for table in tables:
        conflicts += _check(conn, table)
    if conflicts:
        return applied, conflicts
    for table in tables:  # parents first
        applied.inserted += _insert(conn, table)
    for table in tables:
        applied.updated += _update(conn, table)
    for table in reversed(tables):  # children first
        applied.deleted += _delete(conn, table)
    for table in tables:
        if table.inserted:
            _advance_sequences(conn, table.table)
    return applied, conflicts


def invert(delta: RowDelta) -> RowDelta:
    """The delta that undoes `delta` (DDL is not inverted)."""
    from harness.sandbox.capture import RowUpdate

    tables = {}
    for name, table in delta.tables.items():
        tables[name] = TableDelta(
            name, table.key, inserted=list(table.deleted),
            updated=[RowUpdate(u.key, u.after, u.before, u.changed) for u in table.updated],
            deleted=list(table.inserted))
    return RowDelta(tables, [])


# ------------------------------------------------------------------ pieces


def _columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute("""
        SELECT attname FROM pg_attribute
        WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
        ORDER BY attnum""", (table,)).fetchall()
    return [r[0] for r in rows]


def _images(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=str)


def _rows_of(images_param: str, table: str) -> sql.Composed:
    """A FROM item: the images as rows of the table's own type, with their position."""
    return sql.SQL("jsonb_array_elements({}::jsonb) WITH ORDINALITY AS e(doc, ord) "
                   "CROSS JOIN LATERAL jsonb_populate_record(NULL::{}, e.doc) AS r").format(
        sql.Placeholder(images_param), sql.SQL(table))


def _key_match(key: list[str]) -> sql.Composed:
    return sql.SQL("({}) = ({})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in key),
        sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(k)) for k in key))


def _check(conn: psycopg.Connection[Any], table: TableDelta) -> list[Conflict]:
    name = table.table
    conflicts: list[Conflict] = []
    if not table.key:
        return _check_by_contents(conn, table)
    key = table.key
    expected = [u.before for u in table.updated] + list(table.deleted)
    for start in range(0, len(expected), _CHUNK):
        chunk = expected[start : start + _CHUNK]
        # Lock the rows first: nobody may change them between this check and the commit.
        conn.execute(sql.SQL("SELECT 1 FROM {} t JOIN (SELECT r.* FROM {}) r ON {} "
                             "FOR UPDATE OF t").format(sql.SQL(name), _rows_of("images", name),
                                                       _key_match(key)), {"images": _images(chunk)})
        rows = conn.execute(sql.SQL(
            "SELECT e.ord, to_jsonb(t) FROM {} LEFT JOIN {} t ON {} "
            "WHERE t IS NULL OR NOT (ROW(t.*) IS NOT DISTINCT FROM ROW(r.*))").format(
                _rows_of("images", name), sql.SQL(name), _key_match(key)),
            {"images": _images(chunk)}).fetchall()
        for ordinal, found in rows:
            image = chunk[ordinal - 1]
            conflicts.append(Conflict(name, {k: image.get(k) for k in key}, image, found,
                                      "the row was deleted" if found is None else
                                      "the row was changed since the snapshot"))
    for start in range(0, len(table.inserted), _CHUNK):
        chunk = table.inserted[start : start + _CHUNK]
        rows = conn.execute(sql.SQL("SELECT e.ord, to_jsonb(t) FROM {} JOIN {} t ON {}").format(
            _rows_of("images", name), sql.SQL(name), _key_match(key)),
            {"images": _images(chunk)}).fetchall()
        for ordinal, found in rows:
            image = chunk[ordinal - 1]
            conflicts.append(Conflict(name, {k: image.get(k) for k in key}, None, found,
                                      "a row with this key exists already"))
    return conflicts


def _check_by_contents(conn: psycopg.Connection[Any], table: TableDelta) -> list[Conflict]:
    """Rows of a table without a key are identified by their whole contents: each deleted
    row must still exist (as many times as it is deleted)."""
    conflicts = []
    wanted: dict[str, int] = {}
    for image in table.deleted:
        encoded = json.dumps(image, sort_keys=True)
        wanted[encoded] = wanted.get(encoded, 0) + 1
    for encoded, count in wanted.items():
        found = conn.execute(sql.SQL(
            "SELECT count(*) FROM {} t, jsonb_populate_record(NULL::{}, %s::jsonb) r "
            "WHERE ROW(t.*) IS NOT DISTINCT FROM ROW(r.*)").format(
                sql.SQL(table.table), sql.SQL(table.table)), (encoded,)).fetchone()
        have = int(found[0]) if found else 0
        if have < count:
            conflicts.append(Conflict(table.table, None, json.loads(encoded), None,
                                      f"{count} such row(s) expected, {have} found"))
    return conflicts


def _in_chunks(conn: psycopg.Connection[Any], statement: sql.Composed,
               images: list[dict[str, Any]]) -> int:
    """Run `statement` (which reads %(images)s) over the images, a chunk at a time; the
    number of rows it changed."""
    count = 0
    for start in range(0, len(images), _CHUNK):
        cursor = conn.execute(statement, {"images": _images(images[start : start + _CHUNK])})
        count += cursor.rowcount
    return count


def _insert(conn: psycopg.Connection[Any], table: TableDelta) -> int:
    if not table.inserted:
        return 0
    names = _columns(conn, table.table)
    statement = sql.SQL(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ORDER BY e.ord").format(
            sql.SQL(table.table), sql.SQL(", ").join(sql.Identifier(c) for c in names),
            sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in names),
            _rows_of("images", table.table))
    return _in_chunks(conn, statement, table.inserted)


def _update(conn: psycopg.Connection[Any], table: TableDelta) -> int:
    names = [c for c in _columns(conn, table.table) if c not in table.key]
    if not table.updated or not names:
        return 0  # (an update of key columns only is a delete and an insert)
    if not table.key:
        raise AssertionError("a table without a key has no updates, only deletes and inserts")
    assignments = sql.SQL("({}) = ROW({})").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in names),
        sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in names))
    if len(names) == 1:
        assignments = sql.SQL("{} = r.{}").format(sql.Identifier(names[0]),
                                                  sql.Identifier(names[0]))
    statement = sql.SQL("UPDATE {} t SET {} FROM (SELECT r.* FROM {}) r WHERE {}").format(
        sql.SQL(table.table), assignments, _rows_of("images", table.table),
        _key_match(table.key))
    return _in_chunks(conn, statement, [u.after for u in table.updated])


def _delete(conn: psycopg.Connection[Any], table: TableDelta) -> int:
    if not table.deleted:
        return 0
    if not table.key:
        count = 0
        for image in table.deleted:
            cursor = conn.execute(sql.SQL(
                "DELETE FROM {} WHERE ctid = (SELECT t.ctid FROM {} t, "
                "jsonb_populate_record(NULL::{}, %s::jsonb) r "
                "WHERE ROW(t.*) IS NOT DISTINCT FROM ROW(r.*) LIMIT 1)").format(
                    sql.SQL(table.table), sql.SQL(table.table), sql.SQL(table.table)),
                (json.dumps(image),))
            count += cursor.rowcount
        return count
    statement = sql.SQL("DELETE FROM {} t USING (SELECT r.* FROM {}) r WHERE {}").format(
        sql.SQL(table.table), _rows_of("images", table.table), _key_match(table.key))
    return _in_chunks(conn, statement, table.deleted)


def _advance_sequences(conn: psycopg.Connection[Any], table: str) -> None:
    """Move each sequence feeding a column of `table` past the largest value now in it."""
    columns = conn.execute("""
        SELECT a.attname, pg_get_serial_sequence(%s, a.attname)
        FROM pg_attribute a
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND pg_get_serial_sequence(%s, a.attname) IS NOT NULL""",
                           (table, table, table)).fetchall()
    for column, sequence in columns:
        conn.execute(sql.SQL(
            "SELECT setval({seq}, m) FROM (SELECT max({col}) AS m FROM {tbl}) x, "
            "(SELECT last_value FROM {seqname}) s WHERE m IS NOT NULL AND m > s.last_value"
        ).format(seq=sql.Literal(sequence), col=sql.Identifier(column), tbl=sql.SQL(table),
                 seqname=sql.SQL(sequence)))


def _dependency_order(conn: psycopg.Connection[Any], tables: list[str]) -> list[str]:
    """`tables` ordered so that a table comes after the tables it references."""
    edges = conn.execute("""
        SELECT c.conrelid::regclass::text, c.confrelid::regclass::text
        FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid <> c.confrelid""").fetchall()
    canonical = {name: conn.execute("SELECT %s::regclass::text", (name,)).fetchone()[0]  # type: ignore[index]
                 for name in tables}
    by_canonical = {v: k for k, v in canonical.items()}
    depends: dict[str, set[str]] = {name: set() for name in tables}
    for child, parent in edges:
        if child in by_canonical and parent in by_canonical:
            depends[by_canonical[child]].add(by_canonical[parent])
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting:
            return
        visiting.add(name)
        for parent in sorted(depends[name]):
            visit(parent)
        visiting.discard(name)
        ordered.append(name)

    for name in sorted(tables):
        visit(name)
    return ordered
