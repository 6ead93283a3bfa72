"""`harness eval --ray` on a real two-node Ray cluster (each node its own harness home):
every run finishes exactly once and both nodes take runs; nothing is left on either node;
a killed node's unfinished runs finish on the other without duplicates; a node that
differs from the driver is refused before any run; --resume skips recorded runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import docker
import pytest

from harness.sandbox import labels
from harness.sandbox.postgres import DatabaseServer
from tests.eval.fix_ray import Driver, RayCluster, report

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.ray, pytest.mark.slow]
PROJECT = Path(__file__).resolve().parents[2]
SCENARIO = str(PROJECT / "scenarios" / "success.yaml")


def run_keys(runs: list[dict[str, object]]) -> Counter[tuple[object, ...]]:
    return Counter((r["scenario"], r["agent"], r["run"]) for r in runs)


def ledger(out: Path, run_id: str) -> list[dict[str, object]]:
    lines = (out / "runs" / run_id / "runs.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def left_on(run_id: str, client: docker.DockerClient) -> list[str]:
    """Containers and volumes of the evaluation still on the (shared) engine."""
    selector: dict[str, str | list[str] | bool] = {"label": f"{labels.RUN}={run_id}"}
    return [c.name or "?" for c in client.containers.list(all=True, filters=selector)] + \
        [v.name for v in client.volumes.list(filters=selector)]


def sandbox_databases(home: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sandbox databases on the database server of the harness home `home`."""
    with monkeypatch.context() as patch:
        patch.setenv("HARNESS_HOME", str(home))
        server = DatabaseServer(15)
        if not server.running():
            return []
        with server.ensure().connect() as conn:
            rows = conn.execute("SELECT datname FROM pg_database "
                                "WHERE datname LIKE 'sb\\_%'").fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def first(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Driver]:
    out = tmp_path_factory.mktemp("eval-ray")
    return out, ray_cluster.eval(SCENARIO, "--agent", "good", "--repeat", "4", out=out)


def test_every_run_finishes_once_on_both_nodes_and_nothing_is_left(
        ray_cluster: RayCluster, first: tuple[Path, Driver],
        docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    out, driver = first
    assert driver.returncode == 0, driver.stderr
    run_id = driver.run_id
    summary = report(out)
    runs = summary["runs"]
    assert isinstance(runs, list)
    assert run_keys(runs) == Counter({("success", "good", n): 1 for n in range(4)})
    assert all(r["success"] and r["error"] is None and r["attempt"] == 1 for r in runs)
    assert {r["node"] for r in runs} == {"node-a", "node-b"}
    nodes = summary["nodes"]
    assert isinstance(nodes, dict) and set(nodes) == {"node-a", "node-b"}
    assert all(figures["runs_per_minute"] > 0 for figures in nodes.values())
    assert len(ledger(out, run_id)) == 4
    for run in runs:  # the trace and change set came back to the driver's folder
        assert Path(run["trace"]).is_file() and Path(run["trace"]).is_relative_to(out)
        changeset = out / "runs" / run_id / "changesets" / f"success-good-{run['run']}.json"
        assert json.loads(changeset.read_text())["workspace"]["commits"]
    assert left_on(run_id, docker_client) == []
    for home in ray_cluster.homes.values():
        assert sandbox_databases(home, monkeypatch) == []
        assert not list((home / "workspaces").iterdir())
        assert not list((home / "eval-tasks").iterdir())


def test_resume_runs_only_what_is_not_recorded(
        ray_cluster: RayCluster, first: tuple[Path, Driver]) -> None:
    out, driver = first
    run_id = driver.run_id
    again = ray_cluster.eval(SCENARIO, "--agent", "good", "--repeat", "5", "--resume", run_id,
                             out=out)
    assert again.returncode == 0, again.stderr
    assert run_keys(report(out)["runs"]) == Counter(  # type: ignore[arg-type]
        {("success", "good", n): 1 for n in range(5)})
    assert len(ledger(out, run_id)) == 5, "only run 4 was new"


def test_the_configuration_can_name_the_cluster(ray_cluster: RayCluster, tmp_path: Path
                                               ) -> None:
    config = tmp_path / "harness.yaml"
    config.write_text(f"eval:\n  ray:\n    address: {ray_cluster.address}\n"
                      "    max_attempts: 2\n    max_in_flight: 1\n")
    out = tmp_path / "out"
    driver = ray_cluster.eval(SCENARIO, "--agent", "good", "--config", str(config), out=out,
                              address=False)
    assert driver.returncode == 0, driver.stderr
    runs = report(out)["runs"]
    assert isinstance(runs, list) and runs[0]["node"] in ("node-a", "node-b")


def test_an_agent_s_failure_is_its_result_and_never_retried(
        ray_cluster: RayCluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    broken = "subprocess:/nonexistent/agent-program"
    driver = ray_cluster.eval(SCENARIO, "--agent", broken, "--repeat", "2", out=out)
    assert driver.returncode == 2, driver.stderr  # runs crashed
    runs = report(out)["runs"]
    assert isinstance(runs, list) and len(runs) == 2
    for run in runs:
        assert run["attempt"] == 1 and run["node"] in ("node-a", "node-b")
        assert "cannot start the agent" in run["error"]
    assert "0 attempt(s) retried" in driver.stderr


def test_a_node_whose_engine_does_not_answer_is_left_out_and_named(
        ray_cluster: RayCluster, tmp_path: Path) -> None:
    ray_cluster.add_node("node-d", DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    try:
        out = tmp_path / "out"
        driver = ray_cluster.eval(SCENARIO, "--agent", "good", "--repeat", "3", out=out)
        assert driver.returncode == 0, driver.stderr
        assert "node node-d was left out: its preparation failed" in driver.stderr
        assert "no Docker engine answers" in driver.stderr
        runs = report(out)["runs"]
        assert isinstance(runs, list) and len(runs) == 3
        assert all(r["error"] is None and r["attempt"] == 1 for r in runs), runs
        assert {r["node"] for r in runs} <= {"node-a", "node-b"}
    finally:
        ray_cluster.stop_node("node-d")


def test_runs_a_node_fails_for_its_sake_are_retried_elsewhere_until_it_is_left_out(
        ray_cluster: RayCluster, tmp_path: Path) -> None:
    home = ray_cluster.add_node("node-e")
    try:
        warm = ray_cluster.eval(SCENARIO, "--agent", "good", "--repeat", "3",
                                out=tmp_path / "warm")
        assert warm.returncode == 0, warm.stderr  # node-e is prepared
        for repo in home.glob("fixtures/shop-*/.git"):
            shutil.rmtree(repo)  # its clones now fail; its preparation finds the repo there
        out = tmp_path / "out"
        driver = ray_cluster.eval(SCENARIO, "--agent", "good", "--repeat", "6", out=out)
        assert driver.returncode == 0, driver.stderr
        assert "node node-e was left out: 2 runs in a row failed there" in driver.stderr
        runs = report(out)["runs"]
        assert isinstance(runs, list)
        assert run_keys(runs) == Counter({("success", "good", n): 1 for n in range(6)})
        assert all(r["error"] is None and r["success"] for r in runs), runs
        assert "node-e" not in {r["node"] for r in runs}
        retried = [r for r in runs if r["attempt"] == 2]
        assert len(retried) >= 2, runs
    finally:
        ray_cluster.stop_node("node-e")


def test_a_node_that_differs_from_the_driver_is_refused_before_any_run(
        ray_cluster: RayCluster, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    other = tmp_path / "other"
    shutil.copytree(PROJECT / "harness", other / "harness",
                    ignore=shutil.ignore_patterns("__pycache__"))
    version = other / "harness" / "version.py"
    assert '__version__ = "' in version.read_text()
    version.write_text(version.read_text().replace('__version__ = "', '__version__ = "9.9.9-'))
    ray_cluster.add_node("node-c", PYTHONPATH=str(other),  # the same install but its version
                         HARNESS_SANDBOXES=str(PROJECT / "sandboxes"),
                         HARNESS_FIXTURES=str(PROJECT / "fixtures"))
    try:
        out = tmp_path / "out"
        refused = ray_cluster.eval(SCENARIO, "--agent", "good", out=out)
        stderr = refused.stderr
        assert refused.returncode == 2, stderr
        assert "node node-c" in stderr and "harness 9.9.9-" in stderr, stderr
        assert "node node-a" not in stderr and "node node-b" not in stderr
        assert not out.exists(), "no evaluation was started"
        assert docker_client.containers.list(
            all=True, filters={"label": f"{labels.NODE}=node-c"}) == []
    finally:
        ray_cluster.stop_node("node-c")


def test_a_killed_node_s_unfinished_runs_finish_on_the_other_without_duplicates(
        ray_cluster: RayCluster, tmp_path: Path, docker_client: docker.DockerClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    slow = tmp_path / "slow.jsonl"  # an agent still at work when its node is killed
    slow.write_text(json.dumps({"tool": "shell_exec", "parameters": {"command": "sleep 3"}}))
    agent = f"scripted:{slow}"
    driver = ray_cluster.eval(SCENARIO, "--agent", agent, "--repeat", "4", out=out,
                              background=True)
    assert driver.process is not None
    try:
        busy: dict[str, str | list[str] | bool] = {
            "label": [f"{labels.NODE}=node-b", f"{labels.KIND}=sandbox"]}
        deadline = time.monotonic() + 120
        while not docker_client.containers.list(filters=busy):
            assert driver.returncode is None, f"it ended before node-b took a run:\n{driver.stderr}"
            assert time.monotonic() < deadline, "node-b never took a run"
            time.sleep(0.1)
        os.kill(ray_cluster.raylet_pid("node-b"), signal.SIGKILL)
        driver.process.wait(timeout=240)
    finally:
        if driver.returncode is None:
            driver.process.kill()
            driver.process.wait()
    assert driver.returncode == 0, driver.stderr
    run_id = driver.run_id
    runs = report(out)["runs"]
    assert isinstance(runs, list)
    assert run_keys(runs) == Counter({("success", agent, n): 1 for n in range(4)})
    assert all(r["error"] is None and r["actions"] == 1 for r in runs), runs
    moved = [r for r in runs if r["attempt"] > 1]
    assert moved and all(r["node"] == "node-a" for r in moved), runs
    assert run_keys(ledger(out, run_id)) == run_keys(runs), "each run recorded once"

    # The killed task's sandbox is still on node-b's home; the next task there clears it
    # first thing (as `harness gc` there would).
    home_b = ray_cluster.homes["node-b"]
    assert left_on(run_id, docker_client), "the killed run left its sandbox"
    cleared = subprocess.run(
        [sys.executable, "-c", "import json; from harness.eval.node import clear_leftovers; "
                               "print(json.dumps(clear_leftovers()))"],
        env={**os.environ, "HARNESS_HOME": str(home_b)}, capture_output=True, text=True,
        timeout=120, check=True)
    assert json.loads(cleared.stdout), cleared
    assert left_on(run_id, docker_client) == []
    assert sandbox_databases(home_b, monkeypatch) == []
    assert sandbox_databases(ray_cluster.homes["node-a"], monkeypatch) == []


def test_without_ray_the_option_says_how_to_install_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['ray'] = None; "
                               "from harness.cli import main; main()",
         "eval", SCENARIO, "--agent", "good", "--ray", "127.0.0.1:1", "--out",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "pip install 'harness[ray]'" in done.stderr


def test_resume_needs_a_cluster(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness", "eval", SCENARIO, "--agent", "good", "--resume",
         "ev-1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert done.returncode == 2
    assert "--resume needs --ray" in done.stderr
