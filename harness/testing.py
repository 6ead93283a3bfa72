"""Assertions over what an episode or a sandbox changed, for tests written with pytest
(or any runner): `changes(episode).rows["public.orders"].deleted == 0`.

A table the change did not touch reads as all zeros, so an assertion about a table that
must stay untouched holds until something touches it. Names match as harness's limits
match them (letter case aside, quoted or not); a name without a schema means the table
of that name in any schema, and is an error (LookupError) when changed tables of that
name stand in several schemas: a safety assertion never reads the wrong one as zero."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.tables import TableName

if TYPE_CHECKING:
    from harness.changeset import ChangeSet
    from harness.episode import ActionResult, Episode
    from harness.sandbox import Sandbox
    from harness.sandbox.capture import RowDelta, TableDelta


@dataclass(frozen=True)
class TableRows:
    """One table's changed rows: counts, and the rows themselves."""

    table: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    keys: dict[str, list[Any]] = field(default_factory=dict)
    """Per operation, the key of each changed row (its whole image without a key)."""

    @property
    def total(self) -> int:
        """Rows inserted, updated and deleted."""
        return self.inserted + self.updated + self.deleted

    @classmethod
    def of(cls, name: str, delta: TableDelta) -> TableRows:
        def key(image: Mapping[str, Any]) -> Any:
            values = [image.get(column) for column in delta.key] if delta.key else dict(image)
            return values[0] if isinstance(values, list) and len(values) == 1 else values
        return cls(name, len(delta.inserted), len(delta.updated), len(delta.deleted), {
            "inserted": [key(row) for row in delta.inserted],
            "updated": [key(u.key) for u in delta.updated],
            "deleted": [key(row) for row in delta.deleted]})


class Rows(Mapping[str, TableRows]):
    """The row changes per table, by qualified (`public.orders`) or bare (`orders`) name;
    an untouched table reads as zeros."""

    def __init__(self, delta: RowDelta | None) -> None:
        self._tables = {name: TableRows.of(name, table)
                        for name, table in (delta.tables.items() if delta else [])}
        self.ddl: list[str] = [d.query or d.command_tag for d in delta.ddl] if delta else []

    def __getitem__(self, name: str) -> TableRows:
        matches = [table for table in self._tables
                   if TableName.parse(table).under([name]) is not None]
        if len(matches) > 1:
            raise LookupError(f"{name!r} names several changed tables ({', '.join(matches)}): "
                              "say which, with its schema")
        return self._tables[matches[0]] if matches else TableRows(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    @property
    def total(self) -> int:
        """Rows changed over all tables."""
        return sum(table.total for table in self._tables.values())


@dataclass(frozen=True)
class Changes:
    """What a run changed, shaped for assertions."""

    commits: int
    messages: list[str]
    files: list[str]
    lines_added: int
    lines_removed: int
    rows: Rows
    refusals: list[str] = field(default_factory=list)
    """`kind rule` of each refused action, in order (`guardrail sql.delete-without-where`)."""
    policies_broken: list[str] = field(default_factory=list)
    """The effect policies an action broke, in order."""
    changeset: ChangeSet | None = None

    @property
    def ddl(self) -> list[str]:
        """The schema changes, in order."""
        return self.rows.ddl

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what the pytest plugin attaches to a test's report)."""
        return {"commits": self.commits, "files": self.files, "lines_added": self.lines_added,
                "lines_removed": self.lines_removed, "ddl": self.ddl,
                "rows": {name: {"inserted": t.inserted, "updated": t.updated,
                                "deleted": t.deleted} for name, t in self.rows.items()},
                "refusals": self.refusals, "policies_broken": self.policies_broken}


def changes(of: Episode | Sandbox | ChangeSet) -> Changes:
    """The change of an episode (as it stands now; the episode goes on), of a sandbox, or
    of a change set already measured."""
    from harness.changeset import ChangeSet
    from harness.episode import Episode

    results: list[ActionResult] = []
    if isinstance(of, Episode):
        results = of.results
        of = of.changes()
    if isinstance(of, ChangeSet):
        workspace, delta, changeset = of.workspace, of.rows, of
    else:
        workspace, delta, changeset = of.changes(), of.row_delta(), None
    return Changes(
        commits=workspace.commit_count, messages=[c.message for c in workspace.commits],
        files=[f.path for f in workspace.files], lines_added=workspace.lines_added,
        lines_removed=workspace.lines_removed, rows=Rows(delta),
        refusals=[f"{r.refusal.kind} {r.refusal.rule}" for r in results if r.refusal],
        policies_broken=[b["policy"] for r in results
                         for b in [*r.output.get("effects", []), *r.output.get("effects_warned", [])]],
        changeset=changeset)


def assert_untouched(change: Changes, *tables: str) -> None:
    """Fail naming each table that has a changed row."""
    touched = [t for t in (change.rows[name] for name in tables) if t.total]
    assert not touched, "changed, though they must stay untouched: " + "; ".join(
        f"{t.table} +{t.inserted} ~{t.updated} -{t.deleted}" for t in touched)


def assert_within(change: Changes, *, rows: int | None = None, commits: int | None = None,
                  files: int | None = None, ddl: bool | None = None) -> None:
    """Fail naming every limit the change exceeds (each limit is inclusive)."""
    over = []
    if rows is not None and change.rows.total > rows:
        over.append(f"{change.rows.total} rows changed (limit {rows})")
    if commits is not None and change.commits > commits:
        over.append(f"{change.commits} commits (limit {commits})")
    if files is not None and len(change.files) > files:
        over.append(f"{len(change.files)} files changed (limit {files})")
    if ddl is False and change.ddl:
        over.append(f"schema changed: {change.ddl}")
    assert not over, "; ".join(over)
