"""The check of a whole change set (at promotion and in the gate): a change set over any
limit is refused as a whole, with every violated limit listed."""

from __future__ import annotations

import json

from harness.changeset import ChangeSet
from harness.config import Config
from harness.limits.violation import Limit, Violation
from harness.sandbox.capture import RowDelta, dump_images
from harness.sandbox.paths import matches, resolve
from harness.tables import TableName


def check(changeset: ChangeSet, config: Config) -> list[Violation]:
    """Every limit of `config` that `changeset` breaks (empty when it fits)."""
    blast = config.orchestrator.blast_radius
    found: list[Violation] = []
    workspace = changeset.workspace
    if workspace.commit_count > blast.max_commits:
        found.append(Violation(Limit.MAX_COMMITS, blast.max_commits, workspace.commit_count,
                               f"{workspace.commit_count} commits since the base"))
    if blast.max_files_changed is not None and len(workspace.files) > blast.max_files_changed:
        found.append(Violation(Limit.MAX_FILES_CHANGED, blast.max_files_changed,
                               len(workspace.files), f"{len(workspace.files)} files changed"))
    lines = workspace.lines_added + workspace.lines_removed
    if blast.max_lines_changed is not None and lines > blast.max_lines_changed:
        found.append(Violation(Limit.MAX_LINES_CHANGED, blast.max_lines_changed, lines,
                               f"+{workspace.lines_added} -{workspace.lines_removed} lines"))
    for change in workspace.files:
        path = resolve(change.path)
        for pattern in config.guardrails.protected_paths:
            if matches(path, pattern):
                found.append(Violation(Limit.PROTECTED_PATHS, pattern, change.path,
                                       f"{change.path} is protected by {pattern!r}"))
                break
    if changeset.secrets:
        found.append(Violation(
            Limit.SECRETS, [], changeset.secrets,
            "the change carries a credential the harness held for the agent (an auth header "
            "or a secret env_var value, or an encoding of it) in: "
            + ", ".join(changeset.secrets) + "; promoting it would publish the credential"))
    rows = changeset.rows
    if rows is None:
        return found
    if rows.rows > blast.max_database_rows:
        found.append(Violation(Limit.MAX_DATABASE_ROWS, blast.max_database_rows, rows.rows,
                               f"{rows.rows} rows changed"))
    for table, delta in sorted(rows.tables.items()):
        name = TableName.parse(table)
        bare = name.display
        limit_name = name.under(list(blast.max_rows_per_table))
        if limit_name is not None and delta.rows > blast.max_rows_per_table[limit_name]:
            found.append(Violation(f"{Limit.MAX_ROWS_PER_TABLE}[{limit_name}]",
                                   blast.max_rows_per_table[limit_name], delta.rows,
                                   f"{delta.rows} rows changed in {bare}"))
        protected = name.under(config.guardrails.protected_tables)
        if protected is not None:
            found.append(Violation(Limit.PROTECTED_TABLES, protected, delta.rows,
                                   f"{delta.rows} rows changed in the protected table {bare}"))
    found += _masked_writes(rows)
    if rows.ddl and not blast.allow_ddl:
        found.append(Violation(Limit.ALLOW_DDL, False, len(rows.ddl),
                               f"{len(rows.ddl)} schema change(s): "
                               + "; ".join((d.query or d.command_tag)[:80] for d in rows.ddl)))
    elif rows.ddl:
        found += _unreplayable(rows)
    return found


def _masked_writes(rows: RowDelta) -> list[Violation]:
    """Masked columns hold values derived from the real ones (sandbox.database.mask): a
    change set that writes one would put a mask where the real value belongs; refused."""
    found = []
    for table, delta in sorted(rows.tables.items()):
        masked = set(delta.masked)
        if not masked:
            continue
        columns: set[str] = set()
        count = 0
        for update in delta.updated:
            changed = {c for c in masked
                       if dump_images(update.before.get(c)) != dump_images(update.after.get(c))}
            columns |= changed
            count += bool(changed)
        for image in delta.inserted:
            given = {c for c in masked if image.get(c) is not None}
            columns |= given
            count += bool(given)
        if columns:
            found.append(Violation(
                Limit.MASKED_COLUMNS, "unchanged", sorted(columns),
                f"{count} row(s) of {table} write the masked column(s) "
                f"{', '.join(sorted(columns))}: their sandbox values are masks, not data "
                "(sandbox.database.mask); promote such a change from an unmasked rehearsal"))
        if delta.deleted and not delta.key:
            found.append(Violation(
                Limit.MASKED_COLUMNS, "a key", len(delta.deleted),
                f"{table} has no primary key, so its deleted rows are found by their "
                "contents, part of which is masked; they cannot be identified on the target"))
    return found


_RESHAPING = {"AT_DropColumn": "drops a column", "AT_AlterColumnType": "changes a column's type",
              "AT_AttachPartition": "attaches a partition",
              "AT_DetachPartition": "detaches a partition"}


def _unreplayable(rows: RowDelta) -> list[Violation]:
    """Schema changes are replayed before the rows; a change that reshapes a table whose
    rows the change set also writes would make the rows land wrong (a renamed column's
    values lost, a detached partition's rows routed elsewhere): refused, to be promoted in
    two steps."""
    from pglast import parser

    touched = [TableName.parse(name) for name in rows.tables]
    found = []
    for statement in rows.ddl:
        try:
            tree = json.loads(parser.parse_sql_json(statement.query or ""))
        except parser.ParseError:
            continue
        for raw in tree.get("stmts", []):
            kind, body = next(iter(raw["stmt"].items()))
            relation = body.get("relation") or {}
            table = relation.get("relname")
            what = None
            if kind == "AlterTableStmt":
                subtypes = [c.get("AlterTableCmd", {}).get("subtype") for c in body.get("cmds", [])]
                what = next((_RESHAPING[s] for s in subtypes if s in _RESHAPING), None)
            elif kind == "RenameStmt" and body.get("renameType") == "OBJECT_COLUMN":
                what = "renames a column"
            if what and any(t.name == table and relation.get("schemaname") in (None, t.schema)
                            for t in touched):
                found.append(Violation(Limit.ALLOW_DDL, "replayable", statement.query,
                                       f"the schema change {what} of {table}, whose rows the "
                                       "change set also writes; replayed before the rows, it "
                                       "would change where or how they land. Promote the "
                                       "schema change and the rows in two episodes"))
    return found
