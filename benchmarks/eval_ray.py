"""Runs per minute of the same evaluation three ways: local `--parallel K` (threads, no Ray),
Ray with one node holding K episodes, and Ray with two nodes holding K between them, on a
real cluster started on this machine (each node its own harness home).

On one machine two nodes share the same cores: they prove distribution and its overhead,
not a speed-up. The issue's target: Ray on one node within 20% of local.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.agents import ScriptedAgent
from harness.eval.runner import evaluate
from harness.eval.scenario import scenario_files, scenarios_in

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalCluster:
    """`ray start --head` (and `ray start --address` per extra node) in a folder of its
    own; stopped by killing, by pid, every process that carries the folder."""

    def __init__(self, episodes: list[int]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="hxbench-", dir="/tmp"))
        self.address = f"127.0.0.1:{free_port()}"
        self.homes: list[Path] = []
        for index, slots in enumerate(episodes):
            home = self.folder / f"node-{index}"
            home.mkdir()
            self.homes.append(home)
            head = ["--head", "--port", self.address.split(":")[1], "--temp-dir",
                    str(self.folder / "ray"), "--include-dashboard", "false",
                    "--dashboard-port", str(free_port())]
            where = head if index == 0 else ["--address", self.address]
            subprocess.run(
                [str(BIN / "ray"), "start", *where, "--num-cpus", str(slots), "--resources",
                 json.dumps({"harness_episode": slots}), "--disable-usage-stats",
                 "--object-store-memory", str(100 * 1024 * 1024),
                 "--dashboard-agent-listen-port", str(free_port()),
                 "--metrics-export-port", str(free_port())],
                env={**os.environ, "HARNESS_HOME": str(home), "HARNESS_NODE_NAME":
                     f"node-{index}", "RAY_USAGE_STATS_ENABLED": "0"},
                check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        marker = str(self.folder).encode()
        for _ in range(3):
            pids = []
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and int(entry.name) != os.getpid():
                    try:
                        if marker in (entry / "environ").read_bytes() or \
                                marker in (entry / "cmdline").read_bytes():
                            pids.append(int(entry.name))
                    except OSError:
                        continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                break
            time.sleep(0.5)
        for home in self.homes:
            subprocess.run([str(BIN / "harness"), "gc", "--all", "--json"], check=False,
                           env={**os.environ, "HARNESS_HOME": str(home)}, capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def on_ray(episodes: list[int], names: list[str], repeat: int, out: Path) -> dict[str, object]:
    """One warm-up run per node's worth (preparation, worker start), then the measured one."""
    import ray

    from harness.eval.cluster import evaluate_on_ray

    cluster = LocalCluster(episodes)
    try:
        files = scenario_files([SCENARIOS])
        started = time.perf_counter()
        evaluate_on_ray(files, names[:1], ["good"], address=cluster.address, out=out,
                        repeat=sum(episodes))
        warm_up = time.perf_counter() - started
        started = time.perf_counter()
        done = evaluate_on_ray(files, names, ["good"], address=cluster.address, out=out,
                               repeat=repeat)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.stop()
    per_node: dict[str, int] = {}
    for run in done.runs:
        per_node[run.node] = per_node.get(run.node, 0) + 1
    return {"runs": len(done.runs), "seconds": round(seconds, 1),
            "runs_per_minute": round(len(done.runs) / seconds * 60, 1),
            "errors": sum(r.error is not None for r in done.runs),
            "runs_per_node": per_node, "warm_up_seconds": round(warm_up, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parallel", type=int, default=2, help="K: episodes at once")
    parser.add_argument("--repeat", type=int, default=4, help="runs of each scenario")
    args = parser.parse_args()
    own_home = "HARNESS_HOME" not in os.environ
    if own_home:
        os.environ["HARNESS_HOME"] = tempfile.mkdtemp(prefix="hxbench-local-")
    try:
        run(args.parallel, args.repeat)
    finally:
        if own_home:
            subprocess.run([str(BIN / "harness"), "gc", "--all", "--json"], check=False,
                           capture_output=True)
            shutil.rmtree(os.environ["HARNESS_HOME"], ignore_errors=True)


def run(k: int, repeat: int) -> None:
    scenarios = scenarios_in([SCENARIOS])
    names = [s.name for s in scenarios]
    good = {"good": lambda scenario: ScriptedAgent(scenario.agents["good"])}
    figures: dict[str, object] = {"scenarios": len(scenarios), "repeat": repeat,
                                  "parallel": k}

    evaluate(scenarios[:1], good, repeat=k, parallel=k)  # warm-up: baseline, image cache
    started = time.perf_counter()
    local = evaluate(scenarios, good, repeat=repeat, parallel=k)
    seconds = time.perf_counter() - started
    figures["local"] = {"runs": len(local), "seconds": round(seconds, 1),
                        "runs_per_minute": round(len(local) / seconds * 60, 1),
                        "errors": sum(r.error is not None for r in local)}
    with tempfile.TemporaryDirectory(prefix="hxbench-out-") as out:
        figures["ray_1_node"] = on_ray([k], names, repeat, Path(out) / "one")
        figures["ray_2_nodes"] = on_ray([max(1, k // 2), max(1, k - k // 2)], names,
                                        repeat, Path(out) / "two")
    local_rate = figures["local"]["runs_per_minute"]  # type: ignore[index]
    one_rate = figures["ray_1_node"]["runs_per_minute"]  # type: ignore[index]
    figures["ray_1_node_vs_local"] = round(one_rate / local_rate, 3)
    figures["within_20_percent"] = one_rate >= 0.8 * local_rate
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
