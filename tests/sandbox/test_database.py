"""Database snapshots and exact row-delta capture, on real PostgreSQL servers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.sandbox import Sandbox
from harness.sandbox.capture import RowDelta
from harness.sandbox.database import SandboxDatabase, open_baseline
from harness.sandbox.postgres import ServerAddress
from harness.sandbox.snapshot import SnapshotError, Source, compare, table_fingerprints
from tests.fix_pg import CHINOOK, rows_of, run

PUBLIC = "-c search_path=public"
"""For the tests' own superuser reads of the user's tables by bare name (the harness's
reads resolve names in pg_catalog alone)."""

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

GENERATED = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
CREATE TABLE bag (x int, y text);
CREATE TABLE items_log (id serial PRIMARY KEY, item int REFERENCES items(id), note text);
INSERT INTO items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 40) g;
INSERT INTO pairs SELECT g % 5, chr(97 + g % 4), g FROM generate_series(1, 20) g
    ON CONFLICT DO NOTHING;
INSERT INTO bag SELECT g % 4, 'y' || (g % 3) FROM generate_series(1, 30) g;
INSERT INTO items_log (item, note) SELECT g, 'n' FROM generate_series(1, 10) g;
"""


@pytest.fixture(scope="module")
def generated_dsn(target_server: ServerAddress) -> str:
    return target_server.fresh_database("generated", GENERATED)


@pytest.fixture()
def sandbox_db(pg_server: ServerAddress, generated_dsn: str,
               request: pytest.FixtureRequest) -> Iterator[SandboxDatabase]:
    _, baseline = open_baseline(generated_dsn)
    db = SandboxDatabase(pg_server, baseline, f"t-{request.node.name[:30]}").create()
    try:
        yield db
    finally:
        db.drop()


def counts(delta: RowDelta) -> dict[str, dict[str, int]]:
    return delta.summary()["tables"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ snapshots


def test_chinook_loads_as_a_source_and_its_snapshot_verifies_equal(chinook_dsn: str) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "db", "verify", "--source",
                           chinook_dsn, "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["equal"] is True
    assert report["checked"] >= 11


def test_verify_notices_a_difference(chinook_dsn: str, pg_server: ServerAddress) -> None:
    _, baseline = open_baseline(chinook_dsn)
    clone = SandboxDatabase(pg_server, baseline, "diff-check").create()
    try:
        run(clone, "UPDATE artist SET name = 'changed' WHERE artist_id = 1")
        with psycopg.connect(chinook_dsn) as conn:
            source = table_fingerprints(conn)
        with clone.connect_as_owner(options=PUBLIC) as conn:
            snapshot = table_fingerprints(conn)
    finally:
        clone.drop()
    different = [c.table for c in compare(source, snapshot) if not c.equal]
    assert different == ["public.artist"]


def test_snapshot_copies_schema_data_sequences_and_constraints(
        generated_dsn: str, sandbox_db: SandboxDatabase) -> None:
    with sandbox_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (40,)
        assert conn.execute("SELECT nextval('items_log_id_seq')").fetchone() == (11,)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO items_log (item, note) VALUES (999, 'x')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO items VALUES (1, 'dup', 0)")


def test_baseline_is_cached_by_source_and_renewed_on_request(generated_dsn: str) -> None:
    _, first = open_baseline(generated_dsn, refresh=True)
    _, again = open_baseline(generated_dsn)
    assert (first.reused, again.reused) == (False, True)
    assert again.dbname == first.dbname and again.created_at == first.created_at
    _, renewed = open_baseline(generated_dsn, refresh=True)
    assert not renewed.reused and renewed.created_at > first.created_at


DRIFTS = [
    "UPDATE t SET v = 'changed' WHERE id = 1",
    "DELETE FROM t WHERE id = 2",
    "INSERT INTO t VALUES (100, 'new')",
    "TRUNCATE t2",
    "ALTER TABLE t ADD COLUMN extra int",
    "ALTER TABLE t DROP COLUMN extra",
    "CREATE INDEX t_v ON t (v)",
    "ALTER TABLE t ADD CONSTRAINT v_set CHECK (v IS NOT NULL)",
    "SELECT nextval('s')",
    "CREATE TABLE t3 (a int)",
    "CREATE VIEW t_view AS SELECT id FROM t",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2'",
]


def test_a_baseline_of_a_source_that_changed_since_is_rebuilt(target_server: ServerAddress) -> None:
    dsn = target_server.fresh_database("drifting", """
        CREATE TABLE t (id int PRIMARY KEY, v text);
        INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g;
        CREATE TABLE t2 (a int); INSERT INTO t2 VALUES (1);
        CREATE SEQUENCE s;""")
    first = open_baseline(dsn)[1]
    assert not first.reused and first.why_built
    assert open_baseline(dsn)[1].reused, "an unchanged source keeps its baseline"
    for drift in DRIFTS:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Statistics reach other sessions when the writer reports them: make it now.
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute(drift)  # type: ignore[arg-type]
        rebuilt = open_baseline(dsn)[1]
        assert not rebuilt.reused, drift
        assert rebuilt.why_built and rebuilt.why_built.startswith("the source has changed since")
        assert open_baseline(dsn)[1].reused, f"rebuilt once after {drift}"
    server, current = open_baseline(dsn)
    clone = SandboxDatabase(server, current, "t-drifted").create()
    try:
        with psycopg.connect(dsn) as source, clone.connect_as_owner(options=PUBLIC) as copy:
            assert table_fingerprints(source) == table_fingerprints(copy), "the copy is current"
    finally:
        clone.drop()


def test_sandboxes_opening_at_once_after_the_source_changed_build_one_baseline(
        target_server: ServerAddress) -> None:
    from concurrent.futures import ThreadPoolExecutor

    dsn = target_server.fresh_database("racing", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    open_baseline(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("INSERT INTO t VALUES (2)")
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: open_baseline(dsn)[1], range(4)))
    assert sorted(b.reused for b in opened) == [False, True, True, True]
    assert len({b.created_at for b in opened}) == 1, "all four got the one new baseline"


def test_a_baseline_can_be_kept_fixed_while_its_source_moves(target_server: ServerAddress) -> None:
    from harness.sandbox.settings import DatabaseSettings

    dsn = target_server.fresh_database("moving", "CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    fixed = DatabaseSettings(refresh_on_source_change=False)
    first = open_baseline(dsn, fixed)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("INSERT INTO t VALUES (2)")
    kept = open_baseline(dsn, fixed)[1]
    assert kept.reused and kept.created_at == first.created_at
    assert not open_baseline(dsn)[1].reused, "following the source again renews it"


def test_a_seed_file_is_a_source_and_chinook_switching_databases_works(tmp_path: Path) -> None:
    _, chinook = open_baseline(str(CHINOOK))
    assert (chinook.source_kind, chinook.tables, chinook.rows) == ("seed", 11, 15607)
    broken = tmp_path / "broken.sql"
    broken.write_text("CREATE TABLE t (a int);\nINSERT INTO nowhere VALUES (1);\n")
    with pytest.raises(SnapshotError, match="nowhere"):
        open_baseline(str(broken))
    with pytest.raises(SnapshotError, match="does not exist"):
        Source.parse(tmp_path / "absent.sql")


def test_writes_in_the_sandbox_never_reach_the_source(
        generated_dsn: str, sandbox_db: SandboxDatabase) -> None:
    with psycopg.connect(generated_dsn) as conn:
        before = table_fingerprints(conn)
    run(sandbox_db, "DELETE FROM items_log", "UPDATE items SET qty = 0 WHERE id < 20",
        "TRUNCATE bag", "CREATE TABLE scratch (a int)")
    with psycopg.connect(generated_dsn) as conn:
        assert table_fingerprints(conn) == before


# ------------------------------------------------------------------ isolation


def test_the_agent_role_cannot_remove_or_read_the_capture(sandbox_db: SandboxDatabase) -> None:
    for statement in ["DROP SCHEMA harness_capture CASCADE",
                      "DROP EVENT TRIGGER harness_capture_ddl",
                      "DROP FUNCTION harness_capture.on_change()",
                      "CREATE OR REPLACE FUNCTION harness_capture.on_change() RETURNS trigger "
                      "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
                      "SELECT * FROM harness_capture.changes",
                      "SET session_replication_role = replica"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            run(sandbox_db, statement)
    # It owns its tables and may alter them (migrations do); capture triggers it disables
    # or drops come back at the end of that very command.
    run(sandbox_db, "ALTER TABLE items ADD COLUMN note text",
        "ALTER TABLE items DISABLE TRIGGER USER", "DELETE FROM items WHERE id = 20",
        "CREATE TABLE mine (id int PRIMARY KEY)", "CREATE INDEX mine_idx ON mine (id)",
        "ALTER TABLE mine DISABLE TRIGGER USER", "INSERT INTO mine VALUES (1)",
        "DROP TRIGGER harness_capture_insert ON mine", "INSERT INTO mine VALUES (2)")
    assert counts(sandbox_db.delta()) == {
        "public.mine": {"inserted": 2, "updated": 0, "deleted": 0},
        "public.items": {"inserted": 0, "updated": 0, "deleted": 1}}


def test_the_agent_role_cannot_spill_more_than_the_temp_file_limit(
        sandbox_db: SandboxDatabase) -> None:
    with sandbox_db.connect() as conn:
        assert conn.execute("SHOW temp_file_limit").fetchone() == ("1GB",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET temp_file_limit = -1")


def test_the_agent_role_weighs_its_own_open_transaction(sandbox_db: SandboxDatabase) -> None:
    from harness.sandbox.capture import read_delta

    with sandbox_db.connect(autocommit=False) as conn:
        conn.execute("DELETE FROM items WHERE id > 30")
        assert read_delta(conn, ddl=False).rows == 10, "its uncommitted rows count"
        conn.rollback()
    assert sandbox_db.delta().rows == 0


def test_capture_is_invisible_to_normal_queries(sandbox_db: SandboxDatabase) -> None:
    with sandbox_db.connect() as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')")}
    assert tables == {"public"}


def test_a_sandbox_role_reaches_only_its_own_database(
        sandbox_db: SandboxDatabase, pg_server: ServerAddress) -> None:
    other = SandboxDatabase(pg_server, sandbox_db.baseline, "other").create()
    try:
        for dbname in [other.name, sandbox_db.baseline.dbname, "postgres"]:
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(host=str(pg_server.socket_dir), dbname=dbname,
                                user=sandbox_db.role, password=sandbox_db.password).close()
    finally:
        other.drop()


# ------------------------------------------------------------------ capture


def test_insert_then_delete_nets_to_nothing_and_updates_net_to_one(
        sandbox_db: SandboxDatabase) -> None:
    run(sandbox_db,
        "INSERT INTO items VALUES (100, 'new', 1)", "DELETE FROM items WHERE id = 100",
        "UPDATE items SET qty = 1 WHERE id = 5", "UPDATE items SET qty = 2 WHERE id = 5",
        "UPDATE items SET name = 'renamed' WHERE id = 5",
        "UPDATE items SET qty = qty WHERE id = 6")
    delta = sandbox_db.delta()
    assert counts(delta) == {"public.items": {"inserted": 0, "updated": 1, "deleted": 0}}
    update = delta.tables["public.items"].updated[0]
    assert update.key == {"id": 5}
    assert update.before == {"id": 5, "name": "item 5", "qty": 5}
    assert update.after == {"id": 5, "name": "renamed", "qty": 2}
    assert update.changed == ["name", "qty"]


def test_a_rolled_back_transaction_counts_nothing(sandbox_db: SandboxDatabase) -> None:
    with sandbox_db.connect(autocommit=False) as conn:
        conn.execute("DELETE FROM items_log")
        conn.rollback()
    assert sandbox_db.delta().rows == 0


def test_truncate_and_tables_without_a_key(sandbox_db: SandboxDatabase) -> None:
    run(sandbox_db, "TRUNCATE items_log", "DELETE FROM bag WHERE x = 0",
        "INSERT INTO bag VALUES (9, 'z'), (9, 'z')", "UPDATE bag SET y = 'q' WHERE x = 1")
    delta = sandbox_db.delta()
    assert counts(delta)["public.items_log"] == {"inserted": 0, "updated": 0, "deleted": 10}
    bag = delta.tables["public.bag"]
    assert bag.key == []
    moved = 8  # the rows with x = 1 show as deleted and inserted (whole-row identity)
    assert len(bag.inserted) == 2 + moved
    assert len(bag.deleted) == 7 + moved


def test_a_changed_primary_key_is_a_delete_and_an_insert(sandbox_db: SandboxDatabase) -> None:
    run(sandbox_db, "UPDATE pairs SET a = 99 WHERE a = 1 AND b = 'b'")
    delta = sandbox_db.delta()
    assert counts(delta) == {"public.pairs": {"inserted": 1, "updated": 0, "deleted": 1}}
    assert delta.tables["public.pairs"].key == ["a", "b"]


def test_ddl_is_recorded_in_order(sandbox_db: SandboxDatabase) -> None:
    run(sandbox_db, "CREATE TABLE t1 (id int PRIMARY KEY)", "CREATE INDEX t1_idx ON t1 (id)",
        "DROP TABLE t1")
    assert sandbox_db.delta().summary()["ddl"] == [
        "CREATE TABLE t1 (id int PRIMARY KEY)", "CREATE INDEX t1_idx ON t1 (id)",
        "DROP TABLE t1"]


_TABLES = ["items", "pairs", "bag"]
_ops = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(_TABLES), st.integers(0, 120),
              st.integers(0, 9)),
    st.tuples(st.just("update"), st.sampled_from(_TABLES), st.integers(0, 120),
              st.integers(0, 9)),
    st.tuples(st.just("delete"), st.sampled_from(_TABLES), st.integers(0, 120),
              st.integers(0, 9)),
    st.tuples(st.just("rekey"), st.sampled_from(["items", "pairs"]), st.integers(0, 120),
              st.integers(0, 9)),
    st.tuples(st.just("truncate"), st.sampled_from(["bag", "pairs"]), st.just(0), st.just(0)),
)


def _statement(op: str, table: str, n: int, m: int) -> str:
    statements = {
        ("insert", "items"): f"INSERT INTO items VALUES ({n}, 'i{m}', {m}) ON CONFLICT DO NOTHING",
        ("insert", "pairs"): f"INSERT INTO pairs VALUES ({n % 9}, 'k{m}', {n}) "
                             "ON CONFLICT DO NOTHING",
        ("insert", "bag"): f"INSERT INTO bag VALUES ({m % 4}, 'y{m % 3}')",
        ("update", "items"): f"UPDATE items SET qty = {m}, name = name || '+' "
                             f"WHERE id BETWEEN {n} AND {n + m}",
        ("update", "pairs"): f"UPDATE pairs SET v = v + {m} WHERE a = {n % 9}",
        ("update", "bag"): f"UPDATE bag SET y = 'u{m}' WHERE x = {n % 4}",
        ("delete", "items"): f"DELETE FROM items WHERE id BETWEEN {n} AND {n + m} AND id > 10",
        ("delete", "pairs"): f"DELETE FROM pairs WHERE v % 10 = {m}",
        ("delete", "bag"): f"DELETE FROM bag WHERE x = {n % 4} AND y = 'y{m % 3}'",
        ("rekey", "items"): f"UPDATE items SET id = id + 1000 WHERE id BETWEEN {n} AND {n + m} "
                            "AND id > 10",
        ("rekey", "pairs"): f"UPDATE pairs SET a = a + 100 WHERE a = {n % 9}",
    }
    return statements.get((op, table), f"TRUNCATE {table}")


def _true_diff(before: list[dict[str, Any]], after: list[dict[str, Any]], key: list[str]
               ) -> tuple[Counter[str], Counter[str], Counter[str]]:
    def enc(row: dict[str, Any]) -> str:
        return json.dumps(row, sort_keys=True)

    if not key:
        b, a = Counter(map(enc, before)), Counter(map(enc, after))
        return a - b, Counter(), b - a
    old = {tuple(r[c] for c in key): r for r in before}
    new = {tuple(r[c] for c in key): r for r in after}
    inserted = Counter(enc(new[k]) for k in new.keys() - old.keys())
    deleted = Counter(enc(old[k]) for k in old.keys() - new.keys())
    updated = Counter(enc(new[k]) for k in new.keys() & old.keys() if new[k] != old[k])
    return inserted, updated, deleted


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(_ops, min_size=1, max_size=12))
@example(operations=[("rekey", "items", 2, 9), ("insert", "items", 11, 0),
                     ("rekey", "items", 2, 9)])  # the second re-key fails: nothing is recorded
def test_captured_delta_equals_the_true_difference(
        operations: list[tuple[str, str, int, int]], pg_server: ServerAddress,
        generated_dsn: str) -> None:
    _, baseline = open_baseline(generated_dsn)
    db = SandboxDatabase(pg_server, baseline, "property").create()
    try:
        with db.connect_as_owner(options=PUBLIC) as conn:
            before = {t: rows_of(conn, t) for t in _TABLES}
        with db.connect() as conn:
            for operation in operations:
                # A statement may fail (a re-keyed id meets one inserted since): it changes
                # nothing, and the capture must record nothing of it either.
                with contextlib.suppress(psycopg.errors.IntegrityError), conn.transaction():
                    conn.execute(_statement(*operation))  # type: ignore[arg-type]
        with db.connect_as_owner(options=PUBLIC) as conn:
            after = {t: rows_of(conn, t) for t in _TABLES}
        delta = db.delta()
    finally:
        db.drop()
    keys = {"items": ["id"], "pairs": ["a", "b"], "bag": []}
    for table in _TABLES:
        inserted, updated, deleted = _true_diff(before[table], after[table], keys[table])
        captured = delta.tables.get(f"public.{table}")
        enc = lambda rows: Counter(json.dumps(r, sort_keys=True) for r in rows)  # noqa: E731
        assert enc(captured.inserted if captured else []) == inserted, table
        assert enc([u.after for u in captured.updated] if captured else []) == updated, table
        assert enc(captured.deleted if captured else []) == deleted, table


# ------------------------------------------------------------------ with a container


def test_the_agent_container_reaches_its_database_through_the_socket(
        shop_repo: Path, generated_dsn: str, agent_image: str) -> None:
    with Sandbox(shop_repo, database=generated_dsn) as sandbox:
        result = sandbox.exec("psql -tA -c 'SELECT count(*) FROM items' && "
                              "psql -c \"UPDATE items SET qty = 0 WHERE id <= 3\" && "
                              "python3 -c 'import os; print(os.environ[\"DATABASE_URL\"][:13])' && "
                              "psql -d postgres -c 'select 1' 2>&1 | tail -1")
        assert result.stdout.splitlines()[:3] == ["40", "UPDATE 3", "postgresql://"]
        assert "does not have CONNECT privilege" in result.stdout
        assert sandbox.exec("touch /var/run/postgresql/x").exit_code != 0
        delta = sandbox.row_delta()
        assert delta is not None
        assert counts(delta) == {"public.items": {"inserted": 0, "updated": 3, "deleted": 0}}
        name = sandbox.database.name if sandbox.database else ""
    with psycopg.connect(generated_dsn) as conn:
        assert conn.execute("SELECT sum(qty) FROM items").fetchone() == (sum(g % 7 for g in
                                                                             range(1, 41)),)
    assert name.startswith("sb_")


def test_exec_with_db_reports_the_row_delta(shop_repo: Path, generated_dsn: str,
                                            agent_image: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "exec", "--repo", str(shop_repo), "--db",
         generated_dsn, "--json", "--", "psql -c 'DELETE FROM bag WHERE x = 2'"],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["row_delta"]["tables"] == {
        "public.bag": {"inserted": 0, "updated": 0, "deleted": 8}}
    assert report["row_delta"]["total"]["rows"] == 8
    assert generated_dsn.split("password=")[-1].split()[0] not in done.stdout
