"""The promotion's limit check at every boundary: a change set exactly at a limit fits, one
over is refused naming the limit, and a refusal lists every limit broken."""

from __future__ import annotations

from typing import Any

import pytest

from harness.changeset import ChangeSet
from harness.config import Config, parse_config
from harness.limits import check as check_limits
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


def test_each_violation_says_what_was_allowed_what_was_found_and_where() -> None:
    cfg = config("max_commits: 1, max_files_changed: 1, max_lines_changed: 3, "
                 "max_database_rows: 2, max_rows_per_table: {t: 1}",
                 "protected_tables: [audit], protected_paths: ['deploy/**']")
    changes = changeset(commits=2, lines=4, paths=["deploy/x.yaml", "b.txt"],
                        rows={"public.t": 2, "public.audit": 1},
                        ddl=["CREATE TABLE x (id int)", "CREATE INDEX ON t (a)"],
                        secrets=["b.txt", "public.t"])
    found = {v.limit: v.to_dict() for v in check_limits(changes, cfg)}
    assert found == {
        "max_commits": {"limit": "max_commits", "allowed": 1, "actual": 2,
                        "detail": "2 commits since the base"},
        "max_files_changed": {"limit": "max_files_changed", "allowed": 1, "actual": 2,
                              "detail": "2 files changed"},
        "max_lines_changed": {"limit": "max_lines_changed", "allowed": 3, "actual": 4,
                              "detail": "+4 -0 lines"},
        "protected_paths": {"limit": "protected_paths", "allowed": "deploy/**",
                            "actual": "deploy/x.yaml",
                            "detail": "deploy/x.yaml is protected by 'deploy/**'"},
        "secrets": {"limit": "secrets", "allowed": [], "actual": ["b.txt", "public.t"],
                    "detail": "the change carries a credential the harness held for the agent "
                              "(an auth header or a secret env_var value, or an encoding of "
                              "it) in: b.txt, public.t; promoting it would publish the "
                              "credential"},
        "max_database_rows": {"limit": "max_database_rows", "allowed": 2, "actual": 3,
                              "detail": "3 rows changed"},
        "max_rows_per_table[t]": {"limit": "max_rows_per_table[t]", "allowed": 1,
                                  "actual": 2, "detail": "2 rows changed in public.t"},
        "protected_tables": {"limit": "protected_tables", "allowed": "audit", "actual": 1,
                             "detail": "1 rows changed in the protected table public.audit"},
        "allow_ddl": {"limit": "allow_ddl", "allowed": False, "actual": 2,
                      "detail": "2 schema change(s): CREATE TABLE x (id int); "
                                "CREATE INDEX ON t (a)"},
    }


def test_the_ddl_listing_is_cut_per_statement_and_falls_back_to_the_command_tag() -> None:
    long = "CREATE TABLE x (" + ", ".join(f"c{i} int" for i in range(40)) + ")"
    changes = ChangeSet("t", WorkspaceChanges("b", "h"), RowDelta({}, [
        DdlStatement("CREATE TABLE", "table", "public.x", long),
        DdlStatement("CREATE INDEX", "index", "public.i", None)]))
    detail = check_limits(changes, config())[0].detail
    assert detail == f"2 schema change(s): {long[:80]}; CREATE INDEX"


def test_a_quoted_table_name_is_matched_without_its_quotes() -> None:
    cfg = config("max_database_rows: 100, max_rows_per_table: {Order Lines: 1}",
                 "protected_tables: [Audit Log]")
    found = check_limits(changeset(rows={'public."Order Lines"': 2, 'public."Audit Log"': 1}),
                         cfg)
    assert [(v.limit, v.detail) for v in found] == [
        ("protected_tables", "1 rows changed in the protected table public.Audit Log"),
        ("max_rows_per_table[Order Lines]", "2 rows changed in public.Order Lines")]


@pytest.mark.parametrize(("statement", "what"), [
    ("ALTER TABLE orders DROP COLUMN note", "drops a column"),
    ("ALTER TABLE public.orders ALTER COLUMN total TYPE bigint", "changes a column's type"),
    ("ALTER TABLE orders RENAME COLUMN note TO memo", "renames a column"),
    ("ALTER TABLE orders ADD COLUMN x int, DROP COLUMN note", "drops a column"),
    ("ALTER TABLE orders DETACH PARTITION orders_2024", "detaches a partition"),
    ("ALTER TABLE orders ATTACH PARTITION o FOR VALUES IN (1)", "attaches a partition"),
])
def test_a_reshaping_change_of_a_written_table_is_refused_saying_how(statement: str,
                                                                      what: str) -> None:
    cfg = config("allow_ddl: true, max_database_rows: 100")
    changes = changeset(rows={'public."orders"': 1}, ddl=[statement])
    assert [v.to_dict() for v in check_limits(changes, cfg)] == [{
        "limit": "allow_ddl", "allowed": "replayable", "actual": statement,
        "detail": f"the schema change {what} of orders, whose rows the change set also "
                  "writes; replayed before the rows, it would change where or how they land. "
                  "Promote the schema change and the rows in two episodes"}]


@pytest.mark.parametrize("statement", [
    "ALTER TABLE orders ADD COLUMN note2 text", "ALTER TABLE lines RENAME TO purchases",
    "ALTER INDEX orders_pkey RENAME TO orders_key", "not sql at all ((", "",
    "CREATE TABLE orders_copy (LIKE orders)"])
def test_a_change_that_does_not_reshape_written_rows_passes(statement: str) -> None:
    cfg = config("allow_ddl: true, max_database_rows: 100")
    assert limits(changeset(rows={"public.orders": 1}, ddl=[statement]), cfg) == []


def test_renaming_a_written_table_is_refused_by_its_old_name_or_its_new() -> None:
    cfg = config("allow_ddl: true, max_database_rows: 100")
    statement = "ALTER TABLE orders RENAME TO purchases"
    renamed = changeset(rows={"public.purchases": 1}, ddl=[statement])
    renamed.rows.tables["public.purchases"].aliases.append("public.orders")  # type: ignore[union-attr]
    for changes in (renamed, changeset(rows={"public.orders": 1}, ddl=[statement])):
        found = check_limits(changes, cfg)
        assert [(v.limit, v.actual) for v in found] == [("allow_ddl", statement)]
        assert "renames the table orders" in found[0].detail


def test_every_masked_write_is_counted_and_named_per_table() -> None:
    cfg = config("max_database_rows: 100")
    before = {"id": 1, "email": "m1", "phone": "p1", "note": "n"}
    changes = ChangeSet("t", WorkspaceChanges("b", "h"), RowDelta({
        "public.users": TableDelta("public.users", ["id"], masked=["email", "phone"], updated=[
            RowUpdate({"id": 1}, before, {**before, "email": "x"}, ["email"]),
            RowUpdate({"id": 2}, {**before, "id": 2}, {**before, "id": 2, "phone": "y"},
                      ["phone"]),
            RowUpdate({"id": 3}, {**before, "id": 3}, {**before, "id": 3, "note": "z"},
                      ["note"])],
            inserted=[{"id": 4, "email": "new", "phone": None}, {"id": 5, "email": None}]),
        "public.plain": TableDelta("public.plain", ["id"], inserted=[{"id": 1, "email": "e"}]),
        "public.log": TableDelta("public.log", [], masked=["who"], deleted=[{"who": "a"}] * 3),
    }))
    assert [v.to_dict() for v in check_limits(changes, cfg)] == [
        {"limit": "masked_columns", "allowed": "a key", "actual": 3,
         "detail": "public.log has no primary key, so its deleted rows are found by their "
                   "contents, part of which is masked; they cannot be identified on the "
                   "target"},
        {"limit": "masked_columns", "allowed": "unchanged", "actual": ["email", "phone"],
         "detail": "3 row(s) of public.users write the masked column(s) email, phone: their "
                   "sandbox values are masks, not data (sandbox.database.mask); promote such "
                   "a change from an unmasked rehearsal"}]


def test_a_table_whose_quoted_name_holds_a_dot_is_still_the_one_reshaped() -> None:
    cfg = config("allow_ddl: true, max_database_rows: 100")
    changes = changeset(rows={'sales."order.items"': 1},
                        ddl=['ALTER TABLE sales."order.items" DROP COLUMN note'])
    assert limits(changes, cfg) == ["allow_ddl"]
    elsewhere = changeset(rows={'sales."order.items"': 1},
                          ddl=['ALTER TABLE other."order.items" DROP COLUMN note',
                               'ALTER TABLE sales.items DROP COLUMN note'])
    assert limits(elsewhere, cfg) == []


def test_an_unreadable_schema_change_does_not_hide_the_reshaping_one_after_it() -> None:
    cfg = config("allow_ddl: true, max_database_rows: 100, max_commits: 0")
    changes = changeset(commits=1, rows={"public.orders": 1},
                        ddl=["THIS IS NOT SQL", "ALTER TABLE orders DROP COLUMN note"])
    assert limits(changes, cfg) == ["max_commits", "allow_ddl"]


def test_lines_removed_count_towards_the_lines_changed() -> None:
    workspace = WorkspaceChanges("b", "h", [], [FileChange("a.txt", 2, 3)])
    refused = check_limits(ChangeSet("t", workspace, None), config("max_lines_changed: 4"))
    assert [(v.limit, v.actual, v.detail) for v in refused] == [
        ("max_lines_changed", 5, "+2 -3 lines")]


def test_a_masked_table_with_a_key_may_lose_rows() -> None:
    changes = ChangeSet("t", WorkspaceChanges("b", "h"), RowDelta({"public.users": TableDelta(
        "public.users", ["id"], deleted=[{"id": 1, "email": "m"}], masked=["email"])}))
    assert limits(changes, config("max_database_rows: 100")) == []
