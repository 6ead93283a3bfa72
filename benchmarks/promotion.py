"""Promotion time for 10, 1,000 and 100,000 changed rows (rows/s), and the cost of the
optimistic-concurrency check against a blind apply of the same rows, measured in the
same run. The target is a separate PostgreSQL server of the same image (removed after)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.changeset import ChangeSet
from harness.config import parse_config
from harness.promote import promote
from harness.promote import rows as apply
from harness.sandbox.database import SandboxDatabase, open_baseline
from harness.sandbox.postgres import DatabaseServer
from harness.sandbox.workspace import WorkspaceChanges

TABLE_ROWS = 200_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    target_server = DatabaseServer(15, instance="bench-promo")
    target = target_server.ensure()
    results: dict[str, object] = {}
    try:
        for changed in (10, 1_000, 100_000):
            dsn = target.fresh_database("promo", f"""
                CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL);
                INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, {TABLE_ROWS}) g;""")
            server, baseline = open_baseline(dsn, refresh=True)
            sandbox = SandboxDatabase(server, baseline, f"bench-promo-{changed}").create()
            try:
                with sandbox.connect() as conn:
                    conn.execute(f"UPDATE t SET a = a + 1 WHERE id <= {changed}")
                delta = sandbox.delta()
            finally:
                sandbox.drop()
            assert delta.rows == changed
            changeset = ChangeSet("bench", WorkspaceChanges("x", "x"), delta)
            config = parse_config(f"orchestrator:\n  blast_radius: {{max_database_rows: "
                                  f"{changed}, dry_run: false}}\ntarget:\n  database: '{dsn}'\n")
            table = delta.tables["public.t"]
            import psycopg

            checks, blind = [], []
            with psycopg.connect(dsn) as conn:
                for _ in range(args.runs):
                    checks.append(timed(lambda t=table: apply._check(conn, t)))
                    blind.append(timed(lambda t=table: apply._update(conn, t)))
                    conn.rollback()
            promotions = []
            for index in range(args.runs):
                if index:  # put the rows back so the next promotion finds the snapshot's state
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute(f"UPDATE t SET a = 0 WHERE id <= {changed}")
                started = time.perf_counter()
                outcome = promote(changeset, config).outcome
                promotions.append(time.perf_counter() - started)
                assert outcome == "promoted", outcome
            promoted = summary(promotions)
            check, blind_s = summary(checks), summary(blind)
            results[f"{changed}_rows"] = {
                "promotion": promoted,
                "rows_per_s": round(changed / (promoted["median_ms"] / 1000)),
                "conflict_check": check, "blind_apply": blind_s,
                "check_to_blind_apply_ratio": round(check["median_ms"] / blind_s["median_ms"],
                                                    2),
            }
    finally:
        target_server.destroy()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
