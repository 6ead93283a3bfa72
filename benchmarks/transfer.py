"""File transfer in and out of a sandbox, and inspect_ai's conformance suite.

Figures: a 50 MiB file (random bytes) written into the workspace and read back through
`Sandbox.write_file` / `read_file` (the agent's permissions apply: the bytes are streamed
through one exec's stdin and stdout), against `docker cp` in and out of the same container
in the same run, interleaved; MiB/s of the medians and the ratio of the medians. Then the
wall time of inspect's own `self_check` suite against the harness provider (one run of
`pytest tests/inspect/test_self_check.py`, process start included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.config import Config
from harness.fixtures import fixture_repo
from harness.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent


def rate(size: int, stats: dict[str, float]) -> float:
    return round(size / (1 << 20) / (stats["median_ms"] / 1000), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--no-self-check", action="store_true")
    args = parser.parse_args()
    size = args.mib << 20
    payload = os.urandom(size)
    timings: dict[str, list[float]] = {"write": [], "read": [], "docker_cp_in": [],
                                       "docker_cp_out": []}
    with tempfile.TemporaryDirectory() as scratch, Sandbox(
            fixture_repo(), settings=Config().sandbox) as sandbox:
        local = Path(scratch) / "blob.bin"
        local.write_bytes(payload)
        back = Path(scratch) / "back.bin"
        container = sandbox.container.id
        inside = f"{container}:/workspace/cp.bin"
        for _ in range(args.runs):
            timings["write"].append(timed(lambda: sandbox.write_file("blob.bin", payload)))
            started = time.perf_counter()
            got = sandbox.read_file("blob.bin")
            timings["read"].append(time.perf_counter() - started)
            assert got == payload
            timings["docker_cp_in"].append(timed(lambda: subprocess.run(
                ["docker", "cp", str(local), inside], check=True, capture_output=True)))
            timings["docker_cp_out"].append(timed(lambda: subprocess.run(
                ["docker", "cp", inside, str(back)], check=True, capture_output=True)))
            assert back.stat().st_size == size
            sandbox.exec(["rm", "-f", "/workspace/cp.bin"])
    stats = {name: summary(samples) for name, samples in timings.items()}
    figures: dict[str, object] = {
        "file_mib": args.mib,
        **stats,
        "write_mib_s": rate(size, stats["write"]), "read_mib_s": rate(size, stats["read"]),
        "docker_cp_in_mib_s": rate(size, stats["docker_cp_in"]),
        "docker_cp_out_mib_s": rate(size, stats["docker_cp_out"]),
        "ratio_write_over_docker_cp": round(
            stats["write"]["median_ms"] / stats["docker_cp_in"]["median_ms"], 2),
        "ratio_read_over_docker_cp": round(
            stats["read"]["median_ms"] / stats["docker_cp_out"]["median_ms"], 2),
    }
    if not args.no_self_check:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/inspect/test_self_check.py"], cwd=ROOT,
                              capture_output=True, text=True)
        figures["self_check_wall_s"] = round(time.perf_counter() - started, 2)
        figures["self_check_outcome"] = done.stdout.strip().splitlines()[-1]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
