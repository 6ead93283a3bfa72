"""Exact capture and faithful promotion on a realistic schema: partitions written directly
and through their root, rows moving partitions, update-stamp and audit triggers,
cascades, enums, arrays, domains, jsonb, bytea, tsvector, composite keys, a table without
a key, identity and generated columns. Each promise is checked against an independent
ground truth: full table contents read from both sides."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import set_json_loads

from harness.changeset import ChangeSet
from harness.config import Config, load_config
from harness.episode import Episode
from harness.fixtures import fixture_repo, fixtures_root
from harness.promote import promote, revert
from harness.sandbox.capture import RowDelta, dump_images, load_image
from harness.sandbox.catalog import user_tables
from harness.sandbox.postgres import ServerAddress
from harness.trace.reader import read_trace
from tests.fix_pg import application_role

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

REALISTIC = fixtures_root() / "databases" / "realistic.sql"

WORKLOAD = [
    # Writes that name a partition, of a range and of a list partition.
    "INSERT INTO payments_2024_02 (payment_id, paid_on, order_id, amount) "
    "VALUES (1001, '2024-02-10', 5, 12.50)",
    "UPDATE payments_2024_01 SET amount = amount + 1 WHERE payment_id <= 3",
    "DELETE FROM payments_other WHERE payment_id = 45",
    "INSERT INTO page_events_checkout (kind, customer_id, detail) "
    "VALUES ('checkout', 3, '{\"page\": \"/pay\"}')",
    "DELETE FROM page_events_view WHERE customer_id = 5",
    # Through the roots: into the default partition, and a row moving partitions.
    "INSERT INTO payments VALUES (1002, '2023-12-24', 7, 3.00, 'cash')",
    "UPDATE payments SET paid_on = '2024-03-20' WHERE payment_id = 6",
    "UPDATE page_events SET kind = 'view' WHERE kind = 'cart' AND customer_id = 2",
    # Update stamps and the audit trigger.
    "UPDATE orders SET status = 'shipped' WHERE id IN (10, 11)",
    "UPDATE customers SET tags = array_append(tags, 'vip'), "
    "preferences = preferences || '{\"vip\": true}', avatar = '\\xdeadbeef', "
    "full_name = full_name || ' Jr' WHERE id = 8",
    "UPDATE products SET stock = stock - 1 WHERE sku = 'SKU-004'",
    # A cascade through orders, their lines and their payments (in several partitions).
    "DELETE FROM customers WHERE id = 9",
    # Identity, enum, domain and generated columns.
    "INSERT INTO customers (email, full_name, tags) VALUES ('new@example.com', 'New Person', "
    "'{fresh}')",
    "INSERT INTO orders (customer_id, status, placed_on) VALUES (1, 'paid', '2024-04-01')",
    "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price) "
    "VALUES (12, 9, 'SKU-002', 3, 6.50)",
    "UPDATE order_lines SET quantity = quantity + 1 WHERE order_id = 13 AND line_no = 1",
    # A table without a key: one of two equal rows, and two equal new ones.
    "DELETE FROM shelf_notes WHERE ctid = (SELECT ctid FROM shelf_notes WHERE shelf = 'A1' "
    "LIMIT 1)",
    "INSERT INTO shelf_notes VALUES ('D4', 'new'), ('D4', 'new')",
]


@pytest.fixture()
def realistic(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    """A fresh copy of the realistic schema on the (stock) target server; its name."""
    name = "real_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    target_server.fresh_database(name)
    target_server.run_script(REALISTIC, name)
    return name


def config_for(dsn: str, tmp_path: Path, **promotion: Any) -> Config:
    return load_config({
        "orchestrator": {"blast_radius": {"max_database_rows": 1000, "max_commits": 5,
                                          "dry_run": False}},
        "target": {"repo": str(fixture_repo("shop")), "database": dsn},
        "promotion": promotion,
        "observability": {"tracing": {"path": str(tmp_path / "traces")}},
    })


def canonical(value: Any) -> str:
    """A row as JSON text with sorted keys and exact numbers."""
    def ordered(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: ordered(item[k]) for k in sorted(item)}
        if isinstance(item, list):
            return [ordered(i) for i in item]
        return item
    return dump_images(ordered(value))


def contents(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Every row of every table, partitions each on their own (so a row in the wrong
    partition shows), as sorted JSON texts."""
    set_json_loads(load_image, conn)
    found = {}
    for table, kind in user_tables(conn, partitions=True).items():
        if kind == "p":
            continue
        rows = conn.execute(f"SELECT to_jsonb(t) FROM ONLY {table} t").fetchall()
        found[table] = sorted(canonical(r[0]) for r in rows)
    return found


def roots(conn: psycopg.Connection[Any]) -> dict[str, Counter[str]]:
    """Every row of every top-level table (a partitioned one with its partitions' rows)."""
    set_json_loads(load_image, conn)
    found = {}
    for table in user_tables(conn):
        rows = conn.execute(f"SELECT to_jsonb(t) FROM {table} t").fetchall()
        found[table] = Counter(canonical(r[0]) for r in rows)
    return found


def differences(a: dict[str, list[str]], b: dict[str, list[str]]
                ) -> dict[str, tuple[list[str], list[str]]]:
    """Per table, the rows only in `a` and only in `b`."""
    found = {}
    for table in sorted(set(a) | set(b)):
        left, right = Counter(a.get(table, [])), Counter(b.get(table, []))
        if left != right:
            found[table] = (sorted((left - right).elements()), sorted((right - left).elements()))
    return found


def run_workload(episode: Episode, statements: list[str]) -> None:
    for statement in statements:
        result = episode.act({"tool": "db_mutate", "parameters": {"sql": statement}})
        assert result.status == "ok", (statement, result.output, result.refusal)


def as_counter(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(canonical(r) for r in rows)


def test_capture_equals_the_ground_truth_on_every_table(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    dsn = target_server.conninfo(realistic)
    with psycopg.connect(dsn) as conn:
        before = roots(conn)
    with Episode(config_for(dsn, tmp_path)) as episode:
        run_workload(episode, WORKLOAD)
        # The last step through the shell: psql inside the container, naming a partition.
        shell = episode.act({"tool": "shell_exec", "parameters": {"command": (
            "psql -v ON_ERROR_STOP=1 -qc \"UPDATE payments_2024_03 SET method = 'wire' "
            "WHERE payment_id = 20\"")}})
        assert shell.status == "ok" and shell.output["exit_code"] == 0, shell.output
        assert episode.sandbox.database is not None
        with episode.sandbox.database.connect_as_owner() as conn:
            after = roots(conn)
    delta = episode.close().rows
    assert delta is not None
    for table in sorted(set(before) | set(after)):
        removed = before.get(table, Counter()) - after.get(table, Counter())
        added = after.get(table, Counter()) - before.get(table, Counter())
        captured = delta.tables.get(table)
        got_removed = as_counter([*(captured.deleted if captured else []),
                                  *(u.before for u in (captured.updated if captured else []))])
        got_added = as_counter([*(captured.inserted if captured else []),
                                *(u.after for u in (captured.updated if captured else []))])
        assert got_removed == removed, f"{table}: rows removed differ"
        assert got_added == added, f"{table}: rows added differ"
    payments = delta.tables["public.payments"]
    # Counted once, under the root: the partitions are not tables of their own here.
    assert not any(name.startswith("public.payments_") for name in delta.tables)
    moved = [u for u in payments.updated if u.key == {"payment_id": 6, "paid_on": "2024-01-21"}]
    assert len(moved) == 1 and moved[0].after["paid_on"] == "2024-03-20", \
        "a row moving partitions is one update"
    assert payments.partitions["public.payments_2024_02"]["inserted"] == 1
    assert payments.partitions["public.payments_2024_03"]["updated"] == 1
    audit = delta.tables["public.audit_log"]
    assert len(audit.inserted) >= 10, "the audit trigger's rows are in the change set"
    orders = {u.key["id"]: u for u in delta.tables["public.orders"].updated}
    assert "last_update" in orders[10].changed, "the update stamp is captured"
    summary = delta.summary()
    assert summary["total"]["rows"] == delta.rows == sum(
        t.rows for t in delta.tables.values())


def test_promotion_makes_the_target_equal_the_sandbox_and_revert_restores_it(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    superuser = target_server.conninfo(realistic)
    app = application_role(target_server, realistic, replication_role=True)
    with psycopg.connect(superuser) as conn:
        original = contents(conn)
    with Episode(config_for(app, tmp_path)) as episode:
        run_workload(episode, WORKLOAD)
        assert episode.sandbox.database is not None
        with episode.sandbox.database.connect_as_owner() as conn:
            sandbox = contents(conn)
    result = episode.promote()
    assert result.outcome == "promoted", result
    assert result.protocol == "single-phase", "a stock server has no prepared transactions"
    assert result.applied is not None and result.applied["mode"] == "replica"
    with psycopg.connect(superuser) as conn:
        promoted = contents(conn)
    assert differences(promoted, sandbox) == {}, "every row, in the same partition"
    with psycopg.connect(superuser) as conn:
        # The identity sequences moved past what was promoted.
        conn.execute("INSERT INTO orders (customer_id, placed_on) VALUES (2, '2024-05-01')")
        conn.rollback()
    undone = revert(Path(result.receipt or ""))
    assert undone.outcome == "reverted", undone
    with psycopg.connect(superuser) as conn:
        assert contents(conn) == original


def test_a_row_referencing_a_deleted_one_is_refused_naming_it(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    superuser = target_server.conninfo(realistic)
    app = application_role(target_server, realistic, replication_role=True)
    with Episode(config_for(app, tmp_path)) as episode:
        run_workload(episode, ["DELETE FROM customers WHERE id = 9"])
    changeset = episode.close()
    with psycopg.connect(superuser) as conn:  # someone, after the snapshot
        conn.execute("INSERT INTO orders (id, customer_id, placed_on) "
                     "VALUES (5000, 9, '2024-06-01')")
        before = contents(conn)
    result = promote(changeset, episode.config)
    assert result.outcome == "conflict", result
    dangling = [c for c in result.conflicts if c.table == "public.orders"]
    assert [c.key for c in dangling] == [{"id": 5000}]
    # The target's audit trigger logged that insert, taking an id the change set's own
    # audit rows hold: a conflict as well, reported beside it.
    assert {c.table for c in result.conflicts} == {"public.orders", "public.audit_log"}
    assert "public.customers" in dangling[0].reason
    with psycopg.connect(superuser) as conn:
        assert contents(conn) == before, "nothing was applied"


def test_a_new_row_whose_parent_is_gone_on_the_target_is_refused(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    superuser = target_server.conninfo(realistic)
    app = application_role(target_server, realistic, replication_role=True)
    with Episode(config_for(app, tmp_path)) as episode:
        run_workload(episode, ["INSERT INTO order_lines (order_id, line_no, sku, quantity, "
                           "unit_price) VALUES (12, 9, 'SKU-002', 3, 6.50)"])
    changeset = episode.close()
    with psycopg.connect(superuser) as conn:
        conn.execute("DELETE FROM orders WHERE id = 12")
        before = contents(conn)
    result = promote(changeset, episode.config)
    assert result.outcome == "conflict", result
    assert [(c.table, c.key) for c in result.conflicts] == [
        ("public.order_lines", {"order_id": 12, "line_no": 9})]
    assert "does not exist on the target" in result.conflicts[0].reason
    with psycopg.connect(superuser) as conn:
        assert contents(conn) == before


def test_a_role_that_cannot_silence_triggers_is_refused_with_the_fix(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    superuser = target_server.conninfo(realistic)
    app = application_role(target_server, realistic)  # DML only
    with Episode(config_for(app, tmp_path)) as episode:
        run_workload(episode, ["UPDATE orders SET note = 'late' WHERE id = 3"])
    changeset = episode.close()
    with psycopg.connect(superuser) as conn:
        before = contents(conn)
    result = promote(changeset, episode.config)
    assert result.outcome == "refused"
    [violation] = result.violations
    assert violation.limit == "promotion.triggers"
    assert "public.orders: orders_audit, orders_stamp" in violation.detail
    assert "GRANT SET ON PARAMETER session_replication_role TO" in violation.detail
    with psycopg.connect(superuser) as conn:
        assert contents(conn) == before


FIRE_WORKLOAD = [
    "UPDATE orders SET note = 'late' WHERE id = 3",  # an update stamp and an audit row
    "UPDATE payments SET paid_on = '2024-03-20' WHERE payment_id = 6",  # a partition move
    "INSERT INTO orders (customer_id, status, placed_on) VALUES (1, 'paid', '2024-04-01')",
    "UPDATE products SET stock = stock - 1 WHERE sku = 'SKU-004'",
    "DELETE FROM shelf_notes WHERE shelf = 'B2'",
]

SEEN_TRIGGER = """
CREATE FUNCTION mark_order_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE orders SET note = 'seen by the target' WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER orders_seen AFTER INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION mark_order_seen();
"""
"""An AFTER trigger writing the row it fired for again (the target's own, added after the
snapshot): RETURNING never sees what it writes."""


def promote_firing(realistic: str, target_server: ServerAddress, tmp_path: Path, app: str
                   ) -> tuple[dict[str, list[str]], dict[str, Counter[str]], ChangeSet, Any]:
    """Run FIRE_WORKLOAD in an episode and promote it with the target's triggers firing
    (orders_seen added on the target meanwhile): the target's contents and top-level rows
    before the promotion, the change set and the result."""
    superuser = target_server.conninfo(realistic)
    with Episode(config_for(app, tmp_path, triggers="fire")) as episode:
        run_workload(episode, FIRE_WORKLOAD)
    changeset = episode.close()
    with psycopg.connect(superuser) as conn:
        conn.execute(SEEN_TRIGGER)
        conn.commit()
        original, original_roots = contents(conn), roots(conn)
    result = promote(changeset, episode.config)
    assert result.outcome == "promoted", result
    assert result.applied is not None and result.applied["mode"] == "fire"
    return original, original_roots, changeset, result


def assert_the_receipt_is_what_was_written(original: dict[str, Counter[str]], receipt: Path,
                                           now: dict[str, Counter[str]]) -> None:
    """The target now is the target before, with exactly the receipt's rows changed: every
    row the promotion and the target's triggers wrote, as they are on the target."""
    rows = RowDelta.from_dict(load_image(receipt.read_text())["rows"])
    expected = {table: Counter(found) for table, found in original.items()}
    for name, table in rows.tables.items():
        expected[name].subtract(as_counter([*table.deleted, *(u.before for u in table.updated)]))
        expected[name].update(as_counter([*table.inserted, *(u.after for u in table.updated)]))
    for name in set(expected) | set(now):
        want = +expected.get(name, Counter())
        assert want == now.get(name, Counter()), f"{name}: the receipt is not what was written"


def test_firing_the_targets_triggers_records_what_they_really_wrote_and_revert_restores_it(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    superuser = target_server.conninfo(realistic)
    app = application_role(target_server, realistic, replication_role=True)
    original, original_roots, changeset, result = promote_firing(
        realistic, target_server, tmp_path, app)
    assert result.applied is not None and changeset.rows is not None
    receipt = Path(result.receipt or "")
    with psycopg.connect(superuser) as conn:
        assert_the_receipt_is_what_was_written(original_roots, receipt, roots(conn))
        seen = conn.execute("SELECT note FROM orders WHERE id = 81").fetchone()
    assert seen == ("seen by the target",)
    # The report names every column and table the triggers changed beyond the change set.
    assert result.applied["rewritten"] == {
        "public.orders": ["last_update", "note"], "public.products": ["last_update"]}
    effects = result.applied["side_effects"]
    assert set(effects) == {"public.audit_log"}, \
        "a row moving partitions is no side effect; the orders' own rows are in `rewritten`"
    # The sandbox's audit rows are applied, and the target's audit trigger writes its own
    # for the same rows (and one for orders_seen's update): those are the side effects.
    with psycopg.connect(superuser) as conn:
        logged = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    assert logged is not None and logged[0] > len(changeset.rows.tables["public.audit_log"]
                                                  .inserted) > 0
    assert effects["public.audit_log"] == {
        "inserted": logged[0] - len(changeset.rows.tables["public.audit_log"].inserted),
        "updated": 0, "deleted": 0, "dropped": 0,
        "columns": ["id", "logged_at", "operation", "row_key", "table_name"]}
    undone = revert(receipt)
    assert undone.outcome == "reverted", undone
    with psycopg.connect(superuser) as conn:
        assert differences(contents(conn), original) == {}, \
            "every row of every partition as before: no restamp, no audit row left"


def test_a_revert_the_targets_triggers_would_spoil_is_refused_and_changes_nothing(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    superuser = target_server.conninfo(realistic)
    app = application_role(target_server, realistic)  # DML only: fire needs no privilege
    _, original_roots, _, result = promote_firing(realistic, target_server, tmp_path, app)
    receipt = Path(result.receipt or "")
    with psycopg.connect(superuser) as conn:
        assert_the_receipt_is_what_was_written(original_roots, receipt, roots(conn))
        promoted = contents(conn)
    undone = revert(receipt)
    assert undone.outcome == "failed"
    assert undone.error is not None and undone.error.startswith("nothing was reverted")
    assert "set public.orders last_update" in undone.error
    assert "rows of public.audit_log changed" in undone.error
    assert f"GRANT SET ON PARAMETER session_replication_role TO app_{realistic}" in undone.error
    with psycopg.connect(superuser) as conn:
        assert contents(conn) == promoted


def test_a_table_renamed_in_the_episode_is_one_table(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    dsn = target_server.conninfo(realistic)
    config = load_config({**config_for(dsn, tmp_path).model_dump(mode="json"),
                          "guardrails": {"builtin": {"sql.rename": "warn"}}})  # approved
    with Episode(config) as episode:
        run_workload(episode, ["INSERT INTO shelf_notes VALUES ('E5', 'before')",
                               "ALTER TABLE shelf_notes RENAME TO shelf_remarks",
                               "INSERT INTO shelf_remarks VALUES ('E6', 'after')"])
    delta = episode.close().rows
    assert delta is not None
    assert list(delta.tables) == ["public.shelf_remarks"]
    assert len(delta.tables["public.shelf_remarks"].inserted) == 2
    assert [d.command_tag for d in delta.ddl] == ["ALTER TABLE"]


def test_a_partition_created_in_the_episode_is_captured_and_promoted(
        realistic: str, target_server: ServerAddress, tmp_path: Path) -> None:
    dsn = target_server.conninfo(realistic)
    config = config_for(dsn, tmp_path).model_copy(deep=True)
    config = load_config({**config.model_dump(mode="json"), "orchestrator": {
        "blast_radius": {"max_database_rows": 100, "dry_run": False, "allow_ddl": True}}})
    with Episode(config) as episode:
        run_workload(episode, [
            "CREATE TABLE payments_2024_06 PARTITION OF payments "
            "FOR VALUES FROM ('2024-06-01') TO ('2024-07-01')",
            "INSERT INTO payments_2024_06 VALUES (2001, '2024-06-02', 1, 5.00, 'card')",
            "INSERT INTO payments VALUES (2002, '2024-06-03', 1, 6.00, 'card')"])
        assert episode.sandbox.database is not None
        with episode.sandbox.database.connect_as_owner() as conn:
            sandbox = contents(conn)
    changeset: ChangeSet = episode.close()
    assert changeset.rows is not None
    payments = changeset.rows.tables["public.payments"]
    assert len(payments.inserted) == 2
    assert payments.partitions["public.payments_2024_06"]["inserted"] == 1
    assert promote(changeset, config).outcome == "promoted"
    with psycopg.connect(dsn) as conn:
        assert contents(conn) == sandbox


def test_a_postgresql_17_target_gets_a_17_sandbox_and_promotes_exactly(
        target_server_17: ServerAddress, tmp_path: Path) -> None:
    name = "real17"
    target_server_17.fresh_database(name)
    target_server_17.run_script(REALISTIC, name)
    superuser = target_server_17.conninfo(name)
    app = application_role(target_server_17, name, replication_role=True)
    with psycopg.connect(superuser) as conn:
        original = contents(conn)
    with Episode(config_for(app, tmp_path)) as episode:
        assert episode.sandbox.database is not None
        with episode.sandbox.database.connect_as_owner() as conn:
            assert conn.info.server_version // 10000 == 17, "the target's own major"
        run_workload(episode, WORKLOAD)
        with episode.sandbox.database.connect_as_owner() as conn:
            sandbox = contents(conn)
    # The trace says which server served the target, and why.
    start = read_trace(episode.tracer.path)[0]
    assert start["name"] == "episode.start"
    assert start["attributes"]["database_server"] == {
        "version": 17, "chosen_because": "PostgreSQL 17, the target's own"}
    result = episode.promote()
    assert result.outcome == "promoted", result
    with psycopg.connect(superuser) as conn:
        assert differences(contents(conn), sandbox) == {}
    assert revert(Path(result.receipt or "")).outcome == "reverted"
    with psycopg.connect(superuser) as conn:
        assert differences(contents(conn), original) == {}


def test_the_sandbox_version_follows_the_target_and_says_why() -> None:
    from harness.sandbox.postgres import available_versions, choose_version

    assert {15, 17, 18} <= set(available_versions())
    assert choose_version(17).version == 17
    choice = choose_version(16)
    assert choice.version == 17 and "nearest newer" in choice.reason
    assert choose_version(14).version == 15
    assert choose_version(15, 18).version == 18
