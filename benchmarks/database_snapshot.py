"""Database snapshots and change capture.

Figures: baseline creation, the check that a cached baseline still matches its live
source (against the rebuild it saves), and per-sandbox clone time for Chinook and for a
generated database of --size-gb; delta computation for 10 changed rows in a 1,000,000-row table
against a full-table diff of the same table (target: at least 100x faster); the write
cost of capture (rows/s of a bulk UPDATE with and without it), on a plain table and on a
partitioned one (100k rows updated through the partitioned root, and directly by naming
the partition). `--parts write` runs only the write-cost figures.

The target databases live on a separate PostgreSQL server of the same image and
settings (the "real system"), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def write_cost(target: ServerAddress, rows: int, runs: int) -> dict[str, object]:
    setup = f"""CREATE TABLE w (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL);
                INSERT INTO w SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g;"""
    dsn = fresh(target, "bench_write", setup)
    server, baseline = open_baseline(dsn, refresh=True)
    db = SandboxDatabase(server, baseline, "bench-write").create()
    update = "UPDATE w SET a = a + 1"
    try:
        with target.connect("bench_write") as plain, db.connect() as captured:
            without = [timed(lambda: plain.execute(update)) for _ in range(runs)]
            with_capture = []
            for _ in range(runs):
                with_capture.append(timed(lambda: captured.execute(update)))
                with db.connect_as_owner() as owner:  # keep the log from growing across runs
                    owner.execute("TRUNCATE harness_capture.changes")
    finally:
        db.drop()
    a, b = summary(without), summary(with_capture)
    return {"rows_updated": rows, "without_capture": a, "with_capture": b,
            "rows_per_s_without": round(rows / (a["median_ms"] / 1000)),
            "rows_per_s_with": round(rows / (b["median_ms"] / 1000)),
            "overhead_ratio": round(b["median_ms"] / a["median_ms"], 2)}


def partitioned_write_cost(target: ServerAddress, rows: int, runs: int) -> dict[str, object]:
    setup = f"""CREATE TABLE pw (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL)
                    PARTITION BY RANGE (id);
                CREATE TABLE pw_1 PARTITION OF pw FOR VALUES FROM (1) TO ({rows + 1});
                CREATE TABLE pw_2 PARTITION OF pw FOR VALUES FROM ({rows + 1}) TO (MAXVALUE);
                INSERT INTO pw SELECT g, 0, md5(g::text) FROM generate_series(1, {2 * rows}) g;"""
    dsn = fresh(target, "bench_partitioned", setup)
    server, baseline = open_baseline(dsn, refresh=True)
    db = SandboxDatabase(server, baseline, "bench-partitioned").create()
    statements = {"through_the_root": f"UPDATE pw SET a = a + 1 WHERE id <= {rows}",
                  "naming_the_partition": "UPDATE pw_1 SET a = a + 1"}
    figures: dict[str, object] = {"rows_updated": rows}
    try:
        with target.connect("bench_partitioned") as plain, db.connect() as captured:
            for name, update in statements.items():
                without = [timed(lambda u=update: plain.execute(u)) for _ in range(runs)]
                with_capture = []
                for _ in range(runs):
                    with_capture.append(timed(lambda u=update: captured.execute(u)))
                    with db.connect_as_owner() as owner:
                        assert owner.execute("SELECT count(*) FROM harness_capture.changes"
                                             ).fetchone() == (2 * rows,), "every row captured"
                        owner.execute("TRUNCATE harness_capture.changes")
                a, b = summary(without), summary(with_capture)
                figures[name] = {"without_capture": a, "with_capture": b,
                                 "rows_per_s_without": round(rows / (a["median_ms"] / 1000)),
                                 "rows_per_s_with": round(rows / (b["median_ms"] / 1000)),
                                 "overhead_ratio": round(b["median_ms"] / a["median_ms"], 2)}
    finally:
        db.drop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parts", choices=["all", "write"], default="all")
    args = parser.parse_args()
    target_server = DatabaseServer(15, instance="bench-target")
    target = target_server.ensure()
    results: dict[str, object] = {}
    try:
        if args.parts == "write":
            results["capture_write_cost"] = write_cost(target, 100_000, 5)
            results["capture_write_cost_partitioned"] = partitioned_write_cost(
                target, 100_000, 5)
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
        results["capture_write_cost"] = write_cost(target, 100_000, 5)
        results["capture_write_cost_partitioned"] = partitioned_write_cost(target, 100_000, 5)
    finally:
        target_server.destroy()
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
