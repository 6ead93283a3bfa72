"""Masking: sensitive columns of a baseline replaced, when it is built, by values derived
from the real ones with a key the agent never sees, so a sandbox never holds the real
values. Deterministic (the same value masks the same way in every table and every build
with the same key): joins and equality on masked columns still work.

Rules: `hash` (a keyed digest that fits the column's type), `null`, `{fixed: value}`, and
`fake` (format-preserving: digits stay digits, letters letters of the same case, every
other character as it was, so `ann.lee@example.com` becomes `xqc.mvf@rdmqwdk.pfa`;
numbers keep their number of digits, dates move by up to a year). Key columns (primary
and foreign keys) cannot be masked: rows are matched by them at promotion. After masking,
what still holds the real values is rewritten: statistics (ANALYZE), materialized views
(REFRESH) and the old row versions in the table files (VACUUM FULL)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from harness.errors import SandboxError
from harness.home import state_dir
from harness.sandbox import catalog

RULES = ("hash", "null", "fake", "fixed")
MASKED = "<masked>"
"""Shown in place of a masked column's real value (a promotion conflict's target row)."""
KEY_ENV = "HARNESS_MASK_KEY"
"""A key shared by several machines (CI runners) so they mask alike; default: a random key
kept in $HARNESS_HOME/keys/mask.key."""

_TEXT = {"text", "varchar", "bpchar", "citext", "name"}
_INTEGER = {"int2": 32767, "int4": 2147483647, "int8": 9223372036854775807}
_DATES = {"date", "timestamp", "timestamptz"}

_FUNCTIONS = r"""
CREATE SCHEMA harness_mask;
CREATE FUNCTION harness_mask.digest(k text, v text, salt text DEFAULT '') RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT sha256(convert_to(k || chr(1) || salt || chr(1) || v, 'UTF8')) $$;
CREATE FUNCTION harness_mask.number(k text, v text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT ('x' || left(encode(harness_mask.digest(k, v), 'hex'), 15))::bit(60)::bigint::numeric
$$;
CREATE FUNCTION harness_mask.fake(k text, v text, is_number boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    result text := '';
    d bytea;
    c text;
    b int;
    first_digit boolean := true;
BEGIN
    FOR i IN 1 .. length(v) LOOP
        IF (i - 1) % 32 = 0 THEN
            d := harness_mask.digest(k, v, ((i - 1) / 32)::text);
        END IF;
        c := substr(v, i, 1);
        b := get_byte(d, (i - 1) % 32);
        IF c BETWEEN '0' AND '9' THEN
            IF is_number AND first_digit AND c <> '0' THEN
                result := result || chr(49 + b % 9);
            ELSE
                result := result || chr(48 + b % 10);
            END IF;
            first_digit := false;
        ELSIF c BETWEEN 'A' AND 'Z' THEN
            result := result || chr(65 + b % 26);
        ELSIF c ~ '[[:alpha:]]' THEN
            result := result || chr(97 + b % 26);
        ELSE
            result := result || c;
        END IF;
    END LOOP;
    RETURN result;
END $$;
"""


@dataclass(frozen=True)
class ColumnMask:
    """One masking rule: `table.column` (or `schema.table.column`) and how."""

    target: str
    rule: str
    value: Any = None
    """The value of a `fixed` rule."""

    @property
    def table(self) -> str:
        return self.target.rsplit(".", 1)[0]

    @property
    def column(self) -> str:
        return self.target.rsplit(".", 1)[1]


def parse_masks(config: Mapping[str, Any]) -> list[ColumnMask]:
    """The rules of a `sandbox.database.mask` mapping (validated by the config already)."""
    masks = []
    for target, rule in sorted(config.items()):
        if isinstance(rule, str):
            masks.append(ColumnMask(target, rule))
        else:
            fixed = rule["fixed"] if isinstance(rule, Mapping) else rule.fixed
            masks.append(ColumnMask(target, "fixed", fixed))
    return masks


def mask_key() -> str:
    """The key masked values are derived with (never given to a sandbox)."""
    shared = os.environ.get(KEY_ENV)
    if shared:
        return shared
    path = state_dir("keys") / "mask.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip()


def fingerprint(masks: list[ColumnMask], key: str) -> str:
    """What a baseline's name carries of its masking: other rules or another key make
    another baseline."""
    rules = json.dumps([[m.target, m.rule, m.value] for m in masks], default=str)
    return hashlib.sha256(f"{rules}\0{hashlib.sha256(key.encode()).hexdigest()}".encode()
                          ).hexdigest()[:10]


def apply_masks(conn: psycopg.Connection[Any], masks: list[ColumnMask], key: str
                ) -> dict[str, list[str]]:
    """Mask the database `conn` is connected to (a baseline being built; autocommit, as its
    superuser). Returns the masked columns per table, as change sets name tables
    (inheritance children included)."""
    masked: dict[str, list[str]] = {}
    if not masks:
        return masked
    conn.execute(_FUNCTIONS)
    try:
        conn.execute("SET session_replication_role = replica")  # the user's triggers stay still
        by_table: dict[int, list[tuple[ColumnMask, dict[str, Any]]]] = {}
        for mask in masks:
            oid, column = _resolve(conn, mask)
            by_table.setdefault(oid, []).append((mask, column))
        for oid, columns in by_table.items():
            name = _name(conn, oid)
            assignments = [sql.SQL("{} = {}").format(sql.Identifier(c["name"]),
                                                     _expression(mask, c))
                           for mask, c in columns]
            try:
                conn.execute(sql.SQL("UPDATE {} SET {}").format(
                    sql.SQL(name), sql.SQL(", ").join(assignments)), {"key": key})
            except psycopg.Error as exc:
                targets = ", ".join(m.target for m, _ in columns)
                raise SandboxError(f"sandbox.database.mask ({targets}): the masked values "
                                   f"do not fit: {_message(exc)}") from None
            names = [c["name"] for _, c in columns] + _generated_from(conn, oid, columns)
            for table in [oid, *_descendants(conn, oid)]:
                masked[_name(conn, table)] = sorted(names)
        conn.execute("RESET session_replication_role")
        _forget_real_values(conn, [*by_table, *(d for oid in by_table
                                                for d in _descendants(conn, oid))])
    finally:
        conn.execute("DROP SCHEMA IF EXISTS harness_mask CASCADE")
    return masked


def _resolve(conn: psycopg.Connection[Any], mask: ColumnMask) -> tuple[int, dict[str, Any]]:
    table = mask.table if "." in mask.table else f"public.{mask.table}"
    schema, name = table.split(".", 1)
    found = conn.execute(f"""
        SELECT c.oid, c.relispartition FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND {catalog.TABLE}""",
        (schema, name)).fetchone()
    if found is None:
        raise SandboxError(f"sandbox.database.mask: {mask.target}: there is no table {table}")
    oid, partition = found
    if partition:
        raise SandboxError(f"sandbox.database.mask: {mask.target}: {table} is a partition; "
                           "mask the partitioned table (it covers every partition)")
    column = conn.execute("""
        SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
               b.typname AS base, a.attnotnull AS not_null, a.attgenerated <> '' AS generated,
               CASE WHEN b.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4
                    THEN a.atttypmod - 4 END AS length,
               EXISTS (SELECT 1 FROM pg_constraint k
                       WHERE k.contype IN ('p', 'f')
                         AND ((k.conrelid = a.attrelid AND a.attnum = ANY (k.conkey))
                           OR (k.confrelid = a.attrelid AND a.attnum = ANY (k.confkey))))
                   AS key
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
        WHERE a.attrelid = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (oid, mask.column)).fetchone()
    if column is None:
        raise SandboxError(f"sandbox.database.mask: {mask.target}: {table} has no column "
                           f"{mask.column}")
    info = dict(zip(["name", "type", "base", "not_null", "generated", "length", "key"],
                    column, strict=True))
    problem = _unmaskable(mask, info)
    if problem:
        raise SandboxError(f"sandbox.database.mask: {mask.target}: {problem}")
    return int(oid), info


def _unmaskable(mask: ColumnMask, column: dict[str, Any]) -> str | None:
    base = column["base"]
    if column["key"]:
        return ("it is part of a primary or foreign key, which promotion matches rows by; "
                "mask the columns that hold the data instead")
    if column["generated"]:
        return "it is a generated column (mask the columns it is computed from)"
    if mask.rule == "null" and column["not_null"]:
        return "the column is NOT NULL; use hash, fake or {fixed: value}"
    if mask.rule == "hash" and base not in _TEXT | set(_INTEGER) | {"uuid", "bytea", "json",
                                                                     "jsonb"}:
        return f"hash cannot keep the type {column['type']}; use fake, null or {{fixed: value}}"
    if mask.rule == "fake" and base not in _TEXT | set(_INTEGER) | _DATES | {"numeric"}:
        return f"fake cannot keep the type {column['type']}; use hash, null or {{fixed: value}}"
    return None


def _expression(mask: ColumnMask, column: dict[str, Any]) -> sql.Composable:
    value = sql.Identifier(column["name"])
    typ = sql.SQL(column["type"])
    k = sql.Placeholder("key")  # a parameter: the key never appears in statement text
    base = column["base"]
    if mask.rule == "null":
        return sql.SQL("NULL")
    if mask.rule == "fixed":
        return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {}::{} END").format(
            value, sql.Literal(str(mask.value)), typ)
    if mask.rule == "hash":
        digest = sql.SQL("harness_mask.digest({}, {}::text)").format(k, value)
        if base in _TEXT:
            return sql.SQL("left(encode({}, 'hex'), {})::{}").format(
                digest, sql.Literal(min(column["length"] or 64, 64)), typ)
        if base in _INTEGER:
            return sql.SQL("mod(harness_mask.number({}, {}::text), {})::{}").format(
                k, value, sql.Literal(_INTEGER[base]), typ)
        if base == "uuid":
            return sql.SQL("left(encode({}, 'hex'), 32)::{}").format(digest, typ)
        if base == "bytea":
            return sql.SQL("{}::{}").format(digest, typ)
        return sql.SQL("to_jsonb(encode({}, 'hex'))::{}").format(digest, typ)
    # fake
    if base in _DATES:
        return sql.SQL("({} + (mod(harness_mask.number({}, {}::text), 731) - 365) "
                       "* interval '1 day')::{}").format(value, k, value, typ)
    if base in _INTEGER:
        # Same number of digits, within the type's range.
        low = sql.SQL("10::numeric ^ (length(abs({}::numeric)::text) - 1)").format(value)
        return sql.SQL(
            "(sign({v}) * least({low} - CASE WHEN {low} = 1 THEN 1 ELSE 0 END "
            "+ mod(harness_mask.number({k}, {v}::text), 9 * {low}), {m}))::{t}").format(
                v=value, low=low, k=k, m=sql.Literal(_INTEGER[base]), t=typ)
    numeric = sql.Literal(base == "numeric")
    return sql.SQL("harness_mask.fake({}, {}::text, {})::{}").format(k, value, numeric, typ)


def _forget_real_values(conn: psycopg.Connection[Any], tables: list[int]) -> None:
    """Rewrite what still holds the real values: old row versions and indexes (VACUUM
    FULL), the planner's statistics (ANALYZE) and materialized views (REFRESH)."""
    for oid in dict.fromkeys(tables):
        name = sql.SQL(_name(conn, oid))
        conn.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(name))
    views = conn.execute(f"""
        SELECT {catalog.QUALIFIED_NAME} FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid""").fetchall()
    for (view,) in views:
        try:
            conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(view)))
        except psycopg.Error as exc:
            raise SandboxError(f"sandbox.database.mask: the materialized view {view} holds "
                               f"copies of masked values and cannot be refreshed: "
                               f"{_message(exc)}") from None
        conn.execute(sql.SQL("VACUUM (FULL, ANALYZE) {}").format(sql.SQL(view)))


def _generated_from(conn: psycopg.Connection[Any], oid: int,
                    columns: list[tuple[ColumnMask, dict[str, Any]]]) -> list[str]:
    """Generated columns computed from masked ones: they hold masks too (`lower(email)`
    of a masked email is no real value either)."""
    rows = conn.execute("""
        SELECT DISTINCT a.attname FROM pg_attribute a
        JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        JOIN pg_depend p ON p.classid = 'pg_attrdef'::regclass AND p.objid = d.oid
                        AND p.refobjid = a.attrelid
        JOIN pg_attribute m ON m.attrelid = a.attrelid AND m.attnum = p.refobjsubid
        WHERE a.attrelid = %s AND a.attgenerated <> '' AND m.attname = ANY (%s)""",
        (oid, [c["name"] for _, c in columns])).fetchall()
    return [str(row[0]) for row in rows]


def _descendants(conn: psycopg.Connection[Any], oid: int) -> list[int]:
    """Inheritance children, at any depth (partitions are named by their root)."""
    rows = conn.execute("""
        WITH RECURSIVE tree AS (
            SELECT inhrelid FROM pg_inherits WHERE inhparent = %s
            UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.inhrelid)
        SELECT t.inhrelid FROM tree t JOIN pg_class c ON c.oid = t.inhrelid
        WHERE NOT c.relispartition""", (oid,)).fetchall()
    return [int(row[0]) for row in rows]


def _name(conn: psycopg.Connection[Any], oid: int) -> str:
    row = conn.execute(f"SELECT {catalog.QUALIFIED_NAME} FROM pg_class c JOIN pg_namespace n "
                       "ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,)).fetchone()
    return str(row[0]) if row else str(oid)


def _message(exc: psycopg.Error) -> str:
    diag = exc.diag
    return (diag.message_primary or str(exc)) + (f" ({diag.message_detail})"
                                                 if diag.message_detail else "")
