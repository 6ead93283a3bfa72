"""A real Ray cluster of two nodes on this machine, each node with its own harness home,
for the module that asks for it; stopped (every process it started, found by its temp
folder, killed by pid) and its homes' resources removed afterwards."""

from __future__ import annotations

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
RESOURCE = '{"harness_episode": 1}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RayCluster:
    """The cluster's address, its folder, and each node's harness home by node name."""

    address: str
    folder: Path
    homes: dict[str, Path] = field(default_factory=dict)

    def env(self, home: Path, name: str, **extra: str) -> dict[str, str]:
        """The environment a node of this cluster is started with."""
        return {**os.environ, "HARNESS_HOME": str(home), "HARNESS_NODE_NAME": name,
                "RAY_USAGE_STATS_ENABLED": "0",
                # The head's GCS finds a dead node in about two seconds, not thirty.
                "RAY_health_check_initial_delay_ms": "1000",
                "RAY_health_check_period_ms": "500",
                "RAY_health_check_timeout_ms": "1000",
                "RAY_health_check_failure_threshold": "3", **extra}

    def add_node(self, name: str, **extra: str) -> Path:
        """Start a worker node named `name` with a fresh harness home (and `extra` env)."""
        home = self.folder / name
        home.mkdir()
        _ray("start", "--address", self.address, *_node_options(),
             env=self.env(home, name, **extra))
        self.homes[name] = home
        return home

    def raylet_pid(self, name: str) -> int:
        """The pid of the raylet of node `name`."""
        home = f"HARNESS_HOME={self.homes[name]}"
        for pid in _processes_of(home):
            if "raylet/raylet" in _cmdline(pid):
                return pid
        raise AssertionError(f"no raylet of node {name} runs")

    def stop_node(self, name: str) -> None:
        """Kill every process of node `name` by pid."""
        _kill(_processes_of(f"HARNESS_HOME={self.homes[name]}"))

    def eval(self, *args: str, out: Path, background: bool = False,
             env: dict[str, str] | None = None, address: bool = True) -> Driver:
        """`harness eval --ray` as the driver, from a folder of its own (Ray puts the
        driver's folder on the workers' path: the project checkout must not be it)."""
        folder = Path(tempfile.mkdtemp(prefix="driver-", dir=self.folder))
        command = [str(VENV_BIN / "harness"), "eval", *args,
                   *(["--ray", self.address] if address else []), "--out", str(out), "--json"]
        driver = Driver(folder / "stdout", folder / "stderr")
        with driver.stdout_path.open("w") as stdout, driver.stderr_path.open("w") as stderr:
            driver.process = subprocess.Popen(
                command, cwd=folder, stdout=stdout, stderr=stderr, text=True,
                env={**os.environ, "HARNESS_HOME": str(folder / "home"), **(env or {})})
        if not background:
            driver.process.wait(timeout=300)
        return driver


@dataclass
class Driver:
    """A `harness eval` process and its output files."""

    stdout_path: Path
    stderr_path: Path
    process: subprocess.Popen[str] | None = None

    @property
    def returncode(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def run_id(self) -> str:
        """The evaluation's id, as the driver said it."""
        found = [w for w in self.stderr.split() if w.startswith("ev-")]
        assert found, f"no evaluation id in:\n{self.stderr}"
        return found[0]


def _node_options() -> list[str]:
    return ["--num-cpus", "1", "--resources", RESOURCE, "--disable-usage-stats",
            "--object-store-memory", str(80 * 1024 * 1024),
            "--dashboard-agent-listen-port", str(free_port()),
            "--metrics-export-port", str(free_port())]


def _ray(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run([str(VENV_BIN / "ray"), *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _processes_of(marker: str) -> list[int]:
    """Processes whose command line or environment holds `marker`."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes() or \
                    needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _gc_everything(home: Path) -> None:
    subprocess.run([str(VENV_BIN / "harness"), "gc", "--all", "--json"],
                   env={**os.environ, "HARNESS_HOME": str(home)}, capture_output=True,
                   timeout=120, check=False)


@pytest.fixture(scope="module")
def ray_cluster(agent_image: str) -> Iterator[RayCluster]:
    """Node `node-a` (the head) and node `node-b`, one harness_episode each."""
    # A short folder: Ray's socket paths beneath it must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="hxray-", dir="/tmp"))
    port = free_port()
    cluster = RayCluster(f"127.0.0.1:{port}", folder)
    try:
        home = folder / "node-a"
        home.mkdir()
        _ray("start", "--head", "--port", str(port), "--temp-dir", str(folder / "ray"),
             "--include-dashboard", "false", "--dashboard-port", str(free_port()),
             *_node_options(),
             env=cluster.env(home, "node-a"))
        cluster.homes["node-a"] = home
        cluster.add_node("node-b")
        yield cluster
    finally:
        # Everything the cluster started carries its folder in its environment (the
        # homes) or its command line (the temp folder): nothing else is touched.
        for _ in range(3):
            pids = _processes_of(str(folder))
            if not pids:
                break
            _kill(pids)
            time.sleep(0.5)
        for home in cluster.homes.values():
            _gc_everything(home)
        shutil.rmtree(folder, ignore_errors=True)


def report(out: Path) -> dict[str, object]:
    """The report.json an evaluation wrote."""
    data: dict[str, object] = json.loads((out / "report.json").read_text())
    return data
