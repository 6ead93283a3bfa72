"""Promotion time for 10, 1,000 and 100,000 changed rows (rows/s) with each protocol
(single-phase on a stock server, two-phase on one that allows prepared transactions), each
against a blind apply of the same rows (one UPDATE from the images, committed, no checks,
no journal) measured in the same run. The targets are separate PostgreSQL servers of the
same image (removed after)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary

from harness.changeset import ChangeSet
from harness.config import load_config
from harness.promote import promote
from harness.promote import rows as apply
from harness.sandbox.database import SandboxDatabase, open_baseline
from harness.sandbox.postgres import DatabaseServer, ServerAddress
from harness.sandbox.workspace import WorkspaceChanges

TABLE_ROWS = 200_000
SETUP = f"""
    CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL);
    INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, {TABLE_ROWS}) g;"""


def figures(target: ServerAddress, protocol: str, changed: int, runs: int) -> dict[str, object]:
    dsn = target.fresh_database("promo", SETUP)
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
    config = load_config({"orchestrator": {"blast_radius": {"max_database_rows": changed,
                                                            "dry_run": False}},
                          "target": {"database": dsn},
                          "promotion": {"atomicity": protocol}})
    table = delta.tables["public.t"]
    info = None
    reset = f"UPDATE t SET a = 0 WHERE id <= {changed}"
    blind, promotions = [], []
    with psycopg.connect(dsn, autocommit=True) as plain:
        for _ in range(runs):
            with psycopg.connect(dsn) as conn:
                info = info or apply._describe(conn, "public.t")
                started = time.perf_counter()
                apply._update(conn, table, info, False)
                conn.commit()
                blind.append(time.perf_counter() - started)
            plain.execute(reset)
            started = time.perf_counter()
            result = promote(changeset, config)
            promotions.append(time.perf_counter() - started)
            assert (result.outcome, result.protocol) == ("promoted", protocol), result
            plain.execute(reset)
    promoted, blind_s = summary(promotions), summary(blind)
    return {"promotion": promoted, "rows_per_s": round(changed / (promoted["median_ms"] / 1000)),
            "blind_apply": blind_s,
            "promotion_to_blind_apply_ratio": round(promoted["median_ms"] /
                                                    blind_s["median_ms"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    servers = {"single-phase": DatabaseServer(15, instance="bench-promo",
                                              settings={"max_prepared_transactions": "0"}),
               "two-phase": DatabaseServer(15, instance="bench-promo-2pc",
                                           settings={"max_prepared_transactions": "8"})}
    results: dict[str, object] = {}
    try:
        for protocol, server in servers.items():
            target = server.ensure()
            results[protocol] = {f"{changed}_rows": figures(target, protocol, changed,
                                                            args.runs if changed < 100_000
                                                            else max(3, args.runs // 2))
                                 for changed in (10, 1_000, 100_000)}
    finally:
        for server in servers.values():
            server.destroy()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
