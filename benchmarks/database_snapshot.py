"""Database snapshots and change capture.

Figures: baseline creation, the check that a cached baseline still matches its live
source (against the rebuild it saves), and per-sandbox clone time for Chinook and for a
generated database of --size-gb; delta computation for 10 changed rows in a 1,000,000-row
table against a full-table diff of the same table (target: at least 100x faster); the
write cost of capture: a bulk INSERT, UPDATE and DELETE of --rows rows (100k) with and
without it, and on a partitioned table an UPDATE through the partitioned root and one
naming the partition, each against the same statement on a copy without capture on the
same server, and (`transition_tables_only`, `floor_ratio`) on a copy whose statement
triggers keep transition tables and do nothing: the floor of any capture by statement
trigger. `--parts write` runs only the write-cost figures.

The target databases live on a separate PostgreSQL server of the same image and
settings (the "real system"), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.fixtures import fixtures_root
from harness.sandbox.database import SandboxDatabase, open_baseline, probe_source
from harness.sandbox.postgres import DatabaseServer, ServerAddress
from harness.sandbox.snapshot import Source

CHINOOK = fixtures_root() / "datasets" / "chinook" / "chinook_postgresql.sql"
ROWS = 1_000_000


def chinook(target: ServerAddress) -> str:
    target.run_script(CHINOOK)
    return target.conninfo("chinook")


def fresh(target: ServerAddress, name: str, setup: str) -> str:
    dsn = target.fresh_database(name, setup)
    with target.connect(name) as conn:
        conn.execute("VACUUM ANALYZE")
    return dsn


def snapshot_figures(dsn: str, runs: int) -> dict[str, object]:
    build_s = timed(lambda: open_baseline(dsn, refresh=True))
    server, baseline = open_baseline(dsn)
    source = Source.parse(dsn)
    checks = [timed(lambda: probe_source(source)) for _ in range(runs)]
    reuses = [timed(lambda: open_baseline(dsn)) for _ in range(runs)]
    assert open_baseline(dsn)[1].reused
    clones = []
    drops = []
    for index in range(runs):
        db = SandboxDatabase(server, baseline, f"bench-{index}")
        clones.append(timed(db.create))
        drops.append(timed(db.drop))
    check = summary(checks)
    return {"rows": baseline.rows, "baseline_build_s": round(build_s, 3),
            "source_change_check": check,
            "open_reusing_the_checked_baseline": summary(reuses),
            "ratio_rebuild_to_check": round(build_s * 1000 / check["median_ms"], 1),
            "clone": summary(clones), "drop": summary(drops)}


def delta_figures(target: ServerAddress, runs: int) -> dict[str, object]:
    dsn = fresh(target, "bench_delta", f"""
        CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL);
        INSERT INTO t SELECT g, g % 1000, md5(g::text) FROM generate_series(1, {ROWS}) g;
        CREATE TABLE t_before AS TABLE t;
        ALTER TABLE t_before ADD PRIMARY KEY (id);""")
    server, baseline = open_baseline(dsn, refresh=True)
    db = SandboxDatabase(server, baseline, "bench-delta").create()
    try:
        with db.connect() as conn:
            conn.execute("UPDATE t SET a = a + 1 WHERE id % 100000 = 7")
        full_diff = """
            SELECT count(*) FROM t FULL OUTER JOIN t_before b USING (id)
            WHERE t.id IS NULL OR b.id IS NULL OR (t.a, t.b) IS DISTINCT FROM (b.a, b.b)"""
        with db.connect_as_owner() as conn:
            assert conn.execute(full_diff).fetchone() == (10,)
            full = [timed(lambda: conn.execute(full_diff).fetchall()) for _ in range(runs)]
        assert db.delta().rows == 10
        captured = [timed(db.delta) for _ in range(runs)]
    finally:
        db.drop()
    capture_s, full_s = summary(captured), summary(full)
    return {"table_rows": ROWS, "changed_rows": 10, "capture_delta": capture_s,
            "full_table_diff": full_s,
            "ratio_full_diff_to_capture_median": round(full_s["median_ms"] /
                                                       capture_s["median_ms"], 1),
            "target": "capture delta at least 100x faster than the full-table diff"}


_FLOOR_TRIGGERS = """
CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER i AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION nothing();
CREATE TRIGGER u AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows
    NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION nothing();
CREATE TRIGGER d AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION nothing();
"""
"""Statement triggers that keep the transition tables and do nothing with them: what any
capture by statement trigger pays before it copies a row (the floor of this design)."""


def _cost(plain: Any, captured: Any, owner_of: Any, work: str, undo: str,
          runs: int, rows: int, logged: int | None, floor: Any = None) -> dict[str, object]:
    """The median and p95 of `work` on a database without capture and on a sandbox copy
    with it (same server, same data), `undo` putting the rows back between runs; with
    `floor`, also on a copy whose triggers only keep the transition tables."""
    without, with_capture, at_floor = [], [], []
    for _ in range(runs):
        without.append(timed(lambda: plain.execute(work)))
        plain.execute(undo)
        plain.execute("VACUUM")
        if floor is not None:
            at_floor.append(timed(lambda: floor.execute(work)))
            floor.execute(undo)
            floor.execute("VACUUM")
        with_capture.append(timed(lambda: captured.execute(work)))
        with owner_of() as owner:
            if logged is not None:
                recorded = owner.execute("SELECT count(*) FROM harness_capture.recorded_changes()"
                                         ).fetchone()
                assert recorded == (logged,), f"every row captured: {recorded}"
            captured.execute(undo)
            owner.execute("SELECT harness_capture.forget()")  # the log starts empty each run
            owner.execute("VACUUM")
    a, b = summary(without), summary(with_capture)
    figures: dict[str, object] = {
        "without_capture": a, "with_capture": b,
        "rows_per_s_without": round(rows / (a["median_ms"] / 1000)),
        "rows_per_s_with": round(rows / (b["median_ms"] / 1000)),
        "overhead_ratio": round(b["median_ms"] / a["median_ms"], 2)}
    if at_floor:
        c = summary(at_floor)
        figures.update(transition_tables_only=c,
                       floor_ratio=round(c["median_ms"] / a["median_ms"], 2))
    return figures


def write_cost(target: ServerAddress, rows: int, runs: int) -> dict[str, object]:
    """Bulk INSERT, UPDATE and DELETE of `rows` rows, with and without capture, both on
    the sandbox server."""
    setup = f"""CREATE TABLE w (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL,
                                at timestamptz NOT NULL DEFAULT '2024-01-01', n numeric);
                INSERT INTO w SELECT g, 0, md5(g::text), '2024-01-01', g / 7.0
                FROM generate_series(1, {rows}) g;"""
    dsn = fresh(target, "bench_write", setup)
    server, baseline = open_baseline(dsn, refresh=True)
    plain_name, floor_name = "bench_write_plain", "bench_write_floor"
    server.fresh_database(plain_name, setup)
    server.fresh_database(floor_name, setup + _FLOOR_TRIGGERS.format(table="w"))
    db = SandboxDatabase(server, baseline, "bench-write").create()
    statements = {
        "insert": (f"INSERT INTO w SELECT g, 0, md5(g::text), '2024-01-01', g / 7.0 "
                   f"FROM generate_series({rows} + 1, {2 * rows}) g",
                   f"DELETE FROM w WHERE id > {rows}", rows),
        "update": ("UPDATE w SET a = a + 1", "SELECT 1", 2 * rows),
        "delete": (f"DELETE FROM w WHERE id <= {rows}",
                   f"INSERT INTO w SELECT g, 0, md5(g::text), '2024-01-01', g / 7.0 "
                   f"FROM generate_series(1, {rows}) g", rows),
    }
    figures: dict[str, object] = {"rows": rows}
    try:
        with server.connect(plain_name, autocommit=True) as plain, \
                server.connect(floor_name, autocommit=True) as floor, \
                db.connect() as captured:
            for name, (work, undo, logged) in statements.items():
                figures[name] = _cost(plain, captured, db.connect_as_owner, work, undo,
                                      runs, rows, logged, floor)
    finally:
        db.drop()
        with server.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {plain_name}")
            conn.execute(f"DROP DATABASE IF EXISTS {floor_name}")
    return figures


def partitioned_write_cost(target: ServerAddress, rows: int, runs: int) -> dict[str, object]:
    """A bulk UPDATE through the partitioned root and naming the partition, with and without
    capture, both on the sandbox server."""
    setup = f"""CREATE TABLE pw (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL)
                    PARTITION BY RANGE (id);
                CREATE TABLE pw_1 PARTITION OF pw FOR VALUES FROM (1) TO ({rows + 1});
                CREATE TABLE pw_2 PARTITION OF pw FOR VALUES FROM ({rows + 1}) TO (MAXVALUE);
                INSERT INTO pw SELECT g, 0, md5(g::text) FROM generate_series(1, {2 * rows}) g;"""
    dsn = fresh(target, "bench_partitioned", setup)
    server, baseline = open_baseline(dsn, refresh=True)
    plain_name = "bench_partitioned_plain"
    server.fresh_database(plain_name, setup)
    db = SandboxDatabase(server, baseline, "bench-partitioned").create()
    statements = {"through_the_root": f"UPDATE pw SET a = a + 1 WHERE id <= {rows}",
                  "naming_the_partition": "UPDATE pw_1 SET a = a + 1"}
    figures: dict[str, object] = {"rows_updated": rows}
    try:
        with server.connect(plain_name, autocommit=True) as plain, db.connect() as captured:
            for name, update in statements.items():
                figures[name] = _cost(plain, captured, db.connect_as_owner, update,
                                      "SELECT 1", runs, rows, 2 * rows)
    finally:
        db.drop()
        with server.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {plain_name}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100_000,
                        help="rows each bulk write of the capture-cost figures touches")
    parser.add_argument("--parts", choices=["all", "write"], default="all")
    args = parser.parse_args()
    target_server = DatabaseServer(15, instance="bench-target")
    target = target_server.ensure()
    results: dict[str, object] = {}
    try:
        if args.parts == "write":
            results["capture_write_cost"] = write_cost(target, args.rows, 5)
            results["capture_write_cost_partitioned"] = partitioned_write_cost(
                target, args.rows, 5)
            return
        results["chinook"] = snapshot_figures(chinook(target), args.runs)
        rows = int(args.size_gb * 1024 ** 3 / 140)  # ~140 bytes a row on disk with its index
        generated = fresh(target, "bench_generated", f"""
            CREATE TABLE big (id bigint PRIMARY KEY, a int, b text, c text);
            INSERT INTO big SELECT g, g % 977, md5(g::text), md5((g * 7)::text)
            FROM generate_series(1, {rows}) g;""")
        with target.connect("bench_generated") as conn:
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))"
                                ).fetchone()
        results["generated"] = {"size": size[0] if size else "?",
                                **snapshot_figures(generated, min(args.runs, 5))}
        results["delta_10_of_1m_rows"] = delta_figures(target, args.runs)
        results["capture_write_cost"] = write_cost(target, args.rows, 5)
        results["capture_write_cost_partitioned"] = partitioned_write_cost(target, args.rows, 5)
    finally:
        target_server.destroy()
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
