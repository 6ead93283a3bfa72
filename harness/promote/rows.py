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
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

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
    """`fire` mode: per table, the columns the target's triggers set to something other
    than the sandbox's values."""
    side_effects: dict[str, dict[str, int]] = field(default_factory=dict)
    """`fire` mode: rows the target's triggers wrote beyond the change set, per table."""


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
    delta as actually written (in `fire` mode, after the target's triggers changed it).
    Raises TriggersRefused when triggers would fire that must not."""
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
    before_stats = _write_counts(conn) if applied.mode == "fire" else {}
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
    conn.execute("SAVEPOINT harness_apply")
    try:
        actual = _write(conn, delta, deltas, tables, applied)
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
    if applied.mode == "fire":
        applied.rewritten = _rewritten(delta, actual)
        applied.side_effects = _side_effects(before_stats, _write_counts(conn), delta)
    return applied, [], actual


def _write(conn: psycopg.Connection[Any], delta: RowDelta, deltas: list[TableDelta],
           tables: dict[str, _Table], applied: Applied) -> RowDelta:
    """The writes, in an order every constraint accepts; the delta as written."""
    written: dict[str, TableDelta] = {}
    for table in deltas:  # parents first
        count, images = _insert(conn, table, tables[table.table], applied.mode == "fire")
        applied.inserted += count
        written[table.table] = replace(table, inserted=images)
        if table.inserted:
            # Before the target's own triggers (fire mode) draw from the same sequences.
            _advance_sequences(conn, table.table)
    for table in deltas:
        count, updates = _update(conn, table, tables[table.table], applied.mode == "fire")
        applied.updated += count
        written[table.table] = replace(written[table.table], updated=updates)
    for table in reversed(deltas):  # children first
        count, removed = _delete(conn, table, tables[table.table])
        applied.deleted += count
        written[table.table] = replace(written[table.table], deleted=removed)
    return RowDelta({name: written[name] for name in delta.tables}, delta.ddl)


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


def _write_counts(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int, int]]:
    """Rows this transaction has inserted, updated and deleted so far, per table (a
    partition's under its root)."""
    rows = conn.execute(f"""
        SELECT (SELECT {catalog.QUALIFIED_NAME} FROM pg_class c JOIN pg_namespace n
                ON n.oid = c.relnamespace
                WHERE c.oid = coalesce(pg_partition_root(s.relid), s.relid)),
               sum(s.n_tup_ins), sum(s.n_tup_upd), sum(s.n_tup_del)
        FROM pg_stat_xact_user_tables s GROUP BY 1""").fetchall()
    return {str(name): (int(i), int(u), int(d)) for name, i, u, d in rows if name}


def _side_effects(before: dict[str, tuple[int, int, int]],
                  after: dict[str, tuple[int, int, int]], delta: RowDelta
                  ) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for name, counts in after.items():
        old = before.get(name, (0, 0, 0))
        own = delta.tables.get(name)
        mine = (len(own.inserted), len(own.updated), len(own.deleted)) if own else (0, 0, 0)
        extra = [now - was - ours for now, was, ours in zip(counts, old, mine, strict=True)]
        if any(extra):
            found[name] = dict(zip(("inserted", "updated", "deleted"), extra, strict=True))
    return found


def _rewritten(planned: RowDelta, actual: RowDelta) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, table in planned.tables.items():
        written = actual.tables[name]
        columns: set[str] = set()
        pairs = list(zip(table.inserted, written.inserted, strict=False)) + list(
            zip((u.after for u in table.updated), (u.after for u in written.updated),
                strict=False))
        for mine, theirs in pairs:
            columns |= {c for c in set(mine) | set(theirs)
                        if mine.get(c) != theirs.get(c) and c not in table.masked}
        if columns:
            found[name] = sorted(columns)
    return found


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
        encoded = dump_images(image)
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
    return dump_images(row)


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
            ) -> tuple[int, list[dict[str, Any]]]:
    if not table.inserted:
        return 0, []
    names = info.columns
    statement = sql.SQL(
        "INSERT INTO {} AS t ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ORDER BY e.harness_ord"
    ).format(sql.SQL(table.table), sql.SQL(", ").join(sql.Identifier(c) for c in names),
             sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in names),
             _rows_of("images", table.table)) + _returning(returning)
    count, returned = _in_chunks(conn, statement, table.inserted, returning)
    return count, _in_order(table.inserted, returned, table.key) if returning else table.inserted


def _update(conn: psycopg.Connection[Any], table: TableDelta, info: _Table, returning: bool
            ) -> tuple[int, list[RowUpdate]]:
    if not table.updated:
        return 0, table.updated
    if not table.key:
        raise AssertionError("a table without a key has no updates, only deletes and inserts")
    # Masked columns hold masks, never data for the target (a change set that changes one
    # is refused before this).
    settable = [c for c in info.columns if c not in info.identity_always + info.masked]
    # A row that moved to another partition has a new key: it is found by its old one.
    rekeyed = any(_moved(u, table.key) for u in table.updated)
    names = settable if rekeyed else [c for c in settable if c not in table.key]
    if not names:
        return 0, table.updated  # (an update of key columns only is a delete and an insert)
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
        return count, table.updated
    written = _in_order(afters, returned, table.key)
    return count, [RowUpdate(u.key, u.before, after,
                             sorted(c for c in set(u.before) | set(after)
                                    if u.before.get(c) != after.get(c)))
                   for u, after in zip(table.updated, written, strict=True)]


def _in_order(planned: list[dict[str, Any]], returned: list[dict[str, Any]], key: list[str]
              ) -> list[dict[str, Any]]:
    """The rows RETURNING gave, in the order of the images they were written from."""
    if not key:
        return returned
    by_key = {dump_images([row.get(k) for k in key]): row for row in returned}
    return [by_key.get(dump_images([row.get(k) for k in key]), row)
            for row in planned]


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
    return count, _in_order(table.deleted, returned, table.key)


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
