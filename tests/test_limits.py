"""The promotion's limit check at every boundary: a change set exactly at a limit fits, one
over is refused naming the limit, and a refusal lists every limit broken."""

from __future__ import annotations

from typing import Any

import pytest

from harness.changeset import ChangeSet
from harness.config import Config, parse_config
from harness.promote.limits import check_limits
from harness.sandbox.capture import DdlStatement, RowDelta, RowUpdate, TableDelta
from harness.sandbox.workspace import Commit, FileChange, WorkspaceChanges


def config(blast: str = "", guardrails: str = "") -> Config:
    return parse_config(f"orchestrator:\n  blast_radius: {{{blast}}}\n"
                        f"guardrails: {{{guardrails}}}\n")


def changeset(*, commits: int = 0, files: int = 0, lines: int = 0,
              rows: dict[str, int] | None = None, paths: list[str] | None = None,
              ddl: list[str] | None = None, secrets: list[str] | None = None,
              masked: dict[str, list[str]] | None = None,
              updates: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] | None = None
              ) -> ChangeSet:
    names = paths or [f"f{n}.txt" for n in range(files)]
    file_changes = [FileChange(name, lines if i == 0 else 0, 0) for i, name in enumerate(names)]
    workspace = WorkspaceChanges("base", "head",
                                 [Commit(f"{n:040x}", "a", "a@b", f"c{n}") for n in range(commits)],
                                 file_changes)
    tables: dict[str, TableDelta] = {}
    for name, count in (rows or {}).items():
        tables[name] = TableDelta(name, ["id"], inserted=[{"id": i} for i in range(count)],
                                  masked=(masked or {}).get(name, []))
    for name, pairs in (updates or {}).items():
        tables[name] = TableDelta(name, ["id"], updated=[
            RowUpdate({"id": b["id"]}, b, a, sorted(k for k in a if a[k] != b.get(k)))
            for b, a in pairs], masked=(masked or {}).get(name, []))
    statements = [DdlStatement("CREATE TABLE", "table", "public.x", q) for q in ddl or []]
    delta = RowDelta(tables, statements) if rows is not None or updates or ddl else None
    return ChangeSet("t", workspace, delta, None, secrets or [])


def limits(changes: ChangeSet, cfg: Config) -> list[str]:
    return [v.limit for v in check_limits(changes, cfg)]


@pytest.mark.parametrize(("setting", "make"), [
    ("max_commits", lambda n: changeset(commits=n)),
    ("max_files_changed", lambda n: changeset(files=n)),
    ("max_lines_changed", lambda n: changeset(files=1, lines=n)),
    ("max_database_rows", lambda n: changeset(rows={"public.orders": n})),
])
def test_a_change_set_exactly_at_a_limit_fits_and_one_over_is_refused(setting: str, make: Any
                                                                      ) -> None:
    cfg = config(f"{setting}: 4, max_database_rows: 1000" if setting != "max_database_rows"
                 else "max_database_rows: 4")
    assert limits(make(3), cfg) == []
    assert limits(make(4), cfg) == []
    over = check_limits(make(5), cfg)
    assert [v.limit for v in over] == [setting]
    assert (over[0].allowed, over[0].actual) == (4, 5)


def test_per_table_limits_count_their_table_by_bare_or_qualified_name() -> None:
    for name in ("orders", "public.orders"):
        cfg = config(f"max_database_rows: 100, max_rows_per_table: {{{name}: 2}}")
        assert limits(changeset(rows={"public.orders": 2, "public.users": 9}), cfg) == []
        refused = check_limits(changeset(rows={"public.orders": 3}), cfg)
        assert [v.limit for v in refused] == [f"max_rows_per_table[{name}]"]
        assert refused[0].actual == 3


def test_a_zero_limit_refuses_the_first_one() -> None:
    cfg = config("max_commits: 0, max_database_rows: 0")
    assert limits(changeset(), cfg) == []
    assert limits(changeset(commits=1, rows={"public.t": 1}), cfg) == ["max_commits",
                                                                       "max_database_rows"]


def test_every_broken_limit_is_listed_at_once() -> None:
    cfg = config("max_commits: 1, max_files_changed: 1, max_lines_changed: 1, "
                 "max_database_rows: 1, max_rows_per_table: {t: 0}",
                 "protected_tables: [audit], protected_paths: ['deploy/**']")
    changes = changeset(commits=2, lines=2, paths=["deploy/x.yaml", "b.txt"],
                        rows={"public.t": 1, "public.audit": 1}, ddl=["CREATE TABLE x ()"],
                        secrets=["b.txt"])
    assert sorted(limits(changes, cfg)) == sorted([
        "max_commits", "max_files_changed", "max_lines_changed", "protected_paths",
        "secrets", "max_database_rows", "max_rows_per_table[t]", "protected_tables",
        "allow_ddl"])


def test_protected_paths_match_at_any_depth_and_nothing_else() -> None:
    cfg = config("", "protected_paths: ['.github/workflows/**']")
    assert limits(changeset(paths=[".github/workflows/ci.yml"]), cfg) == ["protected_paths"]
    assert limits(changeset(paths=[".github/workflows/a/b/c.yml"]), cfg) == ["protected_paths"]
    assert limits(changeset(paths=[".github/CODEOWNERS", "workflows/x.yml"]), cfg) == []


def test_a_protected_table_refuses_even_one_row() -> None:
    cfg = config("max_database_rows: 100", "protected_tables: [billing.invoices]")
    assert limits(changeset(rows={"billing.invoices": 1}), cfg) == ["protected_tables"]
    assert limits(changeset(rows={"public.invoices": 1}), cfg) == []


def test_ddl_is_refused_unless_allowed_and_then_only_when_it_reshapes_written_rows() -> None:
    assert limits(changeset(rows={}, ddl=["CREATE TABLE x (id int)"]), config()) == ["allow_ddl"]
    allowed = config("allow_ddl: true, max_database_rows: 100")
    assert limits(changeset(rows={}, ddl=["CREATE TABLE x (id int)"]), allowed) == []
    reshaping = changeset(rows={"public.orders": 1},
                          ddl=["ALTER TABLE orders DROP COLUMN note"])
    assert limits(reshaping, allowed) == ["allow_ddl"]
    elsewhere = changeset(rows={"public.orders": 1}, ddl=["ALTER TABLE users DROP COLUMN note"])
    assert limits(elsewhere, allowed) == []


def test_a_masked_column_may_not_be_written_but_others_in_its_row_may() -> None:
    cfg = config("max_database_rows: 100")
    masked = {"public.users": ["email"]}
    before = {"id": 1, "email": "mask@x.y", "credit": 1}
    fine = changeset(updates={"public.users": [(before, {**before, "credit": 2})]},
                     masked=masked)
    assert limits(fine, cfg) == []
    changed = changeset(updates={"public.users": [(before, {**before, "email": "a@b.c"})]},
                        masked=masked)
    refused = check_limits(changed, cfg)
    assert [v.limit for v in refused] == ["masked_columns"] and refused[0].actual == ["email"]
    inserted = ChangeSet("t", WorkspaceChanges("b", "h"), RowDelta({"public.users": TableDelta(
        "public.users", ["id"], inserted=[{"id": 9, "email": None}, {"id": 10, "email": "x"}],
        masked=["email"])}))
    assert [v.actual for v in check_limits(inserted, cfg)] == [["email"]]
    keyless = ChangeSet("t", WorkspaceChanges("b", "h"), RowDelta({"public.log": TableDelta(
        "public.log", [], deleted=[{"email": "m"}], masked=["email"])}))
    assert limits(keyless, cfg) == ["masked_columns"]


def test_a_credential_in_the_change_is_refused_wherever_it_is() -> None:
    refused = check_limits(changeset(secrets=["deploy.cfg", "commit message"]), config())
    assert [v.limit for v in refused] == ["secrets"]
    assert "deploy.cfg, commit message" in refused[0].detail
