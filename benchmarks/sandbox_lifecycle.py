"""Sandbox open/close and exec latency against a bare `docker run --rm IMAGE true`, and
the cost of the per-sandbox disk (sandbox.disk_limit) against none.

Issue 2's target: open + close within 2x of the bare docker run on the fixture repo.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.fixtures import fixture_repo, generated_repo
from harness.sandbox import Sandbox, engine, images
from harness.sandbox.settings import SandboxSettings


def lifecycle(repo: Path, runs: int, settings: SandboxSettings | None = None
              ) -> dict[str, object]:
    opens, closes, totals = [], [], []
    for _ in range(runs):
        sandbox = Sandbox(repo, settings=settings)
        opened = timed(sandbox.open)
        closed = timed(sandbox.close)
        opens.append(opened)
        closes.append(closed)
        totals.append(opened + closed)
    return {"open": summary(opens), "close": summary(closes), "open_plus_close": summary(totals)}


def exec_round_trip(repo: Path, runs: int) -> dict[str, float]:
    with Sandbox(repo) as sandbox:
        sandbox.exec("true")
        return summary([timed(lambda: sandbox.exec("true")) for _ in range(runs)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    tag = images.ensure(engine.connect(), images.ImageDefinition.named("agent"))
    docker_run = ["docker", "run", "--rm", "--network", "none", tag, "true"]
    subprocess.run(docker_run, check=True)  # warm the engine's caches
    baseline = summary(
        [timed(lambda: subprocess.run(docker_run, check=True)) for _ in range(args.runs)])
    fixture = fixture_repo()
    large = generated_repo(10_000, 5_000)
    results: dict[str, object] = {
        "baseline_docker_run_rm_true": baseline,
        "fixture_repo": {**lifecycle(fixture, args.runs),
                         "exec_true": exec_round_trip(fixture, max(args.runs, 50))},
        "generated_repo_10k_commits_5k_files": {**lifecycle(large, args.runs),
                                                "exec_true": exec_round_trip(large, args.runs)},
    }
    results["fixture_repo_without_disk_limit"] = lifecycle(
        fixture, args.runs, SandboxSettings(disk_limit=None))
    fixture_total = results["fixture_repo"]["open_plus_close"]  # type: ignore[index]
    no_disk = results["fixture_repo_without_disk_limit"]["open_plus_close"]  # type: ignore[index]
    results["ratio_disk_limit_to_none_open_close"] = round(
        fixture_total["median_ms"] / no_disk["median_ms"], 3)
    results["ratio_fixture_open_close_to_baseline"] = round(
        fixture_total["median_ms"] / baseline["median_ms"], 3)
    results["ratio_fixture_open_close_to_baseline_p95"] = round(
        fixture_total["p95_ms"] / baseline["p95_ms"], 3)
    results["target"] = "open+close median within 2x of the bare docker run"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
