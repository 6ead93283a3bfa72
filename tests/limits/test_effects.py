"""The effect-policy engine on measured effects: every predicate (rows by table, operation,
before and after images, changed columns; files by glob, change, mode and lines; commits
by message, author and branch), counts at their boundary, dropped tables, the built-in
limits as policies of the same engine, and the config's validation with line numbers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from harness.changeset import ChangeSet
from harness.config import Config, EffectPolicy, load_config, parse_config
from harness.errors import ConfigError
from harness.limits import check as check_limits
from harness.limits.changes import built_in_policies
from harness.limits.effects import Effects, evaluate
from harness.sandbox.capture import DdlStatement, RowDelta, RowUpdate, TableDelta
from harness.sandbox.workspace import Commit, FileChange, WorkspaceChanges

ORDERS = [{"id": n, "status": status, "total": Decimal("10.50")}
          for n, status in enumerate(["open", "paid", "paid", "shipped"], start=1)]


def policies(text: str) -> list[EffectPolicy]:
    return parse_config(f"effects:\n{text}").effects


def rows(**tables: dict[str, Any]) -> RowDelta:
    found = {}
    for name, parts in tables.items():
        qualified = f"public.{name}"
        found[qualified] = TableDelta(
            qualified, parts.get("key", ["id"]), parts.get("inserted", []),
            [RowUpdate({"id": b["id"]}, b, a, sorted(k for k in b if b[k] != a.get(k)))
             for b, a in parts.get("updated", [])], parts.get("deleted", []))
    return RowDelta(found)


def broken(text: str, effects: Effects) -> list[tuple[str, int]]:
    return [(b.policy, b.actual) for b in evaluate(policies(text), effects)]


def test_a_delete_of_a_paid_order_is_found_by_its_before_image_and_nothing_else_is() -> None:
    rule = "  - {id: paid, rows: {table: orders, op: delete, where: {status: paid}}}"
    assert broken(rule, Effects(rows=rows(orders={"deleted": ORDERS[1:2]}))) == [("paid", 1)]
    assert broken(rule, Effects(rows=rows(orders={"deleted": [ORDERS[0], ORDERS[3]]}))) == []
    # An update of a paid order, an insert of one: not deletes.
    paid = ORDERS[1]
    assert broken(rule, Effects(rows=rows(orders={
        "updated": [(paid, {**paid, "status": "void"})], "inserted": [paid]}))) == []
    # Another table's paid rows are not orders.
    assert broken(rule, Effects(rows=rows(invoices={"deleted": [paid]}))) == []


def test_where_reads_the_row_before_and_where_after_the_row_after() -> None:
    paid, shipped = ORDERS[1], ORDERS[3]
    change = Effects(rows=rows(orders={"updated": [(paid, {**paid, "status": "void"}),
                                                   (shipped, {**shipped, "total": 1})]}))
    assert broken("  - {id: a, rows: {table: orders, where: {status: paid}}}", change) == [
        ("a", 1)]
    assert broken("  - {id: a, rows: {table: orders, where_after: {status: void}}}",
                  change) == [("a", 1)]
    assert broken("  - {id: a, rows: {table: orders, where: {status: void}}}", change) == []
    assert broken("  - {id: a, rows: {table: orders, where: {status: [paid, shipped]}, "
                  "where_after: {status: void}}}", change) == [("a", 1)]
    # An insert has one image: where and where_after both read it.
    added = Effects(rows=rows(orders={"inserted": [{"id": 9, "status": "void"}]}))
    assert broken("  - {id: a, rows: {table: orders, where: {status: void}}}", added) == [
        ("a", 1)]
    assert broken("  - {id: a, rows: {table: orders, where_after: {status: void}}}",
                  added) == [("a", 1)]


def test_changes_names_the_columns_an_update_must_change() -> None:
    user = {"id": 1, "email": "a@example.com", "created_at": "2026-01-01"}
    rule = "  - {id: email, rows: {table: users, changes: [email]}}"
    touched = Effects(rows=rows(users={"updated": [(user, {**user, "email": "b@example.com"})]}))
    untouched = Effects(rows=rows(users={"updated": [(user, {**user, "created_at": "x"})]}))
    assert broken(rule, touched) == [("email", 1)]
    assert broken(rule, untouched) == []
    # An insert or delete changes no column of an existing row.
    assert broken(rule, Effects(rows=rows(users={"inserted": [user], "deleted": [user]}))) == []


def test_counts_fire_one_past_more_than_and_each_table_counts_apart() -> None:
    five = [{"id": n} for n in range(5)]
    rule = "  - {id: many, rows: {table: '*', more_than: 5}}"
    assert broken(rule, Effects(rows=rows(a={"inserted": five}))) == []
    assert broken(rule, Effects(rows=rows(a={"inserted": five}, b={"deleted": five[:1]}))) == [
        ("many", 6)]
    each = "  - {id: many, rows: {table: '*', more_than: 5, each_table: true}}"
    assert broken(each, Effects(rows=rows(a={"inserted": five}, b={"deleted": five}))) == []
    found = evaluate(policies(each), Effects(rows=rows(a={"inserted": [*five, {"id": 5}]},
                                                       b={"deleted": five})))
    assert [(b.policy, b.table, b.actual) for b in found] == [("many", "public.a", 6)]


def test_values_compare_as_the_database_holds_them() -> None:
    rule = "  - {id: cheap, rows: {table: orders, op: delete, where: {total: 10.5}}}"
    assert broken(rule, Effects(rows=rows(orders={"deleted": ORDERS[:1]}))) == [("cheap", 1)]
    # A string is no number, and true is no 1.
    assert broken("  - {id: s, rows: {table: t, where: {n: '1'}}}",
                  Effects(rows=rows(t={"inserted": [{"id": 1, "n": 1}]}))) == []
    assert broken("  - {id: s, rows: {table: t, where: {n: 1}}}",
                  Effects(rows=rows(t={"inserted": [{"id": 1, "n": True}]}))) == []
    assert broken("  - {id: s, rows: {table: t, where: {n: null}}}",
                  Effects(rows=rows(t={"inserted": [{"id": 1, "n": None}]}))) == [("s", 1)]


def test_a_dropped_table_breaks_any_policy_over_its_deletes_whatever_the_count() -> None:
    dropped = Effects(rows=RowDelta({}, [DdlStatement("DROP TABLE", "table", "public.orders",
                                                      "DROP TABLE orders")],
                                    ["public.orders"]))
    assert broken("  - {id: d, rows: {table: orders, op: delete, where: {status: paid}, "
                  "more_than: 1000}}", dropped) == [("d", 1)]
    assert broken("  - {id: d, rows: {table: orders}}", dropped) == [("d", 1)]
    # Not a policy over inserts or updates, nor over another table.
    assert broken("  - {id: d, rows: {table: orders, op: insert}}", dropped) == []
    assert broken("  - {id: d, rows: {table: orders, changes: [status]}}", dropped) == []
    assert broken("  - {id: d, rows: {table: users}}", dropped) == []
    found = evaluate(policies("  - {id: d, rows: {table: orders}}"), dropped)
    assert "drop public.orders (every row)" in found[0].detail


def test_file_policies_match_globs_changes_modes_and_lines() -> None:
    files = [FileChange(".github/workflows/ci.yml", 3, 0, status="A", mode="100644"),
             FileChange("bin/run", 1, 0, status="A", mode="100755"),
             FileChange("src/app.py", 40, 30, status="M", old_mode="100644", mode="100644"),
             FileChange("docs/old.md", 0, 9, status="D", old_mode="100644")]
    effects = Effects(files=files)
    assert broken("  - {id: ci, files: {path: '.github/**'}}", effects) == [("ci", 1)]
    assert broken("  - {id: x, files: {executable: true}}", effects) == [("x", 1)]
    assert broken("  - {id: x, files: {change: deleted}}", effects) == [("x", 1)]
    assert broken("  - {id: x, files: {change: added, path: ['bin/*', 'docs/**']}}",
                  effects) == [("x", 1)]
    assert broken("  - {id: big, files: {lines_more_than: 69}}", effects) == [("big", 1)]
    assert broken("  - {id: big, files: {lines_more_than: 70}}", effects) == []
    assert broken("  - {id: n, files: {more_than: 3}}", effects) == [("n", 4)]
    assert broken("  - {id: n, files: {more_than: 4}}", effects) == []


def test_a_file_made_executable_is_a_mode_change_the_policy_sees() -> None:
    chmod = FileChange("deploy.sh", 0, 0, status="M", old_mode="100644", mode="100755")
    assert chmod.executable
    assert broken("  - {id: x, files: {executable: true, change: modified}}",
                  Effects(files=[chmod])) == [("x", 1)]
    link = FileChange("config.yml", 1, 1, status="T", old_mode="100644", mode="120000")
    edit = FileChange("app.py", 1, 1, status="M", old_mode="100644", mode="100644")
    added = FileChange("new.py", 1, 0, status="A", mode="100644")
    assert broken("  - {id: m, files: {mode_changed: true}}",
                  Effects(files=[chmod, link, edit, added])) == [("m", 2)]
    assert broken("  - {id: m, files: {mode_changed: false}}",
                  Effects(files=[chmod, link, edit, added])) == [("m", 2)]


def test_commit_policies_match_message_author_and_branch() -> None:
    commits = [Commit("a" * 40, "agent", "agent@example.com", "WIP: try again", "main"),
               Commit("b" * 40, "dev", "dev@corp.example", "Fix rounding", "agent/fix")]
    effects = Effects(commits=commits)
    assert broken("  - {id: wip, commits: {message: '^WIP'}}", effects) == [("wip", 1)]
    assert broken("  - {id: who, commits: {author: '@corp\\.example>$'}}", effects) == [
        ("who", 1)]
    assert broken("  - {id: main, commits: {branch: '^main$'}}", effects) == [("main", 1)]
    assert broken("  - {id: n, commits: {more_than: 1}}", effects) == [("n", 2)]
    assert broken("  - {id: n, commits: {more_than: 2}}", effects) == []


def test_a_warning_breach_is_reported_but_is_no_violation_and_approval_is_named() -> None:
    cfg = parse_config("""
effects:
  - {id: warned, decision: warn, rows: {table: orders}}
  - {id: asked, decision: require_approval, rows: {table: orders}}
  - {id: blocked, rows: {table: orders}, message: orders stay as they are}
""")
    changes = ChangeSet("t", WorkspaceChanges("a", "a", [], [], ""),
                        rows(orders={"deleted": ORDERS[:1]}))
    found = {v.limit: v for v in check_limits(changes, cfg)}
    assert set(found) == {"effects[asked]", "effects[blocked]"}
    assert found["effects[asked]"].detail.endswith("(needs an approval)")
    assert found["effects[blocked]"].detail.startswith("orders stay as they are (1 row(s)")
    assert found["effects[blocked]"].detail.endswith("(id=1))")
    assert (found["effects[blocked]"].allowed, found["effects[blocked]"].actual) == (0, 1)


def test_the_built_in_limits_are_policies_of_the_same_engine() -> None:
    cfg = parse_config("""
orchestrator: {blast_radius: {max_commits: 2, max_files_changed: 3, max_database_rows: 10,
                              max_rows_per_table: {orders: 4}}}
guardrails: {protected_paths: ['deploy/**'], protected_tables: [audit]}
""")
    ids = [p.id for p in built_in_policies(cfg)]
    assert ids == ["max_commits", "max_files_changed", "protected_paths", "max_database_rows",
                   "max_rows_per_table[orders]", "protected_tables"]
    effects = Effects(rows=rows(orders={"deleted": [{"id": n} for n in range(5)]}))
    assert [b.policy for b in evaluate(built_in_policies(cfg), effects)] == [
        "max_rows_per_table[orders]"]


def test_a_dropped_protected_table_is_refused_at_promotion() -> None:
    cfg = parse_config("orchestrator: {blast_radius: {allow_ddl: true}}\n"
                       "guardrails: {protected_tables: [audit]}")
    changes = ChangeSet("t", WorkspaceChanges("a", "a", [], [], ""), RowDelta(
        {}, [DdlStatement("DROP TABLE", "table", "public.audit", "DROP TABLE audit")],
        ["public.audit"]))
    found = check_limits(changes, cfg)
    assert [(v.limit, v.detail) for v in found] == [
        ("protected_tables", "the protected table public.audit was dropped")]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("effects:\n  - id: a\n    rows: {table: t}\n    files: {path: x}\n", 2,
     "needs exactly one of rows, files or commits"),
    ("effects:\n  - id: a\n    decision: maybe\n    rows: {table: t}\n", 3, "decision"),
    ("effects:\n  - id: a\n    rows: {table: t, op: drop}\n", 3, "op"),
    ("effects:\n  - id: a\n    rows: {table: t, op: delete, where_after: {x: 1}}\n", 3,
     "a deleted row has no after image"),
    ("effects:\n  - id: a\n    rows: {table: t, op: insert, changes: [x]}\n", 3,
     "updates none"),
    ("effects:\n  - id: a\n    commits: {message: '(['}\n", 3, "message"),
    ("effects:\n  - id: a\n    rows: {table: t, more_than: -1}\n", 3, "more_than"),
    ("effects:\n  - id: a\n    rows: {table: t}\n  - id: a\n    files: {}\n", 1,
     "must be unique"),
    ("effects:\n  - id: a\n    rows: {table: t, wher: {x: 1}}\n", 3, "wher"),
])
def test_a_bad_policy_names_its_key_and_line(tmp_path: Path, text: str, line: int,
                                             message: str) -> None:
    path = tmp_path / "harness.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"harness\.yaml:{line}:") as caught:
        load_config(path)
    assert message in str(caught.value)


def test_the_default_config_has_no_effect_policies() -> None:
    assert Config().effects == []


def test_a_table_under_two_entries_is_counted_once_and_every_table_in_order() -> None:
    cfg = parse_config("""
orchestrator: {blast_radius: {max_database_rows: 1000, allow_ddl: true,
                              max_rows_per_table: {orders: 1, public.orders: 1, lines: 1}}}
guardrails: {protected_tables: [orders, public.orders, lines]}
""")
    changes = ChangeSet("t", WorkspaceChanges("a", "a", [], [], ""), rows(
        orders={"deleted": ORDERS[:2]}, lines={"deleted": ORDERS[:3]}))
    assert [(v.limit, v.actual) for v in check_limits(changes, cfg)] == [
        ("max_rows_per_table[lines]", 3), ("protected_tables", 3),
        ("max_rows_per_table[orders]", 2), ("protected_tables", 2)]


def test_a_dropped_table_is_no_row_count_but_a_schema_change() -> None:
    cfg = parse_config("orchestrator: {blast_radius: {max_database_rows: 2, allow_ddl: true,"
                       " max_rows_per_table: {orders: 2}}}")
    delta = rows(orders={"deleted": ORDERS[:2]})
    dropped = RowDelta(delta.tables, [DdlStatement("DROP TABLE", "table", "public.orders",
                                                   "DROP TABLE orders")], ["public.orders"])
    changes = ChangeSet("t", WorkspaceChanges("a", "a", [], [], ""), dropped)
    assert check_limits(changes, cfg) == []


def test_a_timestamp_matches_however_it_is_written_and_naive_never_matches_aware() -> None:
    row = {"id": 1, "at": "2026-01-01T00:00:00+00:00", "day": "2026-01-01"}
    effects = Effects(rows=rows(t={"deleted": [row]}))
    for written in ("2026-01-01 00:00:00+00", "2026-01-01T01:00:00+01:00",
                    "2026-01-01T00:00:00Z", "2026-01-01 00:00:00+00:00"):
        assert broken(f"  - {{id: a, rows: {{table: t, where: {{at: '{written}'}}}}}}",
                      effects) == [("a", 1)], written
    assert broken("  - {id: a, rows: {table: t, where: {at: '2026-01-01 00:00:00'}}}",
                  effects) == []
    assert broken("  - {id: a, rows: {table: t, where: {day: '2026-01-01'}}}", effects) == [
        ("a", 1)]
    assert broken("  - {id: a, rows: {table: t, where: {day: '2026-01-02'}}}", effects) == []


def test_a_changed_key_counts_as_an_update_of_what_it_changed() -> None:
    before = {"id": 2, "email": "a@example.com", "tier": "gold"}
    rekeyed = Effects(rows=rows(users={"deleted": [before],
                                       "inserted": [{**before, "id": 102,
                                                     "email": "evil@example.com"}]}))
    assert broken("  - {id: e, rows: {table: users, changes: [email]}}", rekeyed) == [("e", 1)]
    assert broken("  - {id: e, rows: {table: users, changes: [tier]}}", rekeyed) == []
    assert broken("  - {id: e, rows: {table: users, op: update, where: {tier: gold}}}",
                  rekeyed) == [("e", 1)]
    assert broken("  - {id: e, rows: {table: users, op: update, where: {tier: basic}}}",
                  rekeyed) == []
    # Without a delete beside it, an insert is no update.
    alone = Effects(rows=rows(users={"inserted": [{**before, "id": 102}]}))
    assert broken("  - {id: e, rows: {table: users, changes: [email]}}", alone) == []


# What a breach reports: each match exactly as it was found (the operation, the key, the
# columns changed), the count, the table counted and the few examples shown.

def only(text: str, effects: Effects) -> Any:
    found = evaluate(policies(text), effects)
    assert len(found) == 1, found
    return found[0]


def test_each_operation_is_reported_with_its_key_and_changed_columns() -> None:
    paid = ORDERS[1]
    change = Effects(rows=rows(orders={
        "inserted": [{"id": 9, "status": "open", "total": 1}],
        "updated": [(paid, {**paid, "status": "void"})], "deleted": [ORDERS[3]]}))
    breach = only("  - {id: all, rows: {table: orders}}", change)
    assert breach.examples == [
        {"table": "public.orders", "op": "insert", "key": {"id": 9}},
        {"table": "public.orders", "op": "update", "key": {"id": 2}, "changed": ["status"]},
        {"table": "public.orders", "op": "delete", "key": {"id": 4}}]
    assert breach.detail == (
        "more than 0 row(s) of orders matching the policy (3 row(s) of orders: insert "
        "public.orders (id=9), update public.orders (id=2), delete public.orders (id=4))")
    for op, kept in (("insert", 0), ("delete", 2)):
        assert only(f"  - {{id: {op}, rows: {{table: orders, op: {op}}}}}",
                    change).examples == [breach.examples[kept]], op
    # A delete beside an insert may be one row whose key changed: counted as an update too.
    assert only("  - {id: u, rows: {table: orders, op: update}}", change).examples == [
        breach.examples[1], {"table": "public.orders", "op": "update", "key": {"id": 9},
                             "changed": [], "rekeyed": True}]


def test_a_row_without_a_key_is_named_by_its_whole_image_and_a_composite_key_in_full() -> None:
    logs = Effects(rows=rows(logs={"key": [], "inserted": [{"at": "now", "msg": "hi"}]},
                             lines={"key": ["order_id", "line"], "deleted": [
                                 {"order_id": 1, "line": 2, "sku": "x"}]}))
    found = only("  - {id: a, rows: {table: '*'}}", logs)
    assert found.examples == [
        {"table": "public.lines", "op": "delete", "key": {"order_id": 1, "line": 2}},
        {"table": "public.logs", "op": "insert", "key": {"at": "now", "msg": "hi"}}]
    assert "delete public.lines (order_id=1, line=2), insert public.logs (at=now, msg=hi)" \
        in found.detail


def test_five_examples_are_shown_and_more_are_marked() -> None:
    five = Effects(rows=rows(orders={"deleted": [{"id": n} for n in range(5)]}))
    six = Effects(rows=rows(orders={"deleted": [{"id": n} for n in range(6)]}))
    shown = only("  - {id: a, rows: {table: orders}}", five)
    assert len(shown.examples) == 5 and shown.detail.endswith("(id=4))")
    more = only("  - {id: a, rows: {table: orders}}", six)
    assert len(more.examples) == 5 and more.detail.endswith("(id=4), ...)")
    assert len(more.matched) == 6 and more.actual == 6


def test_each_table_is_judged_on_its_own_count_and_named_in_the_detail() -> None:
    change = Effects(rows=rows(a={"deleted": [{"id": 1}]},
                               b={"deleted": [{"id": 1}, {"id": 2}]}))
    found = evaluate(policies("  - {id: t, rows: {table: '*', more_than: 1, each_table: true}}"),
                     change)
    assert [(b.table, b.actual) for b in found] == [("public.b", 2)]
    assert found[0].detail.startswith("more than 1 row(s) of public.b matching the policy "
                                      "(2 row(s) of public.b: ")
    assert found[0].examples == [{"table": "public.b", "op": "delete", "key": {"id": n}}
                                 for n in (1, 2)]


def test_a_rekeyed_row_is_an_update_named_by_its_new_key_and_checked_after() -> None:
    change = Effects(rows=rows(orders={
        "updated": [(ORDERS[0], {**ORDERS[0], "status": "void"})],
        "deleted": [{"id": 1, "status": "paid", "note": "a"}],
        "inserted": [{"id": 7, "status": "void", "note": "a"},
                     {"id": 8, "status": "open", "note": "b"}]}))
    rule = ("  - {id: r, rows: {table: orders, op: update, where_after: {status: void}, "
            "changes: [status]}}")
    found = only(rule, change)
    assert found.examples == [
        {"table": "public.orders", "op": "update", "key": {"id": 1}, "changed": ["status"]},
        {"table": "public.orders", "op": "update", "key": {"id": 7}, "changed": ["status"],
         "rekeyed": True}]
    # An insert and a delete side by side are no update for a rule over inserts.
    assert only("  - {id: i, rows: {table: orders, op: insert}}", change).actual == 2


def test_pairing_is_tried_up_to_a_thousand_deletes_and_past_that_every_insert_counts() -> None:
    rule = "  - {id: r, rows: {table: orders, op: update, where: {status: paid}}}"
    def change(deletes: int) -> Effects:
        return Effects(rows=rows(orders={
            "deleted": [{"id": n, "status": "open"} for n in range(deletes)],
            "inserted": [{"id": 10**6, "status": "open"}]}))
    assert evaluate(policies(rule), change(1000)) == [], "no delete was paid"
    assert only(rule, change(1001)).actual == 1


def test_booleans_match_booleans_only_and_impossible_timestamps_match_nothing() -> None:
    flagged = Effects(rows=rows(t={"inserted": [{"id": 1, "flag": True},
                                                {"id": 2, "flag": False}]}))
    assert only("  - {id: b, rows: {table: t, where: {flag: true}}}", flagged).examples == [
        {"table": "public.t", "op": "insert", "key": {"id": 1}}]
    stamped = Effects(rows=rows(t={"inserted": [{"id": 1, "at": "2026-02-30T00:00:00"}]}))
    assert evaluate(policies("  - {id: s, rows: {table: t, where: {at: '2026-02-30 00:00'}}}"),
                    stamped) == []


def test_file_matches_report_path_change_mode_and_lines_and_mode_unchanged_is_a_predicate(
        ) -> None:
    files = [FileChange("a.sh", 3, 2, status="M", old_mode="100644", mode="100755"),
             FileChange("b.py", 1, 0, status="M", old_mode="100644", mode="100644"),
             FileChange("c.py", 4, 0, status="A", mode="100644")]
    effects = Effects(files=files)
    found = only("  - {id: m, files: {path: '**', mode_changed: true}}", effects)
    assert found.examples == [{"path": "a.sh", "status": "M", "mode": "100755", "lines": 5}]
    assert found.detail == "more than 0 file(s) matching the policy (1 file(s): a.sh (M))"
    same = only("  - {id: s, files: {path: '**', mode_changed: false}}", effects)
    assert [e["path"] for e in same.examples] == ["b.py", "c.py"], "a new file kept its mode"


def test_commit_matches_report_sha_first_line_and_branch_for_each_predicate() -> None:
    commits = [Commit("c" * 40, "dev", "dev@corp.example", "Tidy", "main"),
               Commit("a" * 40, "agent", "agent@example.com", "WIP: try\n\nbody", "agent/x"),
               Commit("b" * 40, "agent", "agent@example.com", "", "agent/y")]
    effects = Effects(commits=commits)
    wip = only("  - {id: w, commits: {message: '^WIP'}}", effects)
    assert wip.examples == [{"commit": "a" * 12, "message": "WIP: try", "branch": "agent/x"}]
    assert wip.detail == ("more than 0 commit(s) matching the policy (1 commit(s): "
                          f"{'a' * 12} 'WIP: try')")
    assert [e["commit"] for e in only("  - {id: a, commits: {author: 'agent@'}}",
                                      effects).examples] == ["a" * 12, "b" * 12]
    assert only("  - {id: b, commits: {branch: '^agent/'}}", effects).examples[1] == {
        "commit": "b" * 12, "message": "", "branch": "agent/y"}
    assert only("  - {id: m, commits: {branch: '^main$'}}", effects).actual == 1
