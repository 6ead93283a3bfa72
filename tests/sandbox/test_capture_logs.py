"""Typed capture logs: row images copied as they are and read as JSON later must be exactly
the rows the tables held, through every change of shape a migration can make, whatever
the agent's session set, and out of the agent's reach."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.sandbox.capture import RowDelta, dump_images, load_image
from harness.sandbox.database import SandboxDatabase, open_baseline
from harness.sandbox.postgres import ServerAddress
from tests.fix_pg import run

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS numeric(10, 2) CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text, at timestamptz, f float8);
CREATE TABLE kinds (
    id int PRIMARY KEY, m mood, ms mood[], p positive, c pair, cs pair[], r regclass,
    iv interval, f float8, ts timestamptz, d date, b bytea, j jsonb, v varchar(5),
    ch char(3), bits bit(3), n numeric(12, 4), t tsvector, cash money,
    g int GENERATED ALWAYS AS (id * 2) STORED);
INSERT INTO kinds (id, m, ms, p, c, cs, r, iv, f, ts, d, b, j, v, ch, bits, n, t, cash)
SELECT g, 'ok', ARRAY['sad', 'happy']::mood[], g + 0.5,
       ROW(g, 'x' || g, '2024-03-01 12:00+00', 0.1 * g)::pair,
       ARRAY[ROW(g, 'y', '2024-03-02 00:00+00', 1.0 / 3)::pair],
       'kinds'::regclass, make_interval(days => g, secs => 1.5), 1.0 / (g + 2),
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 hour', '2024-02-29',
       decode('00ff' || lpad(to_hex(g), 2, '0'), 'hex'), jsonb_build_object('k', g),
       'v' || g, 'c', B'101', g / 7.0, to_tsvector('simple', 'word ' || g), g * 1.25
FROM generate_series(1, 20) g;
CREATE TABLE shaped (id int PRIMARY KEY, a int NOT NULL, price numeric(10, 0), label text);
INSERT INTO shaped SELECT g, g, g * 10, 'l' || g FROM generate_series(1, 30) g;
CREATE TABLE payments (id int, paid date NOT NULL, amount numeric NOT NULL,
                       PRIMARY KEY (id, paid)) PARTITION BY RANGE (paid);
CREATE TABLE payments_2024 PARTITION OF payments
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO payments SELECT g, '2024-01-01'::date + g, g FROM generate_series(1, 20) g;
CREATE TABLE parent (id int PRIMARY KEY, v int);
INSERT INTO parent SELECT g, g FROM generate_series(1, 10) g;
CREATE SCHEMA archive;
CREATE TABLE events (id int, year int, kind text, body text, PRIMARY KEY (id, year, kind))
    PARTITION BY RANGE (year);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM (2024) TO (2025)
    PARTITION BY LIST (kind);
CREATE TABLE events_2024_a PARTITION OF events_2024 FOR VALUES IN ('a');
CREATE TABLE archive.events_2024_b PARTITION OF events_2024 FOR VALUES IN ('b');
CREATE TABLE archive.events_old PARTITION OF events FOR VALUES FROM (2000) TO (2024);
INSERT INTO events SELECT g, CASE WHEN g <= 14 THEN 2024 ELSE 2010 END, chr(97 + g % 2),
                          'e' || g
FROM generate_series(1, 20) g;
"""

# Everything an agent may set in its own session that changes how a value reads as text.
ODD_SESSION = ["SET TimeZone = 'Asia/Kathmandu'", "SET IntervalStyle = 'sql_standard'",
               "SET extra_float_digits = -10", "SET bytea_output = 'escape'",
               "SET DateStyle = 'SQL, DMY'"]


@pytest.fixture(scope="module")
def kinds_dsn(target_server: ServerAddress) -> str:
    return target_server.fresh_database("typed_logs", SCHEMA)


@pytest.fixture()
def db(pg_server: ServerAddress, kinds_dsn: str,
       request: pytest.FixtureRequest) -> Iterator[SandboxDatabase]:
    _, baseline = open_baseline(kinds_dsn)
    database = SandboxDatabase(pg_server, baseline, f"tl-{request.node.name[:28]}").create()
    try:
        yield database
    finally:
        database.drop()


def rows(conn: psycopg.Connection[Any], table: str) -> list[dict[str, Any]]:
    """A table's rows as JSON, read as the capture reads them (times in UTC, objects
    named by schema)."""
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET search_path = pg_catalog")
    return [load_image(text) for (text,) in conn.execute(
        f"SELECT row_to_json(whole_row)::text FROM public.{table} whole_row")]  # type: ignore[arg-type]


def by_key(images: list[dict[str, Any]], key: list[str]) -> dict[str, dict[str, Any]]:
    return {dump_images([image[k] for k in key]): image for image in images}


def assert_delta_is_the_truth(delta: RowDelta, source: psycopg.Connection[Any],
                              sandbox: psycopg.Connection[Any], table: str,
                              key: list[str]) -> None:
    """The delta's before-images are the source's rows and its after-images the sandbox's,
    row for row, and every row that differs between them is in the delta."""
    before = by_key(rows(source, table), key)
    after = by_key(rows(sandbox, table), key)
    t = delta.tables.get(f"public.{table}")
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    if t is None:
        assert not changed
        return
    seen: set[str] = set()
    for row in t.inserted:
        k = dump_images([row[c] for c in key])
        assert k not in before and after[k] == row
        seen.add(k)
    for row in t.deleted:
        k = dump_images([row[c] for c in key])
        assert k not in after and before[k] == row
        seen.add(k)
    for update in t.updated:
        k = dump_images([update.key[c] for c in key])
        assert before[k] == update.before and after[k] == update.after
        seen.add(k)
    assert seen == changed


def test_images_read_as_the_rows_do_whatever_the_agents_session_set(
        db: SandboxDatabase, kinds_dsn: str) -> None:
    with db.connect() as conn:
        for setting in ODD_SESSION:
            conn.execute(setting)  # type: ignore[arg-type]
        conn.execute("UPDATE kinds SET f = f / 3, ts = ts + interval '1 minute', "
                     "iv = iv * 2, b = b || '\\x01'::bytea, c.f = (c).f / 7 WHERE id <= 8")
        conn.execute("DELETE FROM kinds WHERE id > 16")
        conn.execute("INSERT INTO kinds (id, m, p, f, ts, d, n, cash) "
                     "VALUES (100, 'happy', 1.5, pi(), now(), '2024-02-29', 1.23456, 7.5)")
        delta = db.delta()
    # The float kept all its digits; times are instants in UTC; bytea is hex.
    updated = {u.key["id"]: u for u in delta.tables["public.kinds"].updated}
    assert len(str(updated[1].after["f"]).lstrip("0.")) >= 15
    assert str(updated[1].after["ts"]).endswith("+00:00")
    assert str(updated[1].after["b"]).startswith("\\x")
    with psycopg.connect(kinds_dsn) as source, db.connect_as_owner() as sandbox:
        assert_delta_is_the_truth(delta, source, sandbox, "kinds", ["id"])


def test_every_change_of_shape_keeps_each_image_as_it_was(db: SandboxDatabase,
                                                          kinds_dsn: str) -> None:
    run(db, "UPDATE shaped SET a = a + 1 WHERE id <= 10",
        "ALTER TABLE shaped ADD COLUMN note text DEFAULT 'new'",
        "UPDATE shaped SET note = 'n' || id WHERE id BETWEEN 5 AND 15",
        "ALTER TABLE shaped ALTER COLUMN price TYPE numeric(10, 2)",
        "UPDATE shaped SET price = price + 0.25 WHERE id BETWEEN 12 AND 20",
        "ALTER TABLE shaped RENAME COLUMN label TO title",
        "UPDATE shaped SET title = upper(title) WHERE id BETWEEN 18 AND 25",
        "ALTER TABLE shaped DROP COLUMN a",
        "DELETE FROM shaped WHERE id > 27",
        "INSERT INTO shaped (id, price, title) VALUES (31, 1.5, 'new')")
    delta = db.delta()
    t = delta.tables["public.shaped"]
    # Rows are what the statements left them; the migrations are the DDL beside them.
    assert t.counts() == {"inserted": 1, "updated": 25, "deleted": 3}
    assert len(delta.ddl) == 4
    updated = {u.key["id"]: u for u in t.updated}
    assert updated[1].before == {"id": 1, "a": 1, "price": 10, "label": "l1"}
    assert updated[1].after == {"id": 1, "a": 2, "price": 10, "label": "l1"}
    # A value the column's type change widened is not rounded back by an old log.
    assert updated[14].after == {"id": 14, "a": 14, "price": Decimal("140.25"),
                                 "label": "l14", "note": "n14"}
    assert updated[20].after == {"id": 20, "a": 20, "price": Decimal("200.25"),
                                 "note": "new", "title": "L20"}
    assert t.inserted == [{"id": 31, "price": Decimal("1.50"), "note": "new", "title": "new"}]
    assert sorted(row["id"] for row in t.deleted) == [28, 29, 30]
    assert t.deleted[0].keys() == {"id", "price", "note", "title"}


def test_a_migration_rolled_back_leaves_the_log_as_it_was(db: SandboxDatabase,
                                                          kinds_dsn: str) -> None:
    with db.connect() as conn:
        conn.autocommit = False
        conn.execute("UPDATE shaped SET a = -a WHERE id <= 3")
        conn.commit()
        conn.execute("UPDATE shaped SET a = 0 WHERE id = 4")
        conn.execute("ALTER TABLE shaped ADD COLUMN gone int")
        conn.execute("UPDATE shaped SET gone = 1 WHERE id = 5")
        conn.rollback()
        conn.execute("UPDATE shaped SET label = 'kept' WHERE id = 6")
        conn.commit()
    delta = db.delta()
    assert sorted(u.key["id"] for u in delta.tables["public.shaped"].updated) == [1, 2, 3, 6]
    with psycopg.connect(kinds_dsn) as source, db.connect_as_owner() as sandbox:
        assert_delta_is_the_truth(delta, source, sandbox, "shaped", ["id"])


def test_rows_written_before_a_table_joins_a_partition_tree_are_the_trees(
        db: SandboxDatabase) -> None:
    run(db, "CREATE TABLE payments_2025 (LIKE payments)",
        "INSERT INTO payments_2025 VALUES (500, '2025-03-01', 5), (501, '2025-04-01', 6)",
        "ALTER TABLE payments ATTACH PARTITION payments_2025 "
        "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        "UPDATE payments SET amount = 50 WHERE id = 500",
        "INSERT INTO payments_2025 VALUES (502, '2025-05-01', 7)",
        "UPDATE payments_2024 SET amount = amount + 1 WHERE id <= 2")
    delta = db.delta()
    assert set(delta.tables) == {"public.payments"}, "one table, as the user thinks of it"
    t = delta.tables["public.payments"]
    assert t.counts() == {"inserted": 3, "updated": 2, "deleted": 0}
    assert {row["id"]: row["amount"] for row in t.inserted} == {500: 50, 501: 6, 502: 7}
    # Where the last statement named the partition, the row says so.
    assert t.partitions["public.payments_2025"]["inserted"] == 2
    assert t.partitions["public.payments_2024"]["updated"] == 2


def test_a_table_that_gains_an_inheritance_child_keeps_every_row(db: SandboxDatabase,
                                                                 kinds_dsn: str) -> None:
    run(db, "UPDATE parent SET v = -v WHERE id <= 2",
        "CREATE TABLE child (extra text) INHERITS (parent)",
        "INSERT INTO child VALUES (50, 5, 'e')",
        "UPDATE parent SET v = v * 10 WHERE id IN (2, 3, 50)",
        "DELETE FROM ONLY parent WHERE id = 10")
    delta = db.delta()
    parent = delta.tables["public.parent"]
    assert {u.key["id"]: (u.before["v"], u.after["v"]) for u in parent.updated} == {
        1: (1, -1), 2: (2, -20), 3: (3, 30)}
    assert [row["id"] for row in parent.deleted] == [10]
    assert delta.tables["public.child"].inserted == [{"id": 50, "v": 50, "extra": "e"}]


def test_a_dropped_table_is_the_drop_and_a_new_one_of_its_name_is_new(
        db: SandboxDatabase) -> None:
    run(db, "UPDATE shaped SET a = 0 WHERE id <= 5", "DROP TABLE shaped",
        "CREATE TABLE shaped (id int PRIMARY KEY, other text)",
        "INSERT INTO shaped VALUES (1, 'fresh')")
    delta = db.delta()
    assert delta.tables["public.shaped"].inserted == [{"id": 1, "other": "fresh"}]
    assert delta.tables["public.shaped"].rows == 1
    assert "public.shaped" in delta.dropped


def test_every_row_of_a_bulk_write_in_one_transaction_is_weighed_before_commit(
        db: SandboxDatabase) -> None:
    from harness.sandbox.capture import read_delta
    with db.connect() as conn:
        conn.autocommit = False
        conn.execute("UPDATE kinds SET n = n + 1")
        conn.execute("ALTER TABLE kinds ADD COLUMN extra int")
        conn.execute("UPDATE kinds SET extra = 1 WHERE id <= 5")
        conn.execute("INSERT INTO payments_2024 VALUES (900, '2024-06-01', 1)")
        inside = read_delta(conn, ddl=False)
        conn.rollback()
    assert inside.tables["public.kinds"].counts()["updated"] == 20
    assert inside.tables["public.payments"].counts()["inserted"] == 1
    assert db.delta().rows == 0


def test_the_agent_cannot_reach_or_depend_on_a_log(db: SandboxDatabase) -> None:
    with db.connect_as_owner() as owner:
        logs = [name for (name,) in owner.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'harness_capture_log' AND c.relkind = 'r'")]
        shapes = [name for (name,) in owner.execute(
            "SELECT format('%I.%I', n.nspname, t.typname) FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'harness_capture_log' AND t.typtype = 'c' "
            "AND t.typrelid IN (SELECT oid FROM pg_class WHERE relkind = 'c')")]
    assert logs and shapes
    for statement in [f"SELECT * FROM {logs[0]}", f"TRUNCATE {logs[0]}",
                      f"DROP TABLE {logs[0]}", f"CREATE TABLE mine (x {shapes[0]})",
                      f"CREATE TABLE mine2 (x {logs[0]})",
                      "CREATE TABLE harness_capture_log.planted (x int)",
                      "SELECT harness_capture.freeze(1, 1)",
                      "SELECT harness_capture.make_log(1)",
                      "DELETE FROM harness_capture.writers"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            run(db, statement)
    run(db, "UPDATE shaped SET a = 7 WHERE id = 1")
    assert db.delta().tables["public.shaped"].counts()["updated"] == 1


def test_a_table_without_columns_and_a_keyless_one_are_captured(db: SandboxDatabase) -> None:
    run(db, "CREATE TABLE empty ()", "INSERT INTO empty DEFAULT VALUES",
        "INSERT INTO empty DEFAULT VALUES",
        "CREATE TABLE bag (x int, y text)", "INSERT INTO bag VALUES (1, 'a'), (1, 'a')",
        "UPDATE bag SET y = 'b' WHERE ctid = (SELECT min(ctid) FROM bag)")
    delta = db.delta()
    assert delta.tables["public.empty"].counts()["inserted"] == 2
    assert Counter(json.dumps(r, sort_keys=True) for r in delta.tables["public.bag"].inserted
                   ) == Counter({'{"x": 1, "y": "a"}': 1, '{"x": 1, "y": "b"}': 1})


def test_every_level_and_schema_of_a_partition_tree_is_one_table(db: SandboxDatabase,
                                                                 kinds_dsn: str) -> None:
    run(db, "UPDATE events_2024 SET body = 'mid' WHERE id <= 4",  # a middle level
        "UPDATE archive.events_2024_b SET body = 'leaf' WHERE id = 5",  # another schema
        "DELETE FROM archive.events_old WHERE id = 17",
        "INSERT INTO events_2024_a VALUES (100, 2024, 'a', 'new')",
        "UPDATE events SET kind = 'b' WHERE id = 2")  # moves between leaves
    delta = db.delta()
    assert set(delta.tables) == {"public.events"}
    t = delta.tables["public.events"]
    assert t.counts() == {"inserted": 1, "updated": 5, "deleted": 1}
    assert t.partitions["public.events_2024"]["updated"] == 3
    assert t.partitions["archive.events_2024_b"]["updated"] == 1
    assert t.partitions["archive.events_old"]["deleted"] == 1
    assert t.partitions["public.events_2024_a"]["inserted"] == 1
    moved = [u for u in t.updated if u.key["id"] == 2]
    assert moved[0].before == {"id": 2, "year": 2024, "kind": "a", "body": "e2"}
    assert moved[0].after == {"id": 2, "year": 2024, "kind": "b", "body": "mid"}


def test_a_partitioned_table_renamed_is_one_table_under_its_new_name(
        db: SandboxDatabase) -> None:
    run(db, "UPDATE payments SET amount = 0 WHERE id = 1",
        "ALTER TABLE payments RENAME TO payouts",
        "UPDATE payouts SET amount = 1 WHERE id = 2",
        "UPDATE payments_2024 SET amount = 2 WHERE id = 3")
    delta = db.delta()
    assert set(delta.tables) == {"public.payouts"}
    t = delta.tables["public.payouts"]
    assert t.counts()["updated"] == 3 and t.aliases == ["public.payments"]


def test_a_write_naming_a_partition_counts_against_the_row_budget(
        kinds_dsn: str, tmp_path: Path) -> None:
    from harness.config import load_config
    from harness.episode import Episode
    from harness.fixtures import fixture_repo

    config = load_config({
        "orchestrator": {"blast_radius": {"max_database_rows": 10, "dry_run": True}},
        "target": {"repo": str(fixture_repo("shop")), "database": kinds_dsn},
        "observability": {"tracing": {"path": str(tmp_path)}}})
    with Episode(config) as episode:
        over = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "UPDATE payments_2024 SET amount = amount + 1 WHERE id <= 11"}})
        assert over.status == "refused" and "max_database_rows" in str(over.refusal)
        at = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "UPDATE events_2024 SET body = 'x' WHERE id <= 10"}})
        assert at.status == "ok", at.output  # ten rows, at the limit
        assert episode.sandbox.database is not None
        delta = episode.sandbox.database.delta()
    assert delta.rows == 10 and set(delta.tables) == {"public.events"}


# ------------------------------------------------------------------ a red team's inputs


def test_capture_cannot_be_switched_off_by_triggers_of_the_agents_own(
        db: SandboxDatabase) -> None:
    run(db, "CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql "
            "AS 'BEGIN RETURN NULL; END'",
        "CREATE TRIGGER harness_capture_zz AFTER INSERT ON parent "
        "FOR EACH STATEMENT EXECUTE FUNCTION noop()",
        "ALTER TABLE parent ENABLE ALWAYS TRIGGER harness_capture_zz",
        "ALTER TABLE parent DISABLE TRIGGER harness_capture_insert",
        "INSERT INTO parent SELECT g, g FROM generate_series(100, 199) g",
        "DROP TRIGGER harness_capture_truncate ON shaped",
        "TRUNCATE shaped",
        # A capture trigger renamed would capture every row twice.
        "CREATE TABLE bag (x int)",
        "ALTER TRIGGER harness_capture_insert ON bag RENAME TO kept",
        "INSERT INTO bag VALUES (1)")
    delta = db.delta()
    assert delta.tables["public.parent"].counts()["inserted"] == 100
    assert delta.tables["public.shaped"].counts()["deleted"] == 30
    assert delta.tables["public.bag"].inserted == [{"x": 1}]


def test_rows_written_across_changes_of_shape_net_as_they_happened(db: SandboxDatabase) -> None:
    run(db, "INSERT INTO shaped VALUES (100, 1, 1, 'gone')",
        "UPDATE shaped SET a = -1 WHERE id = 1",
        "CREATE TABLE fresh (id int PRIMARY KEY, v int, w int)",
        "INSERT INTO fresh SELECT g, g, g FROM generate_series(1, 30) g",
        "UPDATE fresh SET v = 0 WHERE id <= 20",
        "ALTER TABLE shaped ADD COLUMN note text",
        "ALTER TABLE fresh DROP COLUMN w",
        "DELETE FROM shaped WHERE id IN (1, 100)",
        "UPDATE fresh SET v = 1 WHERE id <= 24")
    delta = db.delta()
    shaped = delta.tables["public.shaped"]
    assert shaped.counts() == {"inserted": 0, "updated": 0, "deleted": 1}
    assert shaped.deleted == [{"id": 1, "a": 1, "price": 10, "label": "l1"}]
    fresh = delta.tables["public.fresh"]
    assert fresh.counts() == {"inserted": 30, "updated": 0, "deleted": 0}
    assert {row["id"]: row["v"] for row in fresh.inserted} == {
        **{i: 1 for i in range(1, 25)}, **{i: i for i in range(25, 31)}}


def test_a_primary_key_changed_in_the_episode_nets_rows_by_their_contents(
        db: SandboxDatabase) -> None:
    run(db, "DELETE FROM shaped WHERE id <= 4", "UPDATE shaped SET a = a + 1000 WHERE id > 26",
        "ALTER TABLE shaped DROP CONSTRAINT shaped_pkey",
        "ALTER TABLE shaped ADD COLUMN new_id bigserial PRIMARY KEY")
    t = db.delta().tables["public.shaped"]
    assert len(t.deleted) == 4 + 4 and len(t.inserted) == 4  # the updates: old out, new in
    assert sorted(row["a"] for row in t.inserted) == [1027, 1028, 1029, 1030]


def test_a_repeatable_read_writer_after_another_sessions_migration_is_captured(
        db: SandboxDatabase) -> None:
    with db.connect() as reader, db.connect() as migrator:
        reader.autocommit = False
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT 1")  # the snapshot is taken here
        migrator.execute("ALTER TABLE parent ADD COLUMN z int")
        reader.execute("INSERT INTO parent (id, v) VALUES (500, 5)")
        reader.execute("UPDATE parent SET v = 0 WHERE id = 1")
        reader.commit()
    t = db.delta().tables["public.parent"]
    assert t.inserted == [{"id": 500, "v": 5, "z": None}]
    assert [(u.before["v"], u.after["v"]) for u in t.updated] == [(1, 0)]


def _mutate_config(dsn: str, tmp_path: Path, rows: int) -> Any:
    from harness.config import load_config
    from harness.fixtures import fixture_repo

    return load_config({
        "orchestrator": {"blast_radius": {"max_database_rows": rows, "dry_run": True}},
        # A trigger whose function the guard cannot see would ask for approval: given here,
        # so that the budget is what is tested.
        "guardrails": {"builtin": {"sql.unknown-effect": "warn"}},
        "target": {"repo": str(fixture_repo("shop")), "database": dsn},
        "observability": {"tracing": {"path": str(tmp_path)}}})


def test_the_row_budget_cannot_be_fooled_by_the_agents_session(kinds_dsn: str,
                                                                tmp_path: Path) -> None:
    from harness.episode import Episode

    with Episode(_mutate_config(kinds_dsn, tmp_path, 10)) as episode:
        # Its own catalogue views, first on its search_path, answer the harness's questions.
        shadow = episode.act({"tool": "db_mutate", "parameters": {"sql": """
            CREATE INDEX parent_v ON parent (v);
            CREATE VIEW public.pg_index AS SELECT i.indrelid, true AS indisprimary, j.indkey
                FROM pg_catalog.pg_index i, pg_catalog.pg_index j
                WHERE j.indexrelid = 'public.parent_v'::regclass;
            SET search_path = public, pg_catalog;
            INSERT INTO parent SELECT g, 7 FROM generate_series(1000, 1099) g"""}})
        assert shadow.status == "refused" and shadow.output.get("rolled_back") is True
        # Rows a deferred trigger writes at COMMIT are weighed before it.
        deferred = episode.act({"tool": "db_mutate", "parameters": {"sql": """
            CREATE FUNCTION spill() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO shaped SELECT g, g, g, 'x' FROM generate_series(1000, 1499) g;
                  RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER spill AFTER INSERT ON parent
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION spill();
            INSERT INTO parent VALUES (2000, 1)"""}})
        assert deferred.status == "refused" and deferred.output.get("rolled_back") is True
        # A COMMIT inside the SQL would commit rows before they are weighed.
        committed = episode.act({"tool": "db_mutate", "parameters": {"sql": """
            INSERT INTO parent SELECT g, 1 FROM generate_series(3000, 3099) g; COMMIT;
            INSERT INTO parent VALUES (4000, 1)"""}})
        assert committed.status == "refused" and committed.refusal is not None
        assert "COMMIT" in committed.refusal.reason
        assert episode.sandbox.database is not None
        assert episode.sandbox.database.delta().rows == 0, "nothing got through"
        fine = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "SAVEPOINT a; INSERT INTO parent VALUES (5000, 1); ROLLBACK TO a; "
                   "INSERT INTO parent VALUES (5001, 1)"}})
        assert fine.status == "ok", fine.output
        assert episode.sandbox.database.delta().rows == 1


@pytest.fixture(scope="module")
def target_server_18(docker_client: object, harness_home: Path) -> Iterator[ServerAddress]:
    """A PostgreSQL 18 target: its sandboxes get a server of 18 too (virtual generated
    columns are new in 18)."""
    from harness.sandbox.postgres import DatabaseServer

    server = DatabaseServer(18, instance="target", settings={"max_prepared_transactions": "0"})
    address = server.ensure()
    yield address
    server.destroy()


def test_virtual_generated_columns_are_not_stored_so_in_no_image(
        target_server_18: ServerAddress) -> None:
    dsn = target_server_18.fresh_database("virtual", """
        CREATE TABLE v (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a * 2) VIRTUAL,
                        s int GENERATED ALWAYS AS (a * 3) STORED);
        INSERT INTO v (id, a) SELECT g, g FROM generate_series(1, 5) g;
        CREATE TABLE vp (id int, k int, g int GENERATED ALWAYS AS (k + 1) VIRTUAL,
                         PRIMARY KEY (id, k)) PARTITION BY LIST (k);
        CREATE TABLE vp_1 PARTITION OF vp FOR VALUES IN (1);
        CREATE TABLE vparent (id int PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a) VIRTUAL);
        CREATE TABLE vchild () INHERITS (vparent);""")
    server, baseline = open_baseline(dsn)
    db = SandboxDatabase(server, baseline, "tl-virtual").create()
    try:
        with db.connect_as_owner() as conn:
            assert conn.info.server_version // 10000 == 18
        run(db, "INSERT INTO v (id, a) VALUES (10, 10)", "UPDATE v SET a = 0 WHERE id = 1",
            "DELETE FROM v WHERE id = 2",
            "MERGE INTO v USING (SELECT 3 AS id) s ON v.id = s.id "
            "WHEN MATCHED THEN UPDATE SET a = 30",
            "INSERT INTO vp_1 (id, k) VALUES (1, 1)", "INSERT INTO vchild (id, a) VALUES (7, 7)")
        delta = db.delta()
    finally:
        db.drop()
    v = delta.tables["public.v"]
    assert v.inserted == [{"id": 10, "a": 10, "s": 30}]
    assert {u.key["id"]: u.after for u in v.updated} == {
        1: {"id": 1, "a": 0, "s": 0}, 3: {"id": 3, "a": 30, "s": 90}}
    assert v.deleted == [{"id": 2, "a": 2, "s": 6}]
    assert delta.tables["public.vp"].inserted == [{"id": 1, "k": 1}]
    assert delta.tables["public.vchild"].inserted == [{"id": 7, "a": 7}]


def test_the_harness_reads_never_run_the_agents_operators_as_the_superuser(
        db: SandboxDatabase) -> None:
    run(db, "CREATE TABLE escalations (who text, super boolean)",
        "CREATE FUNCTION public.hook(a oid, b regclass) RETURNS boolean LANGUAGE sql AS $$ "
        "INSERT INTO escalations SELECT current_user, rolsuper FROM pg_roles "
        "WHERE rolname = current_user RETURNING a = b::oid $$",
        "CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.hook)",
        "UPDATE parent SET v = 0 WHERE id = 1")
    delta = db.delta()
    assert delta.tables["public.parent"].counts()["updated"] == 1
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM escalations WHERE super").fetchone() == (0,)


def test_a_command_that_switches_capture_off_and_writes_is_refused_whole(
        db: SandboxDatabase) -> None:
    run(db, "CREATE FUNCTION fill(i int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
            "IF i = 1 THEN INSERT INTO parent SELECT g, g FROM generate_series(1000, 1999) g; "
            "END IF; RETURN true; END $$")
    for tamper in ("ENABLE REPLICA TRIGGER harness_capture_insert",
                   "DISABLE TRIGGER USER", "DISABLE TRIGGER harness_capture_insert"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="capture triggers"):
            run(db, f"ALTER TABLE parent {tamper}, ADD CONSTRAINT filled CHECK (fill(id))")
    # Switching them off alone is repaired at once; writes after it are captured.
    run(db, "ALTER TABLE parent DISABLE TRIGGER USER", "INSERT INTO parent VALUES (3000, 1)")
    assert db.delta().tables["public.parent"].counts()["inserted"] == 1


def test_a_keyless_row_reads_the_same_whichever_way_it_was_captured(
        db: SandboxDatabase) -> None:
    run(db, "CREATE TABLE nk (b text, a int)")
    with db.connect_as_owner() as conn:  # rows present at the start of the episode's log
        conn.execute("SELECT harness_capture.forget()")
    run(db, "INSERT INTO nk VALUES ('x', 1), ('y', 2)")
    with db.connect_as_owner() as conn:
        conn.execute("SELECT harness_capture.forget()")
    run(db, "INSERT INTO nk VALUES ('z', 3)", "TRUNCATE nk", "INSERT INTO nk VALUES ('x', 1)")
    t = db.delta().tables["public.nk"]
    assert (t.inserted, t.deleted) == ([], [{"a": 2, "b": "y"}])


def test_transaction_tricks_cannot_commit_rows_unweighed(kinds_dsn: str,
                                                         tmp_path: Path) -> None:
    from harness.episode import Episode

    with Episode(_mutate_config(kinds_dsn, tmp_path, 10)) as episode:
        off = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "SET standard_conforming_strings = off"}})
        assert off.status == "ok", off.output
        # With it off, the server would end the literal at \' and run the COMMIT the guard
        # read as a string; the harness reads and runs the SQL one way.
        smuggled = episode.act({"tool": "db_mutate", "parameters": {"sql": (
            "INSERT INTO parent SELECT g, 1 FROM generate_series(5000, 5499) g; "
            "SELECT 'a\\' ; SELECT '; COMMIT; SELECT 1; --'")}})
        assert smuggled.status == "refused"
        read = episode.act({"tool": "db_query", "parameters": {"sql": (
            "SELECT 'a\\' ; SELECT '; COMMIT; INSERT INTO parent VALUES (6000, 1); --'")}})
        assert read.status == "ok"
        plain = episode.act({"tool": "db_query", "parameters": {"sql": "COMMIT"}})
        assert plain.status == "refused"
        # A deferred trigger that defers another, which would write at COMMIT.
        chained = episode.act({"tool": "db_mutate", "parameters": {"sql": """
            CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO shaped SELECT g, g, g, 'x' FROM generate_series(1000, 1499) g;
                  RETURN NULL; END $$;
            CREATE FUNCTION defer_again() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN SET CONSTRAINTS ALL DEFERRED; INSERT INTO kinds (id) VALUES (9000);
                  RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER late AFTER INSERT ON kinds
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION late();
            CREATE CONSTRAINT TRIGGER first AFTER INSERT ON parent
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION defer_again();
            INSERT INTO parent VALUES (7000, 1)"""}})
        assert chained.status == "refused", chained.output
        assert episode.sandbox.database is not None
        assert episode.sandbox.database.delta().rows == 0, "nothing got through"
