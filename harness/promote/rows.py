"""Applying row deltas to the real database the way logical replication does: set-based,
inside the caller's transaction, with optimistic concurrency.

Every UPDATE and DELETE applies only if the real row still equals the before-image the
snapshot saw, every INSERT only if its key is free; the touched rows are locked first, so
nobody changes them before the caller commits. The captured delta already holds what the
sandbox's triggers, rules and cascades did, so the target's own must not run again: when
a touched table has triggers or rules, the rows are written with
`session_replication_role = replica` (which also silences foreign-key triggers, so the
foreign keys are checked here, explicitly, in the same transaction). Conflicts and
dangling references are collected and reported row by row; the caller rolls back.

When the config lets the target's triggers fire instead, what they really wrote is read
back before the commit (see "fire mode" below), so that the receipt holds the rows as they
are on the target and a revert can put back exactly that.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, NoReturn

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

from harness.errors import HarnessError
from harness.sandbox import catalog
from harness.sandbox.capture import (
    RowDelta,
    RowUpdate,
    TableDelta,
    dump_images,
    load_image,
    pair_moves,
    partition_columns,
    primary_keys,
)
from harness.sandbox.masking import MASKED

_CHUNK = 5000

TriggerMode = Literal["replicate", "fire", "sandbox"]
"""`replicate`: the target's triggers and rules do not fire (their effects are in the
change set); `fire`: they fire, and what they wrote is recorded; `sandbox` (undoing an
action in a sandbox): silenced as in `replicate`, but triggers enabled ALWAYS, which the
agent set so, fire rather than stop it."""


@dataclass(frozen=True)
class Conflict:
    """A row of the real database that is not as the snapshot saw it, or that the change
    would leave referencing a row that no longer exists."""

    table: str
    key: dict[str, Any] | None
    expected: dict[str, Any] | None
    found: dict[str, Any] | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


class TriggersRefused(HarnessError):
    """Touched tables have triggers or rules that must not fire again, and the promoting
    role may not stop them (or they would fire anyway)."""


@dataclass
class Applied:
    """What an apply did, and how."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    ddl: int = 0
    mode: str = "plain"
    """`plain` (no touched table has triggers or rules), `replica` (they were silenced)
    or `fire` (they ran)."""
    rewritten: dict[str, list[str]] = field(default_factory=dict)
    """`fire` mode: per table, the columns of the change set's own rows that the target's
    triggers set to something other than the sandbox's values."""
    side_effects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`fire` mode: per table, the rows the target's triggers wrote beyond the change set
    (`inserted`, `updated`, `deleted`), the change set's rows they kept from being written
    as it had them (`dropped`: suppressed or removed again), and the columns all of those
    changed (`columns`). The receipt holds every one of these rows."""


@dataclass(frozen=True)
class _Table:
    """What the target's catalogue says of one touched table."""

    name: str
    relkind: str
    columns: list[str]
    """Stored columns (generated ones are computed by the target)."""
    identity_always: list[str]
    triggers: list[tuple[str, str]]
    """User triggers and rules: (name, pg_trigger.tgenabled or pg_rewrite.ev_enabled)."""
    all_columns: list[str] = field(default_factory=list)
    text_compared: list[str] = field(default_factory=list)
    """Columns of types without an equality operator: compared as text."""
    masked: list[str] = field(default_factory=list)
    """Columns whose sandbox values are masks (sandbox.database.mask): not compared with
    the target, not written, not shown."""

    @property
    def scan(self) -> str:
        return catalog.scan(self.name, self.relkind)


@dataclass(frozen=True)
class _ForeignKey:
    name: str
    child: str
    """The referencing table as the change set names it (a partition's root)."""
    child_columns: list[str]
    parent: str
    parent_columns: list[str]
    match_full: bool
    child_table: str = ""
    """The table the key is declared on (a partition, when it is declared on one)."""
    parent_table: str = ""


# ------------------------------------------------------------------ entry points


def apply_delta(conn: psycopg.Connection[Any], delta: RowDelta, *, ddl: bool,
                triggers: TriggerMode = "replicate") -> tuple[Applied, list[Conflict], RowDelta]:
    """Apply `delta` in `conn`'s open transaction. Returns what was done, the conflicts
    (nothing is raised for them: the caller must roll back when there are any) and the
    delta as actually written (in `fire` mode, as the target holds the rows once its
    triggers ran, with every row they wrote beyond the change set). Raises TriggersRefused
    when triggers would fire that must not, or (fire mode) when what they wrote cannot be
    read back exactly; the caller must roll back then too."""
    applied = Applied()
    if ddl:
        for statement in schema_changes(delta):
            conn.execute(statement)
            applied.ddl += 1
    set_json_loads(load_image, conn)  # rows read back keep their exact numbers
    order = _dependency_order(conn, list(delta.tables))
    tables = {name: replace(_describe(conn, name), masked=delta.tables[name].masked)
              for name in order}
    applied.mode = _choose_mode(conn, tables, triggers)
    deltas = [delta.tables[name] for name in order]
    conflicts: list[Conflict] = []
    for table in deltas:
        conflicts += _check(conn, table, tables[table.table])
        conflicts += _generated_by_the_target(table, tables[table.table])
    keys = _foreign_keys(conn, order)
    conflicts += _dangling_children(conn, delta, keys, tables)
    conflicts += _missing_parents(conn, delta, keys, tables)
    if conflicts:
        return applied, conflicts, delta
    watch = _Watch.start(conn, deltas, tables) if applied.mode == "fire" else None
    conn.execute("SAVEPOINT harness_apply")
    try:
        actual, wrote = _write(conn, delta, deltas, tables, applied)
        if watch is not None:
            # Deferred constraint triggers would fire at the commit, after what the
            # triggers wrote was read back: fire them now.
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    except psycopg.errors.IntegrityError as exc:
        # The checks above should leave the target's constraints nothing to refuse; if one
        # does (a check constraint, an exclusion, a deferred key), it is reported the same.
        conn.execute("ROLLBACK TO SAVEPOINT harness_apply")
        diag = exc.diag
        where = f"{diag.schema_name}.{diag.table_name}" if diag.table_name else "?"
        # The server's detail quotes the failing row, real values of masked columns too.
        detail = diag.message_detail if not any(t.masked for t in tables.values()) else \
            "the failing row is not shown: it holds masked columns" if diag.message_detail \
            else None
        return applied, [Conflict(where, None, None, None,
                                  f"the target refused the change: {diag.message_primary}"
                                  + (f" ({detail})" if detail else ""))], delta
    conn.execute("RELEASE SAVEPOINT harness_apply")
    late = _partition_keys_after(conn, delta, keys)
    if late:
        return applied, late, delta
    if watch is not None:
        actual, applied.rewritten, applied.side_effects = watch.record(
            conn, delta, actual, wrote, tables)
    return applied, [], actual


@dataclass(frozen=True)
class _Wrote:
    """What the statements of one table reported: rows inserted, updated and deleted, and
    whether RETURNING gave back every row of the change set by its key (fire mode)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    returned_all: bool = True


def _write(conn: psycopg.Connection[Any], delta: RowDelta, deltas: list[TableDelta],
           tables: dict[str, _Table], applied: Applied
           ) -> tuple[RowDelta, dict[str, _Wrote]]:
    """The writes, in an order every constraint accepts; the delta as written (in fire
    mode, as RETURNING gave it back) and what each table's statements reported."""
    fire = applied.mode == "fire"
    written: dict[str, TableDelta] = {}
    wrote: dict[str, _Wrote] = {}
    for table in deltas:  # parents first
        count, images = _insert(conn, table, tables[table.table], fire)
        applied.inserted += count
        wrote[table.table] = _Wrote(inserted=count, returned_all=None not in images)
        written[table.table] = replace(table, inserted=[
            image if image is not None else planned
            for image, planned in zip(images, table.inserted, strict=True)])
        if table.inserted:
            # Before the target's own triggers (fire mode) draw from the same sequences.
            _advance_sequences(conn, table.table)
    for table in deltas:
        count, updates = _update(conn, table, tables[table.table], fire)
        applied.updated += count
        wrote[table.table] = replace(wrote[table.table], updated=count, returned_all=(
            wrote[table.table].returned_all and None not in updates))
        written[table.table] = replace(written[table.table], updated=[
            update if update is not None else planned
            for update, planned in zip(updates, table.updated, strict=True)])
    for table in reversed(deltas):  # children first
        count, removed = _delete(conn, table, tables[table.table])
        applied.deleted += count
        wrote[table.table] = replace(wrote[table.table], deleted=count)
        written[table.table] = replace(written[table.table], deleted=removed)
    return RowDelta({name: written[name] for name in delta.tables}, delta.ddl), wrote


_ROW_STATEMENTS = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt",
                             "MergeStmt", "CopyStmt", "TransactionStmt", "VariableSetStmt",
                             "ExplainStmt", "PrepareStmt", "ExecuteStmt", "CallStmt", "DoStmt"})


def schema_changes(delta: RowDelta) -> list[str]:
    """The schema changes to replay, in order: the DDL statements of each recorded command
    text (a text may also hold row statements, whose rows are in the delta already)."""
    from pglast import parser

    found: list[str] = []
    for statement in delta.ddl:
        text = statement.query
        if not text:
            continue
        encoded = text.encode()
        try:
            tree = json.loads(parser.parse_sql_json(text))
        except parser.ParseError:
            found.append(text)  # the server ran it: replay as it was
            continue
        for raw in tree.get("stmts", []):
            kind = next(iter(raw["stmt"]))
            if kind in _ROW_STATEMENTS:
                continue
            start = raw.get("stmt_location", 0)
            length = raw.get("stmt_len", 0) or len(encoded) - start
            found.append(encoded[start : start + length].decode().strip())
    return found


def invert(delta: RowDelta) -> RowDelta:
    """The delta that undoes `delta` (DDL is not inverted)."""
    tables = {}
    for name, table in delta.tables.items():
        tables[name] = TableDelta(
            name, table.key, inserted=list(table.deleted),
            # The key names the row as it is before the update: after a move, the new one.
            updated=[RowUpdate({k: u.after.get(k) for k in table.key}, u.after, u.before,
                               u.changed) for u in table.updated],
            deleted=list(table.inserted), partitions=table.partitions, masked=table.masked)
    return RowDelta(tables, [])


# ------------------------------------------------------------------ the catalogue


def _describe(conn: psycopg.Connection[Any], name: str) -> _Table:
    relkind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass",
                           (name,)).fetchone()
    # Which columns compare by value, and which only as text (json, xml, geometric types,
    # arrays of them: PostgreSQL has no equality operator for these).
    columns = conn.execute("""
        SELECT a.attname, a.attidentity, a.attgenerated <> '',
               e.typtype = 'c' OR NOT EXISTS (
                   SELECT 1 FROM pg_operator o
                   WHERE o.oprname = '=' AND o.oprleft = o.oprright
                     AND o.oprleft = CASE WHEN e.typcategory = 'A' THEN e.typelem
                                          ELSE e.oid END)
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_type e ON e.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum""", (name,)).fetchall()
    # Internal triggers (foreign keys) are not the user's; replica mode silences them and
    # the foreign keys are checked explicitly instead. Constraint triggers are the user's.
    # The capture's own (in a sandbox, undoing an action) must record what is written.
    # A partition's (or an inheritance child's) own triggers fire for rows written through
    # the root, so they count too.
    triggers = conn.execute("""
        WITH tree AS (
            SELECT relid FROM pg_partition_tree(%s::regclass)
            UNION SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass
            UNION SELECT %s::regclass)
        SELECT DISTINCT tgname, tgenabled::text FROM pg_trigger
        WHERE tgrelid IN (SELECT relid FROM tree) AND NOT tgisinternal AND tgenabled <> 'D'
          AND left(tgname, 16) <> 'harness_capture_'
        UNION
        SELECT rulename, ev_enabled::text FROM pg_rewrite
        WHERE ev_class IN (SELECT relid FROM tree) AND rulename <> '_RETURN'
          AND ev_enabled <> 'D'
        ORDER BY 1""", (name, name, name)).fetchall()
    return _Table(name, str(relkind[0]) if relkind else "r",
                  [c for c, _, generated, _ in columns if not generated],
                  [c for c, identity, _, _ in columns if identity == "a"],
                  [(str(n), str(e)) for n, e in triggers],
                  [c for c, _, _, _ in columns],
                  [c for c, _, _, text in columns if text])


def _same_row(info: _Table, left: str = "t", right: str = "r") -> sql.Composable:
    """`left` and `right` hold equal values in every column (NULL equals NULL)."""
    parts = []
    for column in info.all_columns:
        if column in info.masked:
            continue
        a = sql.SQL("{}.{}").format(sql.Identifier(left), sql.Identifier(column))
        b = sql.SQL("{}.{}").format(sql.Identifier(right), sql.Identifier(column))
        if column in info.text_compared:
            a, b = sql.SQL("{}::text").format(a), sql.SQL("{}::text").format(b)
        parts.append(sql.SQL("{} IS NOT DISTINCT FROM {}").format(a, b))
    return sql.SQL("({})").format(sql.SQL(" AND ").join(parts)) if parts else sql.SQL("true")


def _choose_mode(conn: psycopg.Connection[Any], tables: dict[str, _Table],
                 wanted: TriggerMode) -> str:
    """Plain DML when no touched table has triggers or rules (exact, and needs no
    privilege); otherwise silence them, or let them fire when the config says so."""
    armed = {name: t.triggers for name, t in tables.items() if t.triggers}
    if not armed:
        return "plain"
    if wanted == "fire":
        return "fire"
    listing = "; ".join(f"{name}: {', '.join(n for n, _ in found)}"
                        for name, found in sorted(armed.items()))
    always = {name: [n for n, enabled in found if enabled in ("A", "R")]
              for name, found in armed.items()}
    always = {name: names for name, names in always.items() if names}
    if always and wanted != "sandbox":
        raise TriggersRefused(
            "triggers enabled ALWAYS or REPLICA fire even when replication silences the "
            f"others, so they would run a second time on the target ({_listing(always)}); "
            "promote with `promotion.triggers: fire` or set them to ENABLE TRIGGER")
    conn.execute("SAVEPOINT harness_replica")
    try:
        conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        conn.execute("ROLLBACK TO SAVEPOINT harness_replica")
        role = conn.execute("SELECT current_user").fetchone()
        who = str(role[0]) if role else "the promoting role"
        raise TriggersRefused(
            f"the change set's tables have triggers or rules whose effects are already in it "
            f"({listing}); they must not fire again on the target, and {who} may not stop "
            f"them. Fix: GRANT SET ON PARAMETER session_replication_role TO {who} "
            f"(PostgreSQL 15+, run by a superuser), or promote with "
            f"`promotion.triggers: fire` to let them run and record what they wrote"
        ) from None
    conn.execute("RELEASE SAVEPOINT harness_replica")
    return "replica"


def _listing(found: dict[str, list[str]]) -> str:
    return "; ".join(f"{name}: {', '.join(names)}" for name, names in sorted(found.items()))


def _foreign_keys(conn: psycopg.Connection[Any], tables: list[str]) -> list[_ForeignKey]:
    """Foreign keys whose referencing or referenced table is touched, or is a partition of
    a touched table (declared ones: those cloned onto partitions are the same key)."""
    if not tables:
        return []
    name_of = f"""(SELECT {catalog.QUALIFIED_NAME} FROM pg_class c JOIN pg_namespace n
                   ON n.oid = c.relnamespace WHERE c.oid = %s)"""
    rows = conn.execute(f"""
        WITH touched AS (
            SELECT tree.relid FROM unnest(%(tables)s::regclass[]) t(rel),
                   LATERAL pg_partition_tree(t.rel) tree
            UNION SELECT unnest(%(tables)s::regclass[]))
        SELECT k.conname,
               {name_of % "coalesce(pg_partition_root(k.conrelid), k.conrelid)"},
               {name_of % "k.conrelid"},
               ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, pos)
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num
                     ORDER BY u.pos),
               {name_of % "coalesce(pg_partition_root(k.confrelid), k.confrelid)"},
               {name_of % "k.confrelid"},
               ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(num, pos)
                     JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num
                     ORDER BY u.pos),
               k.confmatchtype = 'f'
        FROM pg_constraint k
        WHERE k.contype = 'f' AND k.conparentid = 0
          AND (k.conrelid IN (SELECT relid FROM touched)
               OR k.confrelid IN (SELECT relid FROM touched))
        ORDER BY 1""", {"tables": tables}).fetchall()
    return [_ForeignKey(str(name), str(child), list(cc), str(parent), list(pc), bool(full),
                        str(child_table), str(parent_table))
            for name, child, child_table, cc, parent, parent_table, pc, full in rows]


# ------------------------------------------------------------------ checks


def _images(rows: Iterable[dict[str, Any]]) -> str:
    return dump_images(list(rows))


def _rows_of(images_param: str, table: str, *, alias: str = "r") -> sql.Composed:
    """A FROM item: the images as rows of the table's own type, with their position
    (`e.harness_ord`, from 1)."""
    return sql.SQL("jsonb_array_elements({}::jsonb) WITH ORDINALITY AS e(doc, harness_ord) "
                   "CROSS JOIN LATERAL jsonb_populate_record(NULL::{}, e.doc) AS {}").format(
        sql.Placeholder(images_param), sql.SQL(table), sql.Identifier(alias))


def _match(left: str, left_columns: list[str], right: str, right_columns: list[str]
           ) -> sql.Composed:
    return sql.SQL("({}) = ({})").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(left), sql.Identifier(c))
                           for c in left_columns),
        sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(right), sql.Identifier(c))
                           for c in right_columns))


def _key_match(key: list[str]) -> sql.Composed:
    return _match("t", key, "r", key)


def _check(conn: psycopg.Connection[Any], table: TableDelta, info: _Table) -> list[Conflict]:
    name = table.table
    conflicts: list[Conflict] = []
    if not table.key:
        return _check_by_contents(conn, table, info)
    key = table.key
    expected = [u.before for u in table.updated] + list(table.deleted)
    for start in range(0, len(expected), _CHUNK):
        chunk = expected[start : start + _CHUNK]
        # Lock the rows first: nobody may change them between this check and the commit.
        conn.execute(sql.SQL("SELECT 1 FROM {} t JOIN (SELECT r.* FROM {}) r ON {} "
                             "FOR UPDATE OF t").format(sql.SQL(info.scan),
                                                       _rows_of("images", name),
                                                       _key_match(key)),
                     {"images": _images(chunk)})
        rows = conn.execute(sql.SQL(
            "SELECT e.harness_ord, to_jsonb(t) FROM {} LEFT JOIN {} t ON {} "
            "WHERE t IS NULL OR NOT {}").format(
                _rows_of("images", name), sql.SQL(info.scan), _key_match(key),
                _same_row(info)),
            {"images": _images(chunk)}).fetchall()
        for ordinal, found in rows:
            image = chunk[ordinal - 1]
            conflicts.append(Conflict(name, {k: image.get(k) for k in key}, image,
                                      _unmasked(found, info),
                                      "the row was deleted" if found is None else
                                      "the row was changed since the snapshot"))
    # A row that moves to another partition takes a new key, which must be free too.
    taken = list(table.inserted) + [u.after for u in table.updated if _moved(u, key)]
    for start in range(0, len(taken), _CHUNK):
        chunk = taken[start : start + _CHUNK]
        rows = conn.execute(sql.SQL("SELECT e.harness_ord, to_jsonb(t) FROM {} JOIN {} t ON {}").format(
            _rows_of("images", name), sql.SQL(info.scan), _key_match(key)),
            {"images": _images(chunk)}).fetchall()
        for ordinal, found in rows:
            image = chunk[ordinal - 1]
            conflicts.append(Conflict(name, {k: image.get(k) for k in key}, None,
                                      _unmasked(found, info),
                                      "a row with this key exists already"))
    return conflicts


def _unmasked(found: dict[str, Any] | None, info: _Table) -> dict[str, Any] | None:
    """A target row as a conflict may show it: the real values of masked columns are what
    masking keeps from the sandbox, so they are not shown either."""
    if found is None or not info.masked:
        return found
    return {c: MASKED if c in info.masked else v for c, v in found.items()}


def _check_by_contents(conn: psycopg.Connection[Any], table: TableDelta, info: _Table
                       ) -> list[Conflict]:
    """Rows of a table without a key are identified by their whole contents: each deleted
    row must still exist (as many times as it is deleted); they are locked."""
    conflicts = []
    wanted: dict[str, int] = {}
    for image in table.deleted:
        encoded = dump_images(image, canonical=True)
        wanted[encoded] = wanted.get(encoded, 0) + 1
    for encoded, count in wanted.items():
        found = conn.execute(sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} t, "
            "jsonb_populate_record(NULL::{}, %s::jsonb) r "
            "WHERE {} FOR UPDATE OF t) locked").format(
                sql.SQL(info.scan), sql.SQL(table.table), _same_row(info)),
            (encoded,)).fetchone()
        have = int(found[0]) if found else 0
        if have < count:
            conflicts.append(Conflict(table.table, None, load_image(encoded), None,
                                      f"{count} such row(s) expected, {have} found"))
    return conflicts


def _moved(update: RowUpdate, key: list[str]) -> bool:
    """Whether an update gives its row a new key (a move to another partition)."""
    return any(update.after.get(k) != update.before.get(k) for k in key)


def _generated_by_the_target(table: TableDelta, info: _Table) -> list[Conflict]:
    """A GENERATED ALWAYS identity column that an update changed cannot be written on the
    target: only the target's own sequence may set it."""
    found = []
    for update in table.updated:
        changed = [c for c in info.identity_always if update.before.get(c) !=
                   update.after.get(c)]
        if changed:
            found.append(Conflict(table.table, update.key, update.before, None,
                                  f"the change sets {', '.join(changed)}, an identity column "
                                  "GENERATED ALWAYS that only the target's sequence may set"))
    return found


def _values(image: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
    return tuple(dump_images(image.get(c)) for c in columns)


def _dangling_children(conn: psycopg.Connection[Any], delta: RowDelta, keys: list[_ForeignKey],
                       tables: dict[str, _Table]) -> list[Conflict]:
    """Rows on the target that reference a row the change set deletes or re-keys, and that
    the change set itself does not delete or re-point: someone inserted them after the
    snapshot, or changed them. Replica mode would leave them dangling, plain DML would
    cascade into them; either way the target would not end as the sandbox did. Run after
    the touched rows are locked, so no new reference can appear before the commit."""
    conflicts: list[Conflict] = []
    for fk in keys:
        parent = delta.tables.get(fk.parent)
        if parent is None:
            continue
        gone = {_values(row, fk.parent_columns): row for row in parent.deleted}
        gone.update({_values(u.before, fk.parent_columns): u.before for u in parent.updated})
        for row in [*parent.inserted, *(u.after for u in parent.updated)]:
            gone.pop(_values(row, fk.parent_columns), None)
        if not gone:
            continue
        child = delta.tables.get(fk.child)
        handled = _handled_children(child, fk)
        child_info = tables.get(fk.child_table) or _describe(conn, fk.child_table)
        # The rows are named by their key, also in a table the change set does not touch.
        child_key = child.key if child is not None else \
            primary_keys(conn, [fk.child]).get(fk.child, [])
        olds = list(gone.values())
        for start in range(0, len(olds), _CHUNK):
            chunk = olds[start : start + _CHUNK]
            found = conn.execute(sql.SQL(
                "SELECT to_jsonb(c), e.harness_ord FROM {} c JOIN {} ON {}").format(
                    sql.SQL(catalog.scan(fk.child_table, child_info.relkind)),
                    _rows_of("images", fk.parent_table),
                    _match("c", fk.child_columns, "r", fk.parent_columns)),
                {"images": _images(chunk)}).fetchall()
            for row, ordinal in found:
                if _identity(row, child) in handled:
                    continue
                referenced = {c: chunk[ordinal - 1].get(c) for c in fk.parent_columns}
                conflicts.append(Conflict(
                    fk.child, {k: row.get(k) for k in child_key} or None, None, row,
                    f"it references {fk.parent} {json.dumps(referenced, default=str)} "
                    f"(foreign key {fk.name}), which the change set deletes or re-keys; the "
                    f"row is not in the sandbox's snapshot as it is now"))
    return conflicts


def _handled_children(child: TableDelta | None, fk: _ForeignKey) -> set[str]:
    """Identities of the child rows the change set deletes or points elsewhere."""
    if child is None:
        return set()
    handled = {_identity(row, child) for row in child.deleted}
    handled |= {_identity(u.before, child) for u in child.updated
                if _values(u.before, fk.child_columns) != _values(u.after, fk.child_columns)}
    return handled


def _identity(row: dict[str, Any], table: TableDelta | None) -> str:
    if table is not None and table.key:
        return dump_images([row.get(k) for k in table.key])
    return dump_images(row, canonical=True)


def _key_of(row: dict[str, Any], table: TableDelta | None) -> dict[str, Any] | None:
    return {k: row.get(k) for k in table.key} if table is not None and table.key else None


def _missing_parents(conn: psycopg.Connection[Any], delta: RowDelta, keys: list[_ForeignKey],
                     tables: dict[str, _Table]) -> list[Conflict]:
    """Rows the change set inserts or updates whose referenced row will not exist once the
    change is applied: neither written by the change set nor on the target now (or the
    change set removes it). Run before any write; the referenced rows found on the target
    are locked against deletion until the commit."""
    conflicts: list[Conflict] = []
    for fk in keys:
        child = delta.tables.get(fk.child)
        if child is None or fk.child_table != fk.child:
            continue  # a key of one partition: checked once the rows are in place
        parent_delta = delta.tables.get(fk.parent)
        provided: set[tuple[Any, ...]] = set()
        removed: set[tuple[Any, ...]] = set()
        if parent_delta is not None:
            provided = {_values(row, fk.parent_columns)
                        for row in [*parent_delta.inserted,
                                    *(u.after for u in parent_delta.updated)]}
            removed = {_values(row, fk.parent_columns)
                       for row in [*parent_delta.deleted,
                                   *(u.before for u in parent_delta.updated)]} - provided
        rows = [row for row in [*child.inserted, *(u.after for u in child.updated)]
                if _references(row, fk) and _values(row, fk.child_columns) not in provided]
        parent_info = tables.get(fk.parent_table) or _describe(conn, fk.parent_table)
        parent = sql.SQL(catalog.scan(fk.parent_table, parent_info.relkind))
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            params = {"images": _images(chunk)}
            conn.execute(sql.SQL(
                "SELECT 1 FROM {} p JOIN (SELECT r.* FROM {}) r ON {} FOR KEY SHARE OF p"
            ).format(parent, _rows_of("images", fk.child),
                     _match("p", fk.parent_columns, "r", fk.child_columns)), params)
            missing = {ordinal for (ordinal,) in conn.execute(sql.SQL(
                "SELECT e.harness_ord FROM {} WHERE NOT EXISTS "
                "(SELECT 1 FROM {} p WHERE {})").format(
                    _rows_of("images", fk.child), parent,
                    _match("p", fk.parent_columns, "r", fk.child_columns)), params)}
            for ordinal, image in enumerate(chunk, start=1):
                value = _values(image, fk.child_columns)
                if ordinal not in missing and value not in removed:
                    continue
                referenced = {p: image.get(c)
                              for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)}
                conflicts.append(Conflict(
                    fk.child, _key_of(image, child), image, None,
                    f"it references {fk.parent} {json.dumps(referenced, default=str)} "
                    f"(foreign key {fk.name}), which does not exist on the target"))
    return conflicts


def _partition_keys_after(conn: psycopg.Connection[Any], delta: RowDelta,
                          keys: list[_ForeignKey]) -> list[Conflict]:
    """Keys declared on a single partition hold only for the rows routed there: checked
    after the writes, on the rows the change set wrote that landed in that partition."""
    conflicts: list[Conflict] = []
    for fk in keys:
        child = delta.tables.get(fk.child)
        if child is None or fk.child_table == fk.child or not child.key:
            continue
        rows = [*child.inserted, *(u.after for u in child.updated)]
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            found = conn.execute(sql.SQL(
                "SELECT to_jsonb(c) FROM {} c JOIN (SELECT r.* FROM {}) r ON {} "
                "WHERE NOT EXISTS (SELECT 1 FROM {} p WHERE {}) AND {}").format(
                    sql.SQL(fk.child_table), _rows_of("images", fk.child),
                    _match("c", child.key, "r", child.key), sql.SQL(fk.parent_table),
                    _match("p", fk.parent_columns, "c", fk.child_columns),
                    sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c))
                                          for c in fk.child_columns)),
                {"images": _images(chunk)}).fetchall()
            conflicts += [Conflict(fk.child, _key_of(row, child), None, row,
                                   f"it references {fk.parent_table} through {fk.name}, and "
                                   "no such row exists on the target") for (row,) in found]
    return conflicts


def _references(row: dict[str, Any], fk: _ForeignKey) -> bool:
    """Whether a row refers to anything through `fk` (MATCH SIMPLE: no column is null;
    MATCH FULL: not all are null, and a partial null cannot be stored)."""
    values = [row.get(c) for c in fk.child_columns]
    return any(v is not None for v in values) if fk.match_full else \
        all(v is not None for v in values)


# ------------------------------------------------------------------ writes


def _in_chunks(conn: psycopg.Connection[Any], statement: sql.Composed,
               images: list[dict[str, Any]], returning: bool) -> tuple[int, list[Any]]:
    """Run `statement` (which reads %(images)s) over the images, a chunk at a time; the
    number of rows it changed and, with `returning`, what it returned."""
    count, returned = 0, []
    for start in range(0, len(images), _CHUNK):
        cursor = conn.execute(statement, {"images": _images(images[start : start + _CHUNK])})
        count += cursor.rowcount
        if returning:
            returned += [row[0] for row in cursor.fetchall()]
    return count, returned


def _returning(returning: bool) -> sql.Composable:
    return sql.SQL(" RETURNING to_jsonb(t)") if returning else sql.SQL("")


def _insert(conn: psycopg.Connection[Any], table: TableDelta, info: _Table, returning: bool
            ) -> tuple[int, list[dict[str, Any] | None]]:
    """Insert the rows; the count and, with `returning`, each row as RETURNING gave it
    back (None where it gave nothing back for that key)."""
    if not table.inserted:
        return 0, []
    names = info.columns
    statement = sql.SQL(
        "INSERT INTO {} AS t ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ORDER BY e.harness_ord"
    ).format(sql.SQL(table.table), sql.SQL(", ").join(sql.Identifier(c) for c in names),
             sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in names),
             _rows_of("images", table.table)) + _returning(returning)
    count, returned = _in_chunks(conn, statement, table.inserted, returning)
    if not returning:
        return count, list(table.inserted)
    return count, _in_order(table.inserted, returned, table.key)


def _update(conn: psycopg.Connection[Any], table: TableDelta, info: _Table, returning: bool
            ) -> tuple[int, list[RowUpdate | None]]:
    """Update the rows; the count and, with `returning`, each update with the after-image
    RETURNING gave back (None where it gave nothing back for that key)."""
    if not table.updated:
        return 0, list(table.updated)
    if not table.key:
        raise AssertionError("a table without a key has no updates, only deletes and inserts")
    # Masked columns hold masks, never data for the target (a change set that changes one
    # is refused before this).
    settable = [c for c in info.columns if c not in info.identity_always + info.masked]
    # A row that moved to another partition has a new key: it is found by its old one.
    rekeyed = any(_moved(u, table.key) for u in table.updated)
    names = settable if rekeyed else [c for c in settable if c not in table.key]
    if not names:
        return 0, list(table.updated)  # (an update of key columns only: delete and insert)
    assignments = sql.SQL("({}) = ROW({})").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in names),
        sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in names))
    if len(names) == 1:
        assignments = sql.SQL("{} = r.{}").format(sql.Identifier(names[0]),
                                                  sql.Identifier(names[0]))
    afters = [u.after for u in table.updated]
    if rekeyed:
        statement = sql.SQL(
            "UPDATE {} t SET {} FROM (SELECT e.harness_ord, r.* FROM {}) r "
            "JOIN (SELECT e.harness_ord, k.* FROM {}) k USING (harness_ord) WHERE {}").format(
                sql.SQL(info.scan), assignments, _rows_of("images", table.table),
                _rows_of("keys", table.table, alias="k"), _match("t", table.key, "k", table.key)
        ) + _returning(returning)
        count, returned = 0, []
        for start in range(0, len(afters), _CHUNK):
            chunk = table.updated[start : start + _CHUNK]
            cursor = conn.execute(statement, {"images": _images(u.after for u in chunk),
                                              "keys": _images(u.key for u in chunk)})
            count += cursor.rowcount
            if returning:
                returned += [row[0] for row in cursor.fetchall()]
    else:
        statement = sql.SQL("UPDATE {} t SET {} FROM (SELECT r.* FROM {}) r WHERE {}").format(
            sql.SQL(info.scan), assignments, _rows_of("images", table.table),
            _key_match(table.key)) + _returning(returning)
        count, returned = _in_chunks(conn, statement, afters, returning)
    if not returning:
        return count, list(table.updated)
    written = _in_order(afters, returned, table.key)
    return count, [None if after is None else _as_update(u.before, after, table.key)
                   for u, after in zip(table.updated, written, strict=True)]


def _as_update(before: dict[str, Any], after: dict[str, Any], key: list[str]) -> RowUpdate:
    return RowUpdate({k: before.get(k) for k in key}, before, after,
                     sorted(c for c in set(before) | set(after)
                            if before.get(c) != after.get(c)))


def _in_order(planned: list[dict[str, Any]], returned: list[dict[str, Any]], key: list[str]
              ) -> list[dict[str, Any] | None]:
    """The rows RETURNING gave, in the order of the images they were written from; None
    for an image whose key it did not give back (a trigger suppressed or re-keyed it)."""
    if not key:  # in the order written; as many as were written
        return [*returned[: len(planned)], *[None] * (len(planned) - len(returned))]
    by_key = {dump_images([row.get(k) for k in key]): row for row in returned}
    return [by_key.get(dump_images([row.get(k) for k in key])) for row in planned]


def _delete(conn: psycopg.Connection[Any], table: TableDelta, info: _Table
            ) -> tuple[int, list[dict[str, Any]]]:
    """Delete the rows; returns the count and the rows as deleted (with masked columns the
    target's rows, read back: the receipt must hold the real values to restore them)."""
    if not table.deleted:
        return 0, table.deleted
    if not table.key:
        count = 0
        for image in table.deleted:
            cursor = conn.execute(sql.SQL(
                # ctid is unique within one table only, not across partitions.
                "DELETE FROM {} WHERE (tableoid, ctid) = (SELECT t.tableoid, t.ctid FROM {} t, "
                "jsonb_populate_record(NULL::{}, %s::jsonb) r "
                "WHERE {} LIMIT 1)").format(
                    sql.SQL(info.scan), sql.SQL(info.scan), sql.SQL(table.table),
                    _same_row(info)),
                (dump_images(image),))
            count += cursor.rowcount
        return count, table.deleted
    statement = sql.SQL("DELETE FROM {} t USING (SELECT r.* FROM {}) r WHERE {}").format(
        sql.SQL(info.scan), _rows_of("images", table.table), _key_match(table.key))
    if not info.masked:
        return _in_chunks(conn, statement, table.deleted, False)[0], table.deleted
    count, returned = _in_chunks(conn, statement + _returning(True), table.deleted, True)
    return count, [found if found is not None else planned for found, planned in
                   zip(_in_order(table.deleted, returned, table.key), table.deleted,
                       strict=True)]


def _advance_sequences(conn: psycopg.Connection[Any], table: str) -> None:
    """Move each sequence feeding a column of `table` (owned by it, or named in its default)
    past the largest value now in that column."""
    columns = conn.execute("""
        SELECT a.attname, pg_get_serial_sequence(%(t)s, a.attname)
        FROM pg_attribute a
        WHERE a.attrelid = %(t)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND pg_get_serial_sequence(%(t)s, a.attname) IS NOT NULL
        UNION
        SELECT a.attname, quote_ident(n.nspname) || '.' || quote_ident(s.relname)
        FROM pg_attrdef ad
        JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                        AND d.refclassid = 'pg_class'::regclass
        JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
        JOIN pg_namespace n ON n.oid = s.relnamespace
        JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
        JOIN pg_type ty ON ty.oid = a.atttypid
        WHERE ad.adrelid = %(t)s::regclass
          AND ty.typcategory = 'N'""", {"t": table}).fetchall()
    for column, sequence in columns:
        conn.execute(sql.SQL(
            "SELECT setval({seq}, m) FROM (SELECT max({col}) AS m FROM {tbl}) x, "
            "(SELECT last_value FROM {seqname}) s WHERE m IS NOT NULL AND m >= s.last_value"
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


# ------------------------------------------------------------------ fire mode
#
# When the target's triggers fire, the rows differ from the change set's: a BEFORE trigger
# restamps a column (RETURNING shows that), an AFTER trigger updates the row again or
# writes other tables (RETURNING does not). Nothing of the harness may be created on the
# target to watch them, and the promoting role may have DML only, so what they did is told
# from what PostgreSQL shows any role:
#
# - which tables were written, and how many rows: the transaction's own statistics
#   (pg_stat_xact_user_tables), which count every row written, by a statement or a trigger;
# - which row versions this transaction wrote: those whose xmin is one of its own
#   (sub)transactions (txid_status says "in progress", and a second session does not see
#   them: a concurrent transaction's uncommitted rows are not visible here at all);
# - which committed versions it replaced or deleted: those the second session (which sees
#   the target as committed) sees and this transaction no longer does.
#
# A table whose counts are exactly its own statements' needs none of this: what RETURNING
# gave back is final. The others are read back; where the counts show rows updated or
# deleted beyond the change set, every row version some transaction has locked or replaced
# (xmax set) is compared. A truncate or table rewrite by a trigger leaves no such trace
# row by row: it is refused, as is a table whose rows the role cannot all read.

Counts = tuple[int, int, int]
"""Rows inserted, updated and deleted."""


@dataclass(frozen=True)
class _Version:
    """One stored version of a row: the partition holding it, its place there (ctid), the
    transaction that wrote it (xmin) and its image."""

    rel: int
    tid: str
    xmin: str
    image: dict[str, Any]

    @property
    def place(self) -> tuple[int, str, str]:
        return (self.rel, self.tid, self.xmin)


@dataclass(frozen=True)
class _Watch:
    """What fire mode notes before the writes, to tell afterwards what the triggers did."""

    counts: dict[str, Counts]
    storage: dict[int, int]
    """Every user table's storage (oid -> relfilenode): a truncate or a rewrite gives a
    table new storage."""
    homes: dict[str, list[int | None]]
    """Partitioned tables the change set updates: the partition each updated row is in
    before the writes (statistics count a move to another partition as a delete there and
    an insert in the new one)."""

    @classmethod
    def start(cls, conn: psycopg.Connection[Any], deltas: list[TableDelta],
              tables: dict[str, _Table]) -> _Watch:
        homes = {t.table: _partitions(conn, tables[t.table], t.key, [u.before for u in t.updated])
                 for t in deltas if t.updated and t.key and tables[t.table].relkind == "p"}
        return cls(_write_counts(conn), _storage(conn), homes)

    def record(self, conn: psycopg.Connection[Any], delta: RowDelta, written: RowDelta,
               wrote: dict[str, _Wrote], tables: dict[str, _Table]
               ) -> tuple[RowDelta, dict[str, list[str]], dict[str, dict[str, Any]]]:
        """After the writes: the rows as the target now holds them (the change set's, and
        every row the triggers wrote beyond it), the columns the triggers rewrote in the
        change set's rows, and what they did beyond it. Raises TriggersRefused when that
        cannot be read back exactly."""
        storage = _storage(conn)
        for oid in sorted(set(storage) ^ set(self.storage)):
            _unrecordable(conn, _root_name(conn, oid) if oid in storage else
                          f"a table (oid {oid})", "created or dropped")
        for oid, node in sorted(storage.items()):
            if self.storage[oid] != node:
                _unrecordable(conn, _root_name(conn, oid), "truncated or rewrote")
        counts = _write_counts(conn)
        actual: dict[str, TableDelta] = {}
        reread: dict[str, bool] = {}
        for name in sorted(set(counts) | set(delta.tables)):
            seen = _minus(counts.get(name, (0, 0, 0)), self.counts.get(name, (0, 0, 0)))
            if name not in delta.tables:
                if seen != (0, 0, 0):
                    reread[name] = seen[1] != 0 or seen[2] != 0
                continue
            own = wrote[name]
            moves = self._moves(conn, tables[name], written.tables[name])
            moved = moves or 0
            extra = _minus(seen, (own.inserted + moved, own.updated - moved,
                                  own.deleted + moved))
            if extra == (0, 0, 0) and own.returned_all and moves is not None:
                actual[name] = written.tables[name]  # RETURNING's images are final
                continue
            # Rows updated or deleted beyond the change set's, or some of its own not
            # written as planned: every committed row version is compared.
            reread[name] = extra[1] != 0 or extra[2] != 0 or not own.returned_all or \
                moves is None or own.deleted != len(delta.tables[name].deleted)
        if reread:
            with _committed_view(conn) as other:
                for name, everything in reread.items():
                    planned = delta.tables.get(name)
                    try:
                        info = tables.get(name) or _describe(conn, name)
                        key = planned.key if planned is not None else \
                            primary_keys(conn, [name]).get(name, [])
                        actual[name] = _read_back(conn, other, info, key, planned, everything)
                    except psycopg.errors.InsufficientPrivilege:
                        _unrecordable(conn, name, "wrote into (which the role may not read)")
                    except psycopg.Error as exc:
                        _unrecordable(conn, name, f"wrote into (which could not be read: "
                                                  f"{exc.diag.message_primary or exc})")
        rewritten: dict[str, list[str]] = {}
        beyond: dict[str, dict[str, Any]] = {}
        for name, table in actual.items():
            columns, effects = _beyond(delta.tables.get(name), table)
            if columns:
                rewritten[name] = columns
            if effects:
                beyond[name] = effects
        result = {name: actual.get(name, written.tables[name]) for name in delta.tables}
        result.update({name: table for name, table in sorted(actual.items())
                       if name not in delta.tables and table.rows})
        return RowDelta(result, delta.ddl), rewritten, beyond

    def _moves(self, conn: psycopg.Connection[Any], info: _Table, written: TableDelta
               ) -> int | None:
        """How many of the table's updates moved their row to another partition (None
        when a row is no longer found by the key it was written with)."""
        homes = self.homes.get(info.name)
        if homes is None:
            return 0
        now = _partitions(conn, info, written.key, [u.after for u in written.updated])
        if None in now:
            return None
        return sum(1 for was, is_ in zip(homes, now, strict=True) if was != is_)


def _minus(a: Counts, b: Counts) -> Counts:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _unrecordable(conn: psycopg.Connection[Any], table: str, what: str) -> NoReturn:
    who = conn.info.user
    raise TriggersRefused(
        f"the target's triggers, firing, {what} {table}, which cannot be read back row by "
        f"row: what they wrote could not be recorded, and nothing could revert it. Nothing "
        f"was changed. Keep them silent instead (`promotion.triggers: replicate`, as a "
        f"superuser or with GRANT SET ON PARAMETER session_replication_role TO {who})")


def _write_counts(conn: psycopg.Connection[Any]) -> dict[str, Counts]:
    """Rows this transaction has inserted, updated and deleted so far (attempts in
    subtransactions rolled back included), per user table (a partition's under its
    root)."""
    rows = conn.execute(f"""
        SELECT (SELECT {catalog.QUALIFIED_NAME} FROM pg_class c JOIN pg_namespace n
                ON n.oid = c.relnamespace
                WHERE c.oid = coalesce(pg_partition_root(s.relid), s.relid)
                  AND {catalog.USER_NAMESPACE}),
               sum(s.n_tup_ins), sum(s.n_tup_upd), sum(s.n_tup_del)
        FROM pg_stat_xact_user_tables s GROUP BY 1""").fetchall()
    return {str(name): (int(i), int(u), int(d)) for name, i, u, d in rows if name}


def _storage(conn: psycopg.Connection[Any]) -> dict[int, int]:
    """Every user table with storage: oid -> relfilenode."""
    rows = conn.execute(f"""
        SELECT c.oid, pg_relation_filenode(c.oid) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'm') AND {catalog.USER_NAMESPACE}""").fetchall()
    return {int(oid): int(node or 0) for oid, node in rows}


def _root_name(conn: psycopg.Connection[Any], oid: int) -> str:
    row = conn.execute(f"""
        SELECT {catalog.QUALIFIED_NAME} FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = coalesce(pg_partition_root(%s::oid), %s::oid)""", (oid, oid)).fetchone()
    return str(row[0]) if row else f"the table of oid {oid}"


def _partitions(conn: psycopg.Connection[Any], info: _Table, key: list[str],
                images: list[dict[str, Any]]) -> list[int | None]:
    """The partition holding the row of each image's key (None: no such row)."""
    found: dict[int, int] = {}
    for start in range(0, len(images), _CHUNK):
        for ordinal, rel in conn.execute(sql.SQL(
                "SELECT e.harness_ord, t.tableoid::oid FROM {} JOIN {} t ON {}").format(
                    _rows_of("images", info.name), sql.SQL(info.scan), _key_match(key)),
                {"images": _images(images[start : start + _CHUNK])}):
            found[start + int(ordinal)] = int(rel)
    return [found.get(ordinal) for ordinal in range(1, len(images) + 1)]


@contextmanager
def _committed_view(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A second session on the target as the same role: it sees the target as committed,
    without this transaction's writes, and only reads."""
    params: dict[str, Any] = dict(conn.info.get_parameters())
    # The very server this transaction runs on (of several hosts, not another one: a
    # standby's lag would pass for this transaction's writes).
    for multi in ("target_session_attrs", "load_balance_hosts"):
        params.pop(multi, None)
    params.update(host=conn.info.host, port=str(conn.info.port))
    if params.get("hostaddr"):
        params["hostaddr"] = conn.info.hostaddr
    password = conn.pgconn.password
    if password:
        params["password"] = password.decode()
    try:
        other = psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        raise TriggersRefused(
            "with `promotion.triggers: fire`, what the target's triggers wrote is read back "
            f"through a second connection, which the target refused: {exc}") from exc
    try:
        other.execute("SET default_transaction_read_only = on")
        set_json_loads(load_image, other)
        yield other
    finally:
        other.close()


def _read_back(conn: psycopg.Connection[Any], other: psycopg.Connection[Any], info: _Table,
               key: list[str], planned: TableDelta | None, everything: bool) -> TableDelta:
    """What this transaction did to one table, read back: the net change of its rows.
    With `everything`, every locked or replaced committed row is compared (rows were
    updated or deleted beyond the change set); otherwise only those of the keys written
    (or, without a key, the rows the change set deleted)."""
    hidden = conn.execute("SELECT row_security_active(%s::regclass)", (info.name,)).fetchone()
    if hidden and hidden[0]:
        _unrecordable(conn, info.name, "wrote into (its row-level security hides rows of)")
    storage = sql.SQL("SELECT t.relid::oid, pg_relation_filenode(t.relid) "
                      "FROM pg_partition_tree(%s::regclass) t ORDER BY 1")
    if conn.execute(storage, (info.name,)).fetchall() != \
            other.execute(storage, (info.name,)).fetchall():
        # (Rewritten by the schema changes replayed first: its row versions moved.)
        _unrecordable(conn, info.name, "wrote into (rewritten in this transaction)")
    new = _written_here(conn, other, info)
    candidates: list[_Version] | None
    if everything:
        candidates = _versions(other, sql.SQL(
            "SELECT t.tableoid::oid, t.ctid::text, t.xmin::text, to_jsonb(t) FROM {} t "
            "WHERE NOT (t.xmax = '0'::xid)").format(sql.SQL(info.scan)))
    elif key:
        keys = [v.image for v in new]
        if planned is not None:
            keys += [u.before for u in planned.updated] + list(planned.deleted)
        candidates = []
        for start in range(0, len(keys), _CHUNK):
            candidates += _versions(other, sql.SQL(
                "SELECT t.tableoid::oid, t.ctid::text, t.xmin::text, to_jsonb(t) "
                "FROM {} JOIN {} t ON {}").format(
                    _rows_of("images", info.name), sql.SQL(info.scan), _key_match(key)),
                {"images": _images(keys[start : start + _CHUNK])})
    else:
        candidates = None
    if candidates is None:
        gone = list(planned.deleted) if planned is not None else []
    else:
        gone = [v.image for v in _replaced(conn, other, info, candidates)]
    moving = partition_columns(conn, [info.name]).get(info.name, []) \
        if info.relkind == "p" else []
    return _net(info.name, key, planned, [v.image for v in new], gone, moving)


def _versions(session: psycopg.Connection[Any], statement: sql.Composed,
              params: dict[str, Any] | None = None) -> list[_Version]:
    found: dict[tuple[int, str, str], _Version] = {}
    for rel, tid, xmin, image in session.execute(statement, params).fetchall():
        version = _Version(int(rel), str(tid), str(xmin), image)
        found[version.place] = version
    return list(found.values())


def _present(session: psycopg.Connection[Any], info: _Table, versions: list[_Version]
             ) -> set[tuple[int, str, str]]:
    """Which of `versions` `session` sees (the same tuple: partition, place and xmin)."""
    tids = sorted({v.tid for v in versions})
    seen: set[tuple[int, str, str]] = set()
    for start in range(0, len(tids), _CHUNK):
        rows = session.execute(sql.SQL(
            "SELECT t.tableoid::oid, t.ctid::text, t.xmin::text FROM {} t "
            "WHERE t.ctid = ANY (%s::text[]::tid[])").format(sql.SQL(info.scan)),
            (tids[start : start + _CHUNK],)).fetchall()
        seen |= {(int(rel), str(tid), str(xmin)) for rel, tid, xmin in rows}
    return seen


def _written_here(conn: psycopg.Connection[Any], other: psycopg.Connection[Any],
                  info: _Table) -> list[_Version]:
    """The row versions of the table this transaction wrote (and has not replaced)."""
    # xmin at or after this transaction's own: its own, or a later transaction's (or, after
    # wraparound, a frozen row's so old that its xmin only looks newer).
    candidates = _versions(conn, sql.SQL(
        "SELECT t.tableoid::oid, t.ctid::text, t.xmin::text, to_jsonb(t) FROM {} t "
        "WHERE age(t.xmin) <= 0").format(sql.SQL(info.scan)))
    # A committed row is visible to another session as well.
    committed = _present(other, info, candidates)
    candidates = [v for v in candidates if v.place not in committed]
    if not candidates:
        return []
    row = conn.execute("SELECT txid_current()").fetchone()
    top = int(row[0]) if row else 0
    full = {v.xmin: _full_xid(top, int(v.xmin)) for v in candidates}
    status = dict(conn.execute("SELECT x, txid_status(x) FROM unnest(%s::bigint[]) x",
                               (sorted(set(full.values())),)).fetchall())
    # (Only this transaction's are in progress and visible here.)
    return [v for v in candidates if status.get(full[v.xmin]) == "in progress"]


def _full_xid(top: int, xid: int) -> int:
    """The 64-bit id (epoch included) of a 32-bit xid at or after `top`'s."""
    epoch, low = top >> 32, top & 0xFFFFFFFF
    return (epoch << 32 | xid) if xid >= low else ((epoch + 1) << 32 | xid)


def _replaced(conn: psycopg.Connection[Any], other: psycopg.Connection[Any], info: _Table,
              committed: list[_Version]) -> list[_Version]:
    """Of committed row versions (as the second session saw them), those this transaction
    updated or deleted: it no longer sees them, and the second session still does (so no
    one else deleted them meanwhile)."""
    mine = _present(conn, info, committed)
    gone = [v for v in committed if v.place not in mine]
    still = _present(other, info, gone)
    return [v for v in gone if v.place in still]


def _net(name: str, key: list[str], planned: TableDelta | None, added: list[dict[str, Any]],
         removed: list[dict[str, Any]], partition_keys: list[str]) -> TableDelta:
    """The net change of a table from the row versions written and those replaced, in the
    shape of the change set's delta (its own rows first, in its order)."""
    base = planned if planned is not None else TableDelta(name, key)
    if not key:
        balance = Counter(_canonical(r) for r in added)
        balance.subtract(_canonical(r) for r in removed)
        inserted, deleted = [], []
        for image in added:
            if balance[_canonical(image)] > 0:
                balance[_canonical(image)] -= 1
                inserted.append(image)
        for image in removed:
            if balance[_canonical(image)] < 0:
                balance[_canonical(image)] += 1
                deleted.append(image)
        return replace(base, inserted=inserted, updated=[], deleted=deleted)
    new = {_key(r, key): r for r in added}
    old = {_key(r, key): r for r in removed}
    updated: list[RowUpdate] = []
    # The change set's own re-keyed updates stay one update each.
    for update in planned.updated if planned is not None else []:
        was, is_ = _key(update.before, key), _key(update.after, key)
        if was != is_ and was in old and is_ in new:
            updated.append(_as_update(old.pop(was), new.pop(is_), key))
    for both in [k for k in new if k in old]:
        before, after = old.pop(both), new.pop(both)
        if _canonical(before) != _canonical(after):
            updated.append(_as_update(before, after, key))
    order: dict[str, int] = {}
    if planned is not None:
        for image in [*planned.inserted, *(u.before for u in planned.updated),
                      *planned.deleted]:
            order.setdefault(_key(image, key), len(order))

    def rank(image: dict[str, Any]) -> int:
        return order.get(_key(image, key), len(order))

    table = replace(base, inserted=sorted(new.values(), key=rank),
                    updated=sorted(updated, key=lambda u: rank(u.before)),
                    deleted=sorted(old.values(), key=rank))
    # A trigger's move to another partition is one update too.
    return pair_moves(table, partition_keys) if partition_keys else table


def _beyond(planned: TableDelta | None, actual: TableDelta
            ) -> tuple[list[str], dict[str, Any] | None]:
    """Compare what the change set meant to write with what was written: the columns of
    its own rows that differ (masked ones aside), and what was written beyond it."""
    masked = set(planned.masked) if planned is not None else set()
    rewritten: set[str] = set()
    columns: set[str] = set()
    counts: Counter[str] = Counter()
    if actual.key:
        key = actual.key
        meant_gone, meant = _sides(planned, key) if planned is not None else ({}, {})
        gone, now = _sides(actual, key)
        for name in {*meant_gone, *meant, *gone, *now}:
            # The row as it is now: as written, or as it was when nothing wrote it.
            is_ = now.get(name) if name in now else None if name in gone else \
                meant_gone.get(name)
            if name in meant_gone or name in meant:
                want = meant.get(name)
                if want is not None and is_ is not None:
                    rewritten |= _differing(want, is_) - masked
                elif (want is None) != (is_ is None):
                    counts["dropped"] += 1
                    columns |= set(want or is_ or {})
            elif name not in gone:
                counts["inserted"] += 1
                columns |= set(is_ or {})
            elif is_ is None:
                counts["deleted"] += 1
                columns |= set(gone[name])
            else:
                counts["updated"] += 1
                columns |= _differing(gone[name], is_)
    else:
        want = Counter(_canonical(r) for r in (planned.inserted if planned else []))
        got = Counter(_canonical(r) for r in actual.inserted)
        extra = [load_image(r) for r in (got - want).elements()]
        missing = [load_image(r) for r in (want - got).elements()]
        for mine, theirs in zip(missing, extra, strict=False):  # rewritten on the way in
            rewritten |= _differing(mine, theirs) - masked
        for image in extra[len(missing):]:
            counts["inserted"] += 1
            columns |= set(image)
        counts["dropped"] += max(0, len(missing) - len(extra))
        columns |= {c for image in missing[len(extra):] for c in image}
        want_gone = Counter(_canonical(r) for r in (planned.deleted if planned else []))
        got_gone = Counter(_canonical(r) for r in actual.deleted)
        for text in (got_gone - want_gone).elements():
            counts["deleted"] += 1
            columns |= set(load_image(text))
        for text in (want_gone - got_gone).elements():
            counts["dropped"] += 1
            columns |= set(load_image(text))
    effects = {what: counts[what] for what in ("inserted", "updated", "deleted", "dropped")}
    return sorted(rewritten), ({**effects, "columns": sorted(columns)}
                               if any(effects.values()) else None)


def _sides(table: TableDelta, key: list[str]
           ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """A table delta's rows by key: as they were (updated, deleted) and as they are
    (inserted, updated)."""
    before = {_key(u.before, key): u.before for u in table.updated}
    before.update({_key(r, key): r for r in table.deleted})
    after = {_key(u.after, key): u.after for u in table.updated}
    after.update({_key(r, key): r for r in table.inserted})
    return before, after


def _differing(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    return {c for c in set(a) | set(b) if dump_images(a.get(c)) != dump_images(b.get(c))}


def _key(image: dict[str, Any], key: list[str]) -> str:
    return dump_images([image.get(k) for k in key])


def _canonical(image: dict[str, Any]) -> str:
    """A row's contents as text, whichever order its columns came in."""
    return dump_images({k: image[k] for k in sorted(image)})
