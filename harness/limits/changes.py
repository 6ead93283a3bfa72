"""The check of a whole change set (at promotion and in the gate): a change set over any
limit is refused as a whole, with every violated limit listed."""

from __future__ import annotations

import json

from harness.changeset import ChangeSet
from harness.config import CommitEffect, Config, EffectPolicy, FileEffect, RowEffect
from harness.limits.effects import Breach, Effects, evaluate
from harness.limits.violation import Limit, Violation
from harness.sandbox.capture import RowDelta, dump_images
from harness.sandbox.paths import matches, resolve
from harness.tables import TableName


def check(changeset: ChangeSet, config: Config) -> list[Violation]:
    """Every limit of `config` that `changeset` breaks (empty when it fits): the blast
    radius's counts and the protected paths and tables (built-in effect policies), the
    configured effect policies, and what only a whole change set shows (lines, credentials,
    masked columns, schema changes)."""
    blast = config.orchestrator.blast_radius
    workspace = changeset.workspace
    rows = changeset.rows
    effects = Effects(workspace.files, workspace.commits, rows)
    builtins = built_in_policies(config)
    found = _violations([p for p in builtins if p.rows is None], config, effects)
    lines = workspace.lines_added + workspace.lines_removed
    if blast.max_lines_changed is not None and lines > blast.max_lines_changed:
        found.append(Violation(Limit.MAX_LINES_CHANGED, blast.max_lines_changed, lines,
                               f"+{workspace.lines_added} -{workspace.lines_removed} lines"))
    found.sort(key=lambda violation: _WORKSPACE_ORDER.index(violation.limit))
    if changeset.secrets:
        found.append(Violation(
            Limit.SECRETS, [], changeset.secrets,
            "the change carries a credential the harness held for the agent (an auth header "
            "or a secret env_var value, or an encoding of it) in: "
            + ", ".join(changeset.secrets) + "; promoting it would publish the credential"))
    found += [Violation(f"{Limit.EFFECTS}[{breach.policy}]", breach.allowed, breach.actual,
                        breach.detail + (" (needs an approval)" if breach.decision ==
                                         "require_approval" else ""))
              for breach in evaluate(config.effects, effects) if breach.decision != "warn"]
    if rows is None:
        return found
    found += _violations([p for p in builtins if p.rows is not None], config, effects)
    found += _masked_writes(rows)
    if rows.ddl and not blast.allow_ddl:
        found.append(Violation(Limit.ALLOW_DDL, False, len(rows.ddl),
                               f"{len(rows.ddl)} schema change(s): "
                               + "; ".join((d.query or d.command_tag)[:80] for d in rows.ddl)))
    elif rows.ddl:
        found += _unreplayable(rows)
    return found


def warnings(changeset: ChangeSet, config: Config) -> list[Breach]:
    """The `warn` effect policies `changeset` breaks: shown, never refused."""
    workspace = changeset.workspace
    effects = Effects(workspace.files, workspace.commits, changeset.rows)
    return [breach for breach in evaluate(config.effects, effects) if breach.decision == "warn"]


_WORKSPACE_ORDER: list[str] = [Limit.MAX_COMMITS, Limit.MAX_FILES_CHANGED, Limit.MAX_LINES_CHANGED,
                    Limit.PROTECTED_PATHS]


def built_in_policies(config: Config) -> list[EffectPolicy]:
    """The blast radius's counts and the protected paths and tables, as effect policies of
    the engine the configured ones use (ids are the limits' names)."""
    blast = config.orchestrator.blast_radius
    policies = [EffectPolicy(id=Limit.MAX_COMMITS,
                             commits=CommitEffect(more_than=blast.max_commits))]
    if blast.max_files_changed is not None:
        policies.append(EffectPolicy(id=Limit.MAX_FILES_CHANGED,
                                     files=FileEffect(more_than=blast.max_files_changed)))
    if config.guardrails.protected_paths:
        policies.append(EffectPolicy(id=Limit.PROTECTED_PATHS, files=FileEffect(
            path=list(config.guardrails.protected_paths))))
    policies.append(EffectPolicy(id=Limit.MAX_DATABASE_ROWS, rows=RowEffect(
        table="*", more_than=blast.max_database_rows)))
    policies += [EffectPolicy(id=f"{Limit.MAX_ROWS_PER_TABLE}[{table}]", rows=RowEffect(
        table=table, more_than=most, each_table=True))
        for table, most in blast.max_rows_per_table.items()]
    policies += [EffectPolicy(id=Limit.PROTECTED_TABLES, rows=RowEffect(
        table=table, each_table=True)) for table in config.guardrails.protected_tables]
    return policies


def _violations(policies: list[EffectPolicy], config: Config, effects: Effects
                ) -> list[Violation]:
    """The built-in policies' breaches, worded as the limits they are."""
    found: list[Violation] = []
    per_table: list[tuple[str, int, Violation]] = []  # listed table by table
    counted: set[tuple[str, str]] = set()  # a table falls under the first entry naming it
    for breach in evaluate(policies, effects):
        limit = breach.policy
        rows = [e for e in breach.matched if e.get("op") != "drop"]
        dropped = len(rows) < len(breach.matched)
        if limit == Limit.MAX_COMMITS:
            found.append(Violation(limit, breach.allowed, breach.actual,
                                   f"{breach.actual} commits since the base"))
        elif limit == Limit.MAX_FILES_CHANGED:
            found.append(Violation(limit, breach.allowed, breach.actual,
                                   f"{breach.actual} files changed"))
        elif limit == Limit.PROTECTED_PATHS:
            for entry in breach.matched:
                pattern = next(p for p in config.guardrails.protected_paths
                               if matches(resolve(entry["path"]), p))
                found.append(Violation(limit, pattern, entry["path"],
                                       f"{entry['path']} is protected by {pattern!r}"))
        elif limit == Limit.MAX_DATABASE_ROWS:
            # Dropped tables are schema changes, judged as such (allow_ddl).
            if len(rows) > breach.allowed:
                found.append(Violation(limit, breach.allowed, len(rows),
                                       f"{len(rows)} rows changed"))
        elif breach.table is not None:
            kind = Limit.PROTECTED_TABLES if limit == Limit.PROTECTED_TABLES \
                else Limit.MAX_ROWS_PER_TABLE
            if (kind, breach.table) in counted:
                continue
            counted.add((kind, breach.table))
            bare = TableName.parse(breach.table).display
            if kind == Limit.PROTECTED_TABLES:
                entry = TableName.parse(breach.table).under(config.guardrails.protected_tables)
                per_table.append((breach.table, 1, Violation(limit, entry, len(rows), (
                    f"the protected table {bare} was dropped" if dropped else
                    f"{len(rows)} rows changed in the protected table {bare}"))))
            elif len(rows) > breach.allowed:
                per_table.append((breach.table, 0, Violation(
                    limit, breach.allowed, len(rows), f"{len(rows)} rows changed in {bare}")))
    return found + [violation for _, _, violation in
                    sorted(per_table, key=lambda entry: entry[:2])]


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
            elif kind == "RenameStmt" and body.get("renameType") == "OBJECT_TABLE":
                # The rows are named by the new name; the rename names the old one.
                touched_names = {t.name for t in touched} | {
                    TableName.parse(a).name for d in rows.tables.values() for a in d.aliases}
                if table in touched_names:
                    found.append(Violation(Limit.ALLOW_DDL, "replayable", statement.query,
                                           f"the schema change renames the table {table}, "
                                           "whose rows the change set also writes; promote "
                                           "the rename and the rows in two episodes"))
                continue
            if what and any(t.name == table and relation.get("schemaname") in (None, t.schema)
                            for t in touched):
                found.append(Violation(Limit.ALLOW_DDL, "replayable", statement.query,
                                       f"the schema change {what} of {table}, whose rows the "
                                       "change set also writes; replayed before the rows, it "
                                       "would change where or how they land. Promote the "
                                       "schema change and the rows in two episodes"))
    return found
