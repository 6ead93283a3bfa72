"""Scenario runs per minute at parallel 1 and 2, and proof that each run releases its
resources: labelled containers, workspaces and sandbox databases before and after 100 runs."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness.agents import ScriptedAgent
from harness.eval.runner import evaluate
from harness.eval.scenario import scenarios_in
from harness.home import state_dir
from harness.sandbox import engine, labels
from harness.sandbox.database import open_baseline

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def resources() -> dict[str, int]:
    containers = engine.connect().containers(labels=[labels.SANDBOX])
    sandboxes = [c for c in containers if (c.get("Labels") or {}).get(labels.KIND) == "sandbox"]
    server, _ = open_baseline(str(Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
                                  / "shop.sql"))
    with server.connect() as conn:
        databases = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'sb\\_%'").fetchone()
    return {"sandbox_containers": len(sandboxes),
            "workspaces": len(list(state_dir("workspaces").iterdir())),
            "sandbox_databases": int(databases[0]) if databases else -1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    scenarios = scenarios_in([SCENARIOS])
    good = {"good": lambda scenario: ScriptedAgent(scenario.agents["good"])}
    before = resources()
    figures: dict[str, object] = {"scenarios": len(scenarios), "resources_before": before}
    for parallel, runs in ((1, 20), (2, args.runs)):
        repeat = max(1, runs // len(scenarios))
        started = time.perf_counter()
        results = evaluate(scenarios, good, repeat=repeat, parallel=parallel)
        seconds = time.perf_counter() - started
        figures[f"parallel_{parallel}"] = {
            "runs": len(results), "seconds": round(seconds, 1),
            "runs_per_minute": round(len(results) / seconds * 60, 1),
            "successes": sum(r.success for r in results),
            "errors": sum(r.error is not None for r in results)}
    after = resources()
    figures["resources_after"] = after
    figures["growth"] = {k: after[k] - before[k] for k in before}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
