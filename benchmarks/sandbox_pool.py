"""The warm pool and the CLI's start.

Figures (medians and p95 in ms):
- `pooled_handout`: `SandboxPool.acquire` of a ready sandbox (repository clone, container
  and database copy of the shop fixture, bound to its user's variables; target under
  50 ms), and `pooled_to_first_command` (that, then its first command), against
  `cold_to_first_command` (a fresh `Sandbox(...).open()` and the same command) in the
  same run; `ratio_cold_over_pooled` of those two (target: at least 4).
- `cli`: whole-process start of `harness --help`, `harness check --shell ...` and
  `harness exec --repo ... -- true` against a bare `python -c pass` and a bare
  `docker run --rm` plus `git clone` of the same repository: the shop fixture, and a
  generated 10k-commit, 5k-file repository (`*_large_repo`).
- `eval`: runs per minute of the bundled scenarios at parallel 1 and 2, with and without
  a pool of one sandbox per scenario.
Capture cost on 100k-row writes: `benchmarks/database_snapshot.py --parts write`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.fixtures import fixture_repo, fixture_seed, generated_repo
from harness.sandbox import Sandbox, SandboxPool, engine, images
from harness.sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]


def pool_figures(runs: int) -> dict[str, object]:
    repo, seed = str(fixture_repo()), str(fixture_seed("shop"))
    settings = SandboxSettings()
    handout: list[float] = []
    pooled: list[float] = []
    cold: list[float] = []
    with SandboxPool(size=1) as pool:
        for _ in range(runs):
            pool.warm(repo, settings=settings, database=seed, wait=True)  # refilled
            started = time.perf_counter()
            sandbox = pool.acquire(repo, settings=settings, database=seed,
                                   environment={"RUN": "x"})
            handout.append(time.perf_counter() - started)
            sandbox.exec("true")
            pooled.append(time.perf_counter() - started)
            sandbox.close()
            started = time.perf_counter()
            fresh = Sandbox(repo, settings=settings, database=seed,
                            environment={"RUN": "x"}).open()
            fresh.exec("true")
            cold.append(time.perf_counter() - started)
            fresh.close()
    h, p, c = summary(handout), summary(pooled), summary(cold)
    return {"pooled_handout": h, "pooled_to_first_command": p, "cold_to_first_command": c,
            "ratio_cold_over_pooled": round(c["median_ms"] / p["median_ms"], 1),
            "ratio_cold_over_handout": round(c["median_ms"] / h["median_ms"], 1)}


def _process(argv: list[str]) -> float:
    return timed(lambda: subprocess.run(argv, capture_output=True, check=False))


def cli_figures(runs: int) -> dict[str, object]:
    # As an installed package is: byte-compiled (a shell with PYTHONDONTWRITEBYTECODE set
    # would otherwise compile every module edited since its last import, in every run).
    import compileall

    import harness

    compileall.compile_dir(str(Path(harness.__file__).parent), quiet=1)
    repo, large = str(fixture_repo()), str(generated_repo())
    tag = images.ensure(engine.connect(), images.ImageDefinition.named("agent"))
    scratch = Path(tempfile.mkdtemp())

    def docker_run_and_clone(origin: str, folder: str) -> list[str]:
        # The previous run's clone is removed before the timing starts, not within it.
        return ["sh", "-c", f"git clone -q {origin} {scratch}/{folder} && "
                            f"docker run --rm --network none {tag} true"]

    commands = {
        "python_pass": [sys.executable, "-c", "pass"],
        "help": [*HARNESS, "--help"],
        "check": [*HARNESS, "check", "--shell", "rm -rf build/ && make test"],
        "exec": [*HARNESS, "exec", "--repo", repo, "--", "true"],
        "docker_run_and_clone": docker_run_and_clone(repo, "small"),
        "exec_large_repo": [*HARNESS, "exec", "--repo", large, "--", "true"],
        "docker_run_and_clone_large_repo": docker_run_and_clone(large, "large"),
    }
    _process(commands["exec_large_repo"])  # its pristine checkout is built once, not timed
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            samples[name].append(_process(argv))
            for folder in scratch.iterdir():
                shutil.rmtree(folder)
    shutil.rmtree(scratch, ignore_errors=True)
    stats = {name: summary(s) for name, s in samples.items()}
    return {**stats,
            "ratio_check_over_python": round(stats["check"]["median_ms"]
                                             / stats["python_pass"]["median_ms"], 2),
            "ratio_help_over_python": round(stats["help"]["median_ms"]
                                            / stats["python_pass"]["median_ms"], 2),
            "ratio_exec_over_docker_run_and_clone": round(
                stats["exec"]["median_ms"] / stats["docker_run_and_clone"]["median_ms"], 2),
            "ratio_exec_over_docker_run_and_clone_large_repo": round(
                stats["exec_large_repo"]["median_ms"]
                / stats["docker_run_and_clone_large_repo"]["median_ms"], 2)}


def eval_figures(repeat: int) -> dict[str, object]:
    scenarios = [str(ROOT / "scenarios")]
    figures: dict[str, object] = {}
    for parallel in (1, 2):
        for pool in (0, 1):
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                done = subprocess.run([*HARNESS, "eval", *scenarios, "--agent", "good",
                                       "--repeat", str(repeat), "--parallel", str(parallel),
                                       "--pool", str(pool), "--out", out],
                                      capture_output=True, text=True, check=False)
                elapsed = time.perf_counter() - started
                runs = json.loads((Path(out) / "report.json").read_text())["table"]["good"][
                    "(overall)"]["runs"] if done.returncode in (0, 1) else 0
            figures[f"parallel_{parallel}_pool_{pool}_runs_per_min"] = round(
                runs / elapsed * 60, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--eval-repeat", type=int, default=2)
    parser.add_argument("--parts", default="pool,cli,eval")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    figures: dict[str, object] = {}
    if "pool" in parts:
        figures["pool"] = pool_figures(args.runs)
    if "cli" in parts:
        figures["cli"] = cli_figures(args.runs)
    if "eval" in parts:
        figures["eval"] = eval_figures(args.eval_repeat)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
