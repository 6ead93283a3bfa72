"""A sandbox database cloned by reflink against a file-by-file copy, at 1 GB and 5 GB.

Both run on one PostgreSQL 18 sandbox server whose data is on its XFS image (reflink=1),
in the same run and interleaved: `CREATE DATABASE ... STRATEGY FILE_COPY` with
`file_copy_method = clone` (reflink) and with `copy` (FILE_COPY as it was), each timed
from rest (a checkpoint and the host's writeback first, untimed). Figures per
size: the whole `SandboxDatabase.create()` (the copy, the sandbox's roles and rights) and
the `CREATE DATABASE` statement alone, median and p95 of --runs each, and the ratios
copy / reflink. `--volume-sizes-gb` also times the copy on a second PostgreSQL 18 server
whose data is on a Docker volume (ext4 here: the path every sandbox took before). The
baselines are seed files of generated rows (generate_series), built
once and cached in --home (default /var/tmp/harness-bench-clone) for the next run;
`--drop` removes the server and its image at the end (`HARNESS_HOME=<home> harness gc
--all` does it later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed


def generated(size_gb: float) -> str:
    """A seed of about `size_gb` on disk (~140 bytes a row with its primary key)."""
    rows = int(size_gb * 1024 ** 3 / 140)
    return f"""
        CREATE TABLE big (id bigint PRIMARY KEY, a int, b text, c text);
        INSERT INTO big SELECT g, g % 977, md5(g::text), md5((g * 7)::text)
        FROM generate_series(1, {rows}) g;
        VACUUM ANALYZE big;
        """


def settle(server: object) -> None:
    """Start each timed copy from rest: no dirty buffers (the checkpoint FILE_COPY begins
    with), and the last copy's blocks written back by the host, not during the next one."""
    from harness.sandbox.postgres import ServerAddress

    assert isinstance(server, ServerAddress)
    with server.connect() as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def measure(server: object, baseline: object, runs: int) -> dict[str, object]:
    from psycopg import sql

    from harness.sandbox.database import SandboxDatabase, clone_method
    from harness.sandbox.postgres import ServerAddress
    from harness.sandbox.snapshot import Baseline

    assert isinstance(server, ServerAddress) and isinstance(baseline, Baseline)
    copying = clone_method(server, "copy")
    samples: dict[str, list[float]] = {f"{part}_{how}": [] for part in ("sandbox", "statement")
                                       for how in ("reflink", "copy")}
    # One of each first, not counted: the checkpoint FILE_COPY starts with flushes what
    # building the baseline left dirty.
    for index in range(runs + 1):
        for how, address in (("reflink", server), ("copy", copying)):
            settle(server)
            db = SandboxDatabase(address, baseline, f"bench-clone-{how}-{index}").create()
            assert db.clone_method == how, db.clone_report()
            db.drop()
            name = sql.Identifier(f"bench_clone_statement_{how}")
            with server.connect() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))
                conn.execute(sql.SQL("SET file_copy_method = {}").format(
                    sql.SQL("clone" if how == "reflink" else "copy")))
                settle(server)
                statement = timed(lambda conn=conn, name=name: conn.execute(sql.SQL(
                    "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                        name, sql.Identifier(baseline.dbname))))
                conn.execute(sql.SQL("DROP DATABASE {}").format(name))
            if index:
                samples[f"sandbox_{how}"].append(db.clone_seconds)
                samples[f"statement_{how}"].append(statement)
    figures: dict[str, object] = {key: summary(values) for key, values in samples.items()}
    for part in ("sandbox", "statement"):
        copy_s, reflink_s = (summary(samples[f"{part}_{how}"]) for how in ("copy", "reflink"))
        figures[f"{part}_ratio_copy_over_reflink"] = {
            "median": round(copy_s["median_ms"] / reflink_s["median_ms"], 2),
            "p95": round(copy_s["p95_ms"] / reflink_s["p95_ms"], 2)}
    return figures


def on_volume(seed: Path, runs: int) -> dict[str, object]:
    """`SandboxDatabase.create()` on a server whose data is on a Docker volume."""
    from harness.sandbox.database import SANDBOX_SERVER_SETTINGS, SandboxDatabase
    from harness.sandbox.postgres import DatabaseServer
    from harness.sandbox.snapshot import Source, ensure_baseline

    server = DatabaseServer(18, instance="bench-volume", settings=SANDBOX_SERVER_SETTINGS,
                            data_image_size=None)
    address = server.ensure()
    baseline = ensure_baseline(address, Source.parse(str(seed)))
    samples = []
    for index in range(runs + 1):
        settle(address)
        db = SandboxDatabase(address, baseline, f"bench-clone-volume-{index}").create()
        db.drop()
        if index:
            samples.append(db.clone_seconds)
    return {"clone_detail": address.clone.detail, "sandbox_copy": summary(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-gb", default="1,5", help="Baseline sizes, comma-separated.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--home", default="/var/tmp/harness-bench-clone",
                        help="The HARNESS_HOME whose server caches the baselines.")
    parser.add_argument("--image-size", default="32g", help="The server's data image.")
    parser.add_argument("--volume-sizes-gb", default="1",
                        help="Sizes also copied on a server with its data on a Docker volume "
                             "('' for none).")
    parser.add_argument("--drop", action="store_true",
                        help="Remove the server and its data image at the end.")
    args = parser.parse_args()
    os.environ["HARNESS_HOME"] = args.home
    from harness.home import state_dir
    from harness.sandbox.database import open_baseline
    from harness.sandbox.postgres import DatabaseServer
    from harness.sandbox.settings import DatabaseSettings

    settings = DatabaseSettings(clone="reflink", server_version=18,
                                data_image_size=args.image_size)
    results: dict[str, object] = {"home": args.home, "runs": args.runs}
    try:
        for size in (float(s) for s in args.sizes_gb.split(",")):
            seed = state_dir("bench-seeds") / f"generated-{size:g}gb.sql"
            seed.write_text(generated(size))
            started = time.monotonic()
            server, baseline = open_baseline(str(seed), settings)
            with server.connect() as conn:
                row = conn.execute("SELECT pg_database_size(%s)", (baseline.dbname,)).fetchone()
            results[f"{size:g}gb"] = {
                "baseline_bytes": row[0] if row else None,
                "baseline": "reused" if baseline.reused else
                f"built in {time.monotonic() - started:.0f} s",
                "clone_detail": server.clone.detail,
                **measure(server, baseline, args.runs)}
        for size in (float(s) for s in args.volume_sizes_gb.split(",") if s):
            seed = state_dir("bench-seeds") / f"generated-{size:g}gb.sql"
            seed.write_text(generated(size))
            results[f"{size:g}gb_on_docker_volume"] = on_volume(seed, args.runs)
    finally:
        if args.drop:
            DatabaseServer(18).destroy()
            DatabaseServer(18, instance="bench-volume").destroy()
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
