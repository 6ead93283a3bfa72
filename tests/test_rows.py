"""Applying row deltas to a real PostgreSQL (harness/promote/rows.py), directly: each test
builds a delta by hand, applies it in a transaction on a target with keys, partitions,
identity columns, triggers, sequences and a keyless table, checks what was written and
what was refused, and rolls back. Fast enough to run under mutation testing."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from harness.promote.rows import TriggersRefused, apply_delta, invert, schema_changes
from harness.sandbox.capture import DdlStatement, RowDelta, RowUpdate, TableDelta
from harness.sandbox.postgres import ServerAddress

pytestmark = pytest.mark.postgres

SCHEMA = """
CREATE TABLE parents (id int PRIMARY KEY, name text NOT NULL CHECK (name <> 'bad'), doc json);
CREATE TABLE children (id serial PRIMARY KEY, parent_id int REFERENCES parents, note text);
CREATE TABLE tagged (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int);
CREATE TABLE keyless (a text, b int);
CREATE TABLE parted (id int, region text, v int, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
CREATE TABLE audit_log (id serial PRIMARY KEY, what text);
CREATE TABLE audited (id int PRIMARY KEY, v int);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit_log (what) VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER audited_log AFTER INSERT OR UPDATE ON audited
    FOR EACH ROW EXECUTE FUNCTION audit();
CREATE TABLE doubled (id int PRIMARY KEY, v int);
CREATE FUNCTION double_v() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.v := NEW.v * 2; RETURN NEW; END $$;
CREATE TRIGGER doubled_v BEFORE INSERT OR UPDATE ON doubled
    FOR EACH ROW EXECUTE FUNCTION double_v();
CREATE SEQUENCE ticket_numbers;
CREATE TABLE tickets (id int PRIMARY KEY DEFAULT nextval('ticket_numbers'), v int);
-- Fire mode: an AFTER trigger writing its own row again; a sale that stamps itself, moves
-- stock, clears holds (a table without a key) and logs; a partitioned table with an audit
-- trigger; a trigger that truncates.
CREATE TABLE stamped (id int PRIMARY KEY, v int, seen int);
CREATE FUNCTION mark_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE stamped SET seen = 1 WHERE id = NEW.id; RETURN NULL; END $$;
CREATE TRIGGER stamped_seen AFTER INSERT ON stamped FOR EACH ROW EXECUTE FUNCTION mark_seen();
CREATE TABLE stock (sku text PRIMARY KEY, on_hand int);
CREATE TABLE holds (sku text, note text);
CREATE TABLE sales (id int PRIMARY KEY, sku text, qty int, stamped_at timestamptz);
CREATE FUNCTION stamp_sale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.stamped_at := '2030-01-01 00:00:00+00'; RETURN NEW; END $$;
CREATE TRIGGER sales_stamp BEFORE INSERT OR UPDATE ON sales
    FOR EACH ROW EXECUTE FUNCTION stamp_sale();
CREATE FUNCTION sell() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE stock SET on_hand = on_hand - NEW.qty WHERE sku = NEW.sku;
    DELETE FROM holds WHERE sku = NEW.sku;
    INSERT INTO audit_log (what) VALUES ('sold ' || NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER sales_sell AFTER INSERT ON sales FOR EACH ROW EXECUTE FUNCTION sell();
CREATE TABLE zoned (id int, zone text, v int, PRIMARY KEY (id, zone)) PARTITION BY LIST (zone);
CREATE TABLE zoned_a PARTITION OF zoned FOR VALUES IN ('a');
CREATE TABLE zoned_b PARTITION OF zoned FOR VALUES IN ('b');
INSERT INTO zoned VALUES (1, 'a', 1);
CREATE TRIGGER zoned_log AFTER INSERT OR UPDATE ON zoned FOR EACH ROW EXECUTE FUNCTION audit();
CREATE TABLE renamed (id int PRIMARY KEY, v int);
CREATE TABLE rekeys (id int PRIMARY KEY);
CREATE FUNCTION rekey() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE renamed SET id = id + 100 WHERE id = NEW.id; RETURN NULL; END $$;
CREATE TRIGGER rekeys_rekey AFTER INSERT ON rekeys FOR EACH ROW EXECUTE FUNCTION rekey();
CREATE TABLE muted (id int PRIMARY KEY);
INSERT INTO muted VALUES (1), (101);
CREATE FUNCTION mute() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF coalesce(NEW.id, OLD.id) > 100 THEN RETURN NULL; END IF;
      RETURN coalesce(NEW, OLD); END $$;
CREATE TRIGGER muted_mute BEFORE INSERT OR DELETE ON muted FOR EACH ROW EXECUTE FUNCTION mute();
CREATE TABLE fleeting (id int PRIMARY KEY);
CREATE FUNCTION vanish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN DELETE FROM fleeting WHERE id = NEW.id; RETURN NULL; END $$;
CREATE TRIGGER fleeting_vanish AFTER INSERT ON fleeting FOR EACH ROW EXECUTE FUNCTION vanish();
CREATE TABLE careful (id int PRIMARY KEY);
CREATE FUNCTION try_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN INSERT INTO audit_log (what) VALUES ('tried ' || NEW.id); RAISE EXCEPTION 'no';
    EXCEPTION WHEN raise_exception THEN NULL; END;
    INSERT INTO audit_log (what) VALUES ('kept ' || NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER careful_log AFTER INSERT ON careful FOR EACH ROW EXECUTE FUNCTION try_log();
CREATE TABLE owners (id int PRIMARY KEY, pets int);
CREATE TABLE pets (id int PRIMARY KEY, owner_id int REFERENCES owners, name text);
CREATE FUNCTION count_pet() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE owners SET pets = pets + 1 WHERE id = NEW.owner_id; RETURN NULL; END $$;
CREATE TRIGGER pets_count AFTER INSERT ON pets FOR EACH ROW EXECUTE FUNCTION count_pet();
CREATE TABLE tallies (name text, n int);
CREATE TABLE votes (id int PRIMARY KEY, name text);
CREATE FUNCTION tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE tallies SET n = n + 1 WHERE name = NEW.name; RETURN NULL; END $$;
CREATE TRIGGER votes_tally AFTER INSERT ON votes FOR EACH ROW EXECUTE FUNCTION tally();
CREATE TABLE scratch (v int);
CREATE TABLE wiped (id int PRIMARY KEY);
CREATE FUNCTION wipe() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN TRUNCATE scratch; RETURN NULL; END $$;
CREATE TRIGGER wiped_wipe AFTER INSERT ON wiped FOR EACH ROW EXECUTE FUNCTION wipe();
INSERT INTO parents VALUES (1, 'one', '{"a": 1}'), (2, 'two', NULL), (3, 'three', NULL);
INSERT INTO children (parent_id, note) VALUES (1, 'c1'), (1, 'c2'), (2, 'c3');
INSERT INTO tagged (v) VALUES (10), (20);
INSERT INTO keyless VALUES ('x', 1), ('x', 1), ('y', 2);
INSERT INTO parted VALUES (1, 'eu', 1), (2, 'us', 2);
INSERT INTO audited VALUES (1, 1);
INSERT INTO doubled VALUES (1, 2);
INSERT INTO tickets (v) VALUES (1), (2);
INSERT INTO stock VALUES ('apple', 10), ('pear', 5);
INSERT INTO holds VALUES ('apple', 'for Ann'), ('apple', 'for Ann'), ('pear', 'for Bo');
INSERT INTO scratch VALUES (1);
INSERT INTO renamed VALUES (1, 1), (2, 2);
INSERT INTO owners VALUES (1, 0);
INSERT INTO tallies VALUES ('yes', 0), ('yes', 0), ('no', 0);
"""


@pytest.fixture(scope="module")
def target(target_server: ServerAddress) -> str:
    target_server.fresh_database("rows_apply", SCHEMA)
    with target_server.connect("rows_apply") as conn:
        conn.execute("DROP ROLE IF EXISTS rows_app")
        conn.execute("CREATE ROLE rows_app LOGIN PASSWORD 'rows-app'")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                     "TO rows_app; GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "
                     "public TO rows_app")
    return target_server.conninfo("rows_apply")


@pytest.fixture()
def conn(target: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser transaction on the target, rolled back after the test."""
    with psycopg.connect(target) as connection:
        yield connection
        connection.rollback()


def delta(*tables: TableDelta, ddl: list[str] | None = None) -> RowDelta:
    return RowDelta({t.table: t for t in tables},
                    [DdlStatement("?", None, None, q) for q in ddl or []])


def update(key: dict[str, Any], before: dict[str, Any], **changes: Any) -> RowUpdate:
    after = {**before, **changes}
    return RowUpdate(key, before, after, sorted(k for k in after if after[k] != before.get(k)))


def rows(conn: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


PARENT_1 = {"id": 1, "name": "one", "doc": {"a": 1}}
PARENT_3 = {"id": 3, "name": "three", "doc": None}


def test_a_delta_applies_in_foreign_key_order_and_is_counted(conn: psycopg.Connection[Any]
                                                             ) -> None:
    change = delta(
        TableDelta("public.children", ["id"], inserted=[{"id": 10, "parent_id": 4,
                                                         "note": "new"}],
                   deleted=[{"id": 3, "parent_id": 2, "note": "c3"}]),
        TableDelta("public.parents", ["id"],
                   inserted=[{"id": 4, "name": "four", "doc": None}],
                   updated=[update({"id": 1}, PARENT_1, name="uno")],
                   deleted=[{"id": 2, "name": "two", "doc": None}]))
    applied, conflicts, written = apply_delta(conn, change, ddl=False)
    assert conflicts == []
    assert (applied.inserted, applied.updated, applied.deleted, applied.mode) == (2, 1, 2, "plain")
    assert rows(conn, "SELECT id, name FROM parents ORDER BY id") == [
        (1, "uno"), (3, "three"), (4, "four")]
    assert rows(conn, "SELECT id, parent_id FROM children ORDER BY id") == [
        (1, 1), (2, 1), (10, 4)]
    assert written.tables["public.parents"].updated[0].after["name"] == "uno"
    assert conn.execute("SELECT nextval('children_id_seq')").fetchone()[0] > 10, \
        "the serial moved past the inserted id"


@pytest.mark.parametrize(("meanwhile", "reason"), [
    ("UPDATE parents SET name = 'ONE' WHERE id = 1", "the row was changed since the snapshot"),
    ("DELETE FROM children WHERE parent_id = 1; DELETE FROM parents WHERE id = 1",
     "the row was deleted"),
    ("UPDATE parents SET doc = '{\"a\": 2}' WHERE id = 1",
     "the row was changed since the snapshot"),
])
def test_an_update_whose_row_is_not_as_the_snapshot_saw_it_is_a_conflict(
        conn: psycopg.Connection[Any], meanwhile: str, reason: str) -> None:
    conn.execute(meanwhile)
    before = rows(conn, "SELECT * FROM parents ORDER BY id")
    change = delta(TableDelta("public.parents", ["id"],
                              updated=[update({"id": 1}, PARENT_1, name="uno"),
                                       update({"id": 3}, PARENT_3, name="tres")]))
    applied, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert [(c.table, c.key, c.reason) for c in conflicts] == [
        ("public.parents", {"id": 1}, reason)]
    assert conflicts[0].expected == PARENT_1
    assert (conflicts[0].found is None) == (reason == "the row was deleted")
    assert applied.updated == 0 and rows(conn, "SELECT * FROM parents ORDER BY id") == before


def test_a_json_column_is_compared_by_its_text(conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.parents", ["id"],
                              updated=[update({"id": 1}, PARENT_1, name="uno")]))
    assert apply_delta(conn, change, ddl=False)[1] == []


def test_a_deleted_row_that_changed_or_went_is_a_conflict(conn: psycopg.Connection[Any]
                                                          ) -> None:
    conn.execute("UPDATE children SET note = 'edited' WHERE id = 1; DELETE FROM children "
                 "WHERE id = 2")
    change = delta(TableDelta("public.children", ["id"], deleted=[
        {"id": 1, "parent_id": 1, "note": "c1"}, {"id": 2, "parent_id": 1, "note": "c2"},
        {"id": 3, "parent_id": 2, "note": "c3"}]))
    _, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert sorted((c.key["id"], c.reason) for c in conflicts) == [  # type: ignore[index]
        (1, "the row was changed since the snapshot"), (2, "the row was deleted")]
    assert rows(conn, "SELECT count(*) FROM children") == [(2,)]


def test_an_insert_whose_key_is_taken_is_a_conflict(conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.parents", ["id"], inserted=[
        {"id": 3, "name": "again", "doc": None}, {"id": 5, "name": "five", "doc": None}]))
    applied, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert [(c.key, c.reason, c.found["name"]) for c in conflicts] == [  # type: ignore[index]
        ({"id": 3}, "a row with this key exists already", "three")]
    assert applied.inserted == 0 and rows(conn, "SELECT count(*) FROM parents") == [(3,)]


def test_rows_of_a_keyless_table_are_matched_by_contents_one_by_one(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.keyless", [], inserted=[{"a": "z", "b": 9}],
                              deleted=[{"a": "x", "b": 1}]))
    applied, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert conflicts == [] and (applied.inserted, applied.deleted) == (1, 1)
    assert rows(conn, "SELECT a, b FROM keyless ORDER BY a, b") == [
        ("x", 1), ("y", 2), ("z", 9)], "one of the two equal rows is deleted, not both"
    too_many = delta(TableDelta("public.keyless", [], deleted=[{"a": "x", "b": 1}] * 2))
    _, conflicts, _ = apply_delta(conn, too_many, ddl=False)
    assert [(c.expected, c.reason) for c in conflicts] == [
        ({"a": "x", "b": 1}, "2 such row(s) expected, 1 found")]


def test_identity_always_columns_are_inserted_as_given_but_never_updated(
        conn: psycopg.Connection[Any]) -> None:
    inserted = delta(TableDelta("public.tagged", ["id"], inserted=[{"id": 50, "v": 5}]))
    assert apply_delta(conn, inserted, ddl=False)[1] == []
    assert rows(conn, "SELECT id, v FROM tagged WHERE id = 50") == [(50, 5)]
    moved = delta(TableDelta("public.tagged", ["id"], updated=[
        update({"id": 1}, {"id": 1, "v": 10}, id=99)]))
    _, conflicts, _ = apply_delta(conn, moved, ddl=False)
    assert len(conflicts) == 1 and "GENERATED ALWAYS" in conflicts[0].reason
    assert conflicts[0].key == {"id": 1}


def test_a_row_moved_to_another_partition_is_one_update(conn: psycopg.Connection[Any]
                                                        ) -> None:
    change = delta(TableDelta("public.parted", ["id", "region"], updated=[
        update({"id": 1, "region": "eu"}, {"id": 1, "region": "eu", "v": 1}, region="us",
               v=7)]))
    applied, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert conflicts == [] and applied.updated == 1
    assert rows(conn, "SELECT tableoid::regclass::text, id, v FROM parted ORDER BY id") == [
        ("parted_us", 1, 7), ("parted_us", 2, 2)]
    taken = delta(TableDelta("public.parted", ["id", "region"], updated=[
        update({"id": 2, "region": "us"}, {"id": 2, "region": "us", "v": 2}, id=1)]))
    _, conflicts, _ = apply_delta(conn, taken, ddl=False)
    assert [c.reason for c in conflicts] == ["a row with this key exists already"]


def test_a_deleted_parent_with_a_child_the_change_set_does_not_know_is_a_conflict(
        conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO children (id, parent_id, note) VALUES (20, 3, 'late')")
    change = delta(TableDelta("public.parents", ["id"], deleted=[PARENT_3]))
    _, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert [(c.table, c.key) for c in conflicts] == [("public.children", {"id": 20})]
    assert "references public.parents {\"id\": 3}" in conflicts[0].reason
    handled = delta(TableDelta("public.parents", ["id"], deleted=[PARENT_3]),
                    TableDelta("public.children", ["id"], deleted=[
                        {"id": 20, "parent_id": 3, "note": "late"}]))
    applied, conflicts, _ = apply_delta(conn, handled, ddl=False)
    assert conflicts == [] and applied.deleted == 2


def test_a_child_whose_parent_is_gone_on_the_target_is_a_conflict(
        conn: psycopg.Connection[Any]) -> None:
    orphan = {"id": 30, "parent_id": 3, "note": "mine"}
    conn.execute("DELETE FROM parents WHERE id = 3")
    _, conflicts, _ = apply_delta(conn, delta(TableDelta("public.children", ["id"],
                                                         inserted=[orphan])), ddl=False)
    assert [(c.key, c.expected) for c in conflicts] == [({"id": 30}, orphan)]
    assert "does not exist on the target" in conflicts[0].reason
    with_parent = delta(TableDelta("public.children", ["id"], inserted=[orphan]),
                        TableDelta("public.parents", ["id"], inserted=[PARENT_3]))
    applied, conflicts, _ = apply_delta(conn, with_parent, ddl=False)
    assert conflicts == [] and applied.inserted == 2
    unattached = {"id": 31, "parent_id": None, "note": "none"}
    assert apply_delta(conn, delta(TableDelta("public.children", ["id"], inserted=[
        unattached])), ddl=False)[1] == [], "a null reference refers to nothing"


def test_a_parent_the_change_set_deletes_cannot_be_referenced_by_a_new_child(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.parents", ["id"], deleted=[PARENT_3]),
                   TableDelta("public.children", ["id"], inserted=[
                       {"id": 40, "parent_id": 3, "note": "doomed"}]))
    _, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert [c.key for c in conflicts] == [{"id": 40}]


def test_triggers_stay_silent_when_replicating_and_fire_when_asked(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.audited", ["id"], inserted=[{"id": 2, "v": 2}],
                              updated=[update({"id": 1}, {"id": 1, "v": 1}, v=5)]))
    applied, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert conflicts == [] and applied.mode == "replica"
    assert rows(conn, "SELECT what FROM audit_log") == [("INSERT 1",)], "only the seed's"
    conn.rollback()
    applied, conflicts, written = apply_delta(conn, change, ddl=False, triggers="fire")
    assert conflicts == [] and applied.mode == "fire"
    assert written.tables["public.audited"].inserted == [{"id": 2, "v": 2}]
    assert rows(conn, "SELECT what FROM audit_log ORDER BY id") == [
        ("INSERT 1",), ("INSERT 2",), ("UPDATE 1",)]
    assert applied.side_effects == {"public.audit_log": {
        "inserted": 2, "updated": 0, "deleted": 0, "dropped": 0, "columns": ["id", "what"]}}
    assert applied.rewritten == {}
    logged = written.tables["public.audit_log"]
    assert logged.inserted == [{"id": i, "what": w} for i, w in rows(
        conn, "SELECT id, what FROM audit_log WHERE what <> 'INSERT 1' ORDER BY id")], \
        "the rows the trigger wrote are in the delta as written, for a revert to remove"


def test_fired_triggers_that_change_a_value_are_recorded(conn: psycopg.Connection[Any]
                                                        ) -> None:
    # The seed's row went through the trigger too: it holds v = 4.
    change = delta(TableDelta("public.doubled", ["id"], inserted=[{"id": 2, "v": 3}],
                              updated=[update({"id": 1}, {"id": 1, "v": 4}, v=5)]))
    applied, conflicts, written = apply_delta(conn, change, ddl=False, triggers="fire")
    assert conflicts == [] and applied.rewritten == {"public.doubled": ["v"]}
    table = written.tables["public.doubled"]
    assert table.inserted == [{"id": 2, "v": 6}]
    assert table.updated[0].after == {"id": 1, "v": 10} and table.updated[0].changed == ["v"]


def test_a_role_that_cannot_silence_triggers_is_refused_with_the_grant(target: str) -> None:
    app = psycopg.conninfo.make_conninfo(target, user="rows_app", password="rows-app")
    change = delta(TableDelta("public.audited", ["id"], inserted=[{"id": 3, "v": 3}]))
    with psycopg.connect(app) as conn:
        with pytest.raises(TriggersRefused) as refused:
            apply_delta(conn, change, ddl=False)
        assert "GRANT SET ON PARAMETER session_replication_role TO rows_app" in str(
            refused.value)
        assert "public.audited: audited_log" in str(refused.value)
        conn.rollback()
        plain = delta(TableDelta("public.parents", ["id"], inserted=[
            {"id": 9, "name": "nine", "doc": None}]))
        applied, conflicts, _ = apply_delta(conn, plain, ddl=False)
        assert conflicts == [] and applied.mode == "plain", "no trigger: no privilege needed"
        conn.rollback()


def test_an_always_enabled_trigger_is_refused_when_replicating(conn: psycopg.Connection[Any]
                                                               ) -> None:
    conn.execute("ALTER TABLE audited ENABLE ALWAYS TRIGGER audited_log")
    change = delta(TableDelta("public.audited", ["id"], inserted=[{"id": 4, "v": 4}]))
    with pytest.raises(TriggersRefused, match=r"ALWAYS or REPLICA.*audited_log"):
        apply_delta(conn, change, ddl=False)


def test_a_value_the_target_refuses_is_a_conflict_and_nothing_stays(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.parents", ["id"], inserted=[
        {"id": 6, "name": "six", "doc": None}, {"id": 7, "name": "bad", "doc": None}]))
    applied, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert len(conflicts) == 1 and conflicts[0].table == "public.parents"
    assert applied.inserted == 0, "counted only once the writes stand"
    assert conflicts[0].reason.startswith("the target refused the change: new row for "
                                          "relation \"parents\" violates check constraint")
    assert rows(conn, "SELECT count(*) FROM parents WHERE id IN (6, 7)") == [(0,)]
    conn.execute("SELECT 1")  # the transaction is still usable


def test_a_sequence_named_in_a_default_moves_past_inserted_values(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.tickets", ["id"], inserted=[{"id": 40, "v": 4}]))
    assert apply_delta(conn, change, ddl=False)[1] == []
    assert conn.execute("SELECT nextval('ticket_numbers')").fetchone() == (41,)
    low = delta(TableDelta("public.tickets", ["id"], inserted=[{"id": 3, "v": 3}]))
    assert apply_delta(conn, low, ddl=False)[1] == []
    assert conn.execute("SELECT nextval('ticket_numbers')").fetchone() == (42,), \
        "never moved backwards"


def test_only_the_ddl_of_a_recorded_command_is_replayed(conn: psycopg.Connection[Any]) -> None:
    change = delta(ddl=["CREATE TABLE extra (id int); INSERT INTO extra VALUES (1); "
                        "ALTER TABLE extra ADD COLUMN note text",
                        "CREATE INDEX ON parents (name)"])
    assert schema_changes(change) == ["CREATE TABLE extra (id int)",
                                      "ALTER TABLE extra ADD COLUMN note text",
                                      "CREATE INDEX ON parents (name)"]
    applied, conflicts, _ = apply_delta(conn, change, ddl=True)
    assert conflicts == [] and applied.ddl == 3
    assert rows(conn, "SELECT count(*) FROM extra") == [(0,)], "the row statement is not rerun"
    assert applied.inserted == 0
    skipped = apply_delta(conn, delta(ddl=["CREATE TABLE other (id int)"]), ddl=False)[0]
    assert skipped.ddl == 0


def test_inverting_a_delta_undoes_it(conn: psycopg.Connection[Any]) -> None:
    before = {t: rows(conn, f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("parents", "parted")}
    change = delta(
        TableDelta("public.parents", ["id"], inserted=[{"id": 8, "name": "eight", "doc": None}],
                   updated=[update({"id": 3}, PARENT_3, name="tres")]),
        TableDelta("public.parted", ["id", "region"], updated=[
            update({"id": 2, "region": "us"}, {"id": 2, "region": "us", "v": 2},
                   region="eu")],
                   deleted=[{"id": 1, "region": "eu", "v": 1}]))
    _, conflicts, written = apply_delta(conn, change, ddl=False)
    assert conflicts == []
    _, conflicts, _ = apply_delta(conn, invert(written), ddl=False)
    assert conflicts == []
    assert {t: rows(conn, f"SELECT * FROM {t} ORDER BY 1, 2") for t in before} == before


def test_masked_columns_are_neither_compared_nor_written(conn: psycopg.Connection[Any]
                                                         ) -> None:
    masked_before = {**PARENT_3, "name": "xxxxx"}  # the sandbox held a mask
    change = delta(TableDelta("public.parents", ["id"], masked=["name"], updated=[
        RowUpdate({"id": 3}, masked_before, {**masked_before, "doc": {"b": 2}}, ["doc"])]))
    applied, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert conflicts == [] and applied.updated == 1
    assert rows(conn, "SELECT name, doc::text FROM parents WHERE id = 3") == [
        ("three", json.dumps({"b": 2}))]


def test_a_refused_value_in_a_masked_table_never_quotes_the_real_row(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.parents", ["id"], masked=["doc"], inserted=[
        {"id": 7, "name": "bad", "doc": None}]))
    _, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert len(conflicts) == 1 and "Failing row" not in conflicts[0].reason
    assert conflicts[0].reason.endswith("(the failing row is not shown: it holds masked "
                                        "columns)")


def test_a_child_the_change_set_leaves_alone_beside_one_it_deletes_is_a_conflict(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.parents", ["id"], deleted=[
        {"id": 1, "name": "one", "doc": {"a": 1}}]),
        TableDelta("public.children", ["id"], deleted=[{"id": 1, "parent_id": 1,
                                                         "note": "c1"}]))
    _, conflicts, _ = apply_delta(conn, change, ddl=False)
    assert [(c.table, c.key) for c in conflicts] == [("public.children", {"id": 2})]


def contents(conn: psycopg.Connection[Any], *tables: str) -> dict[str, list[str]]:
    """Every row of `tables` as sorted JSON texts."""
    return {t: sorted(json.dumps(r[0], sort_keys=True) for r in rows(
        conn, f"SELECT to_jsonb(t) FROM {t} t")) for t in tables}


def test_an_after_trigger_writing_the_same_row_again_is_recorded_as_written(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.stamped", ["id"], inserted=[
        {"id": 1, "v": 1, "seen": None}]))
    applied, conflicts, written = apply_delta(conn, change, ddl=False, triggers="fire")
    assert conflicts == []
    real = rows(conn, "SELECT to_jsonb(s) FROM stamped s")
    assert written.tables["public.stamped"].inserted == [real[0][0]] == [
        {"id": 1, "v": 1, "seen": 1}], "after the AFTER trigger, not as RETURNING saw it"
    assert applied.rewritten == {"public.stamped": ["seen"]}
    assert applied.side_effects == {}, "the row is the change set's own"


def test_what_triggers_write_in_other_tables_is_recorded_and_reverted(
        conn: psycopg.Connection[Any]) -> None:
    watched = ("sales", "stock", "holds", "audit_log")
    original = contents(conn, *watched)
    change = delta(TableDelta("public.sales", ["id"], inserted=[
        {"id": 1, "sku": "apple", "qty": 3, "stamped_at": None}]))
    applied, conflicts, written = apply_delta(conn, change, ddl=False, triggers="fire")
    assert conflicts == []
    assert applied.rewritten == {"public.sales": ["stamped_at"]}
    assert applied.side_effects == {
        "public.audit_log": {"inserted": 1, "updated": 0, "deleted": 0, "dropped": 0,
                             "columns": ["id", "what"]},
        "public.holds": {"inserted": 0, "updated": 0, "deleted": 2, "dropped": 0,
                         "columns": ["note", "sku"]},
        "public.stock": {"inserted": 0, "updated": 1, "deleted": 0, "dropped": 0,
                         "columns": ["on_hand"]}}
    stock = written.tables["public.stock"].updated
    assert [(u.key, u.before["on_hand"], u.after["on_hand"]) for u in stock] == [
        ({"sku": "apple"}, 10, 7)], "the before-image is the committed row the trigger updated"
    assert written.tables["public.holds"].deleted == [{"sku": "apple", "note": "for Ann"}] * 2
    # Every row the receipt would hold is the target's row as it is now.
    now = contents(conn, *watched)
    for name, table in written.tables.items():
        short = name.removeprefix("public.")
        for image in [*table.inserted, *(u.after for u in table.updated)]:
            assert json.dumps(image, sort_keys=True) in now[short]
    # Undone with the triggers silent, everything is as it was.
    _, conflicts, _ = apply_delta(conn, invert(written), ddl=False)
    assert conflicts == []
    assert contents(conn, *watched) == original


def test_a_row_moving_partitions_with_triggers_firing_is_one_update_and_no_side_effect(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.zoned", ["id", "zone"], updated=[
        update({"id": 1, "zone": "a"}, {"id": 1, "zone": "a", "v": 1}, zone="b", v=2)]))
    applied, conflicts, written = apply_delta(conn, change, ddl=False, triggers="fire")
    assert conflicts == [] and applied.updated == 1
    assert rows(conn, "SELECT tableoid::regclass::text, id, v FROM zoned") == [
        ("zoned_b", 1, 2)]
    assert set(applied.side_effects) == {"public.audit_log"}, \
        "statistics count the move as a delete and an insert: it is neither"
    assert applied.side_effects["public.audit_log"]["inserted"] == 1
    assert [u.after for u in written.tables["public.zoned"].updated] == [
        {"id": 1, "zone": "b", "v": 2}]


def test_a_trigger_that_truncates_cannot_be_recorded_and_is_refused(
        conn: psycopg.Connection[Any]) -> None:
    change = delta(TableDelta("public.wiped", ["id"], inserted=[{"id": 1}]))
    with pytest.raises(TriggersRefused, match=r"truncated or rewrote public\.scratch.*"
                                              r"promotion\.triggers: replicate"):
        apply_delta(conn, change, ddl=False, triggers="fire")


def test_fire_mode_reads_back_with_a_dml_only_role_and_refuses_what_it_may_not_read(
        target: str) -> None:
    app = psycopg.conninfo.make_conninfo(target, user="rows_app", password="rows-app")
    change = delta(TableDelta("public.sales", ["id"], inserted=[
        {"id": 2, "sku": "pear", "qty": 1, "stamped_at": None}]))
    with psycopg.connect(app) as conn:
        applied, conflicts, written = apply_delta(conn, change, ddl=False, triggers="fire")
        assert conflicts == [] and applied.mode == "fire"
        assert set(applied.side_effects) == {"public.audit_log", "public.holds",
                                             "public.stock"}
        assert written.tables["public.holds"].deleted == [{"sku": "pear", "note": "for Bo"}]
        conn.rollback()
    with psycopg.connect(target, autocommit=True) as owner:
        owner.execute("REVOKE SELECT ON audit_log FROM rows_app")
    try:
        with psycopg.connect(app) as conn:
            with pytest.raises(TriggersRefused, match=r"wrote into \(which the role may not "
                                                      r"read\) public\.audit_log"):
                apply_delta(conn, change, ddl=False, triggers="fire")
            conn.rollback()
    finally:
        with psycopg.connect(target, autocommit=True) as owner:
            owner.execute("GRANT SELECT ON audit_log TO rows_app")
    with psycopg.connect(target) as conn:
        assert rows(conn, "SELECT count(*) FROM sales") == [(0,)], "nothing stayed"


EVERY_TABLE = ("renamed", "rekeys", "muted", "fleeting", "careful", "audit_log", "owners",
               "pets", "tallies", "votes")


@pytest.mark.parametrize(("change", "effects"), [
    (TableDelta("public.rekeys", ["id"], inserted=[{"id": 1}]),
     {"public.renamed": {"inserted": 1, "updated": 0, "deleted": 1, "dropped": 0,
                         "columns": ["id", "v"]}}),
    (TableDelta("public.muted", ["id"], inserted=[{"id": 2}, {"id": 102}],
                deleted=[{"id": 1}, {"id": 101}]),
     {"public.muted": {"inserted": 0, "updated": 0, "deleted": 0, "dropped": 2,
                       "columns": ["id"]}}),
    (TableDelta("public.fleeting", ["id"], inserted=[{"id": 1}]),
     {"public.fleeting": {"inserted": 0, "updated": 0, "deleted": 0, "dropped": 1,
                          "columns": ["id"]}}),
    (TableDelta("public.careful", ["id"], inserted=[{"id": 1}]),
     {"public.audit_log": {"inserted": 1, "updated": 0, "deleted": 0, "dropped": 0,
                           "columns": ["id", "what"]}}),
    (TableDelta("public.pets", ["id"], inserted=[{"id": 1, "owner_id": 1, "name": "Rex"}]),
     {"public.owners": {"inserted": 0, "updated": 1, "deleted": 0, "dropped": 0,
                        "columns": ["pets"]}}),
    (TableDelta("public.votes", ["id"], inserted=[{"id": 1, "name": "yes"}]),
     {"public.tallies": {"inserted": 2, "updated": 0, "deleted": 2, "dropped": 0,
                         "columns": ["n", "name"]}}),
], ids=["a-trigger-re-keys-another-row", "a-trigger-suppresses-writes",
        "a-trigger-deletes-the-row-written", "a-rolled-back-exception-block",
        "a-row-locked-for-a-foreign-key-then-updated", "a-trigger-updates-a-keyless-table"])
def test_the_delta_as_written_is_exactly_what_changed_and_inverts_back(
        conn: psycopg.Connection[Any], change: TableDelta, effects: dict[str, Any]) -> None:
    before = contents(conn, *EVERY_TABLE)
    applied, conflicts, written = apply_delta(conn, delta(change), ddl=False, triggers="fire")
    assert conflicts == []
    assert applied.side_effects == effects
    after = contents(conn, *EVERY_TABLE)
    # Before, with the delta as written applied on paper, is after: nothing more, nothing less.
    expected = {t: Counter(found) for t, found in before.items()}
    for name, table in written.tables.items():
        short = name.removeprefix("public.")
        expected[short].subtract(json.dumps(r, sort_keys=True) for r in [
            *table.deleted, *(u.before for u in table.updated)])
        expected[short].update(json.dumps(r, sort_keys=True) for r in [
            *table.inserted, *(u.after for u in table.updated)])
    assert {t: sorted((+c).elements()) for t, c in expected.items()} == after
    _, conflicts, _ = apply_delta(conn, invert(written), ddl=False)
    assert conflicts == []
    assert contents(conn, *EVERY_TABLE) == before
