"""Per-action overhead of the episode pipeline over a bare sandbox exec of the same command,
and the wall time of a whole 20-action episode.

Issue 5's target: the harness's own work per action (guardrail + budget + trace) under
5 ms. The measurement step (commit count from git, rows from the capture) is reported
separately: it is a real cost of exactness, paid only by actions that can change them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.config import parse_config
from harness.episode import Episode
from harness.fixtures import fixture_repo, fixture_seed
from harness.trace.writer import read_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    repo = fixture_repo()
    config = parse_config(f"target:\n  repo: {repo}\n  database: {fixture_seed('shop')}\n"
                          "orchestrator:\n  blast_radius: {max_database_rows: 1000}\n")
    trace = Path("/tmp/harness-bench-trace.jsonl")
    trace.unlink(missing_ok=True)
    action = {"tool": "shell_exec", "parameters": {"command": "true"}}
    with Episode(config, trace_path=trace) as episode:
        episode.act(action)
        bare = [timed(lambda: episode.sandbox.exec("true")) for _ in range(args.runs)]
        acted = [timed(lambda: episode.act(action)) for _ in range(args.runs)]
    spans = read_trace(trace)
    steps: dict[str, list[float]] = {}
    for span in spans:
        steps.setdefault(span["name"], []).append(span["duration_ms"] / 1000)
    action_total = [s / 1000 for s in (x["duration_ms"] for x in spans if x["name"] == "action")]
    own = [total - execute - measure for total, execute, measure in
           zip(action_total[1:], steps["execute"][1:], steps["measure"][1:], strict=True)]
    bare_s, acted_s = summary(bare), summary(acted)

    script = [
        {"tool": "shell_exec", "parameters": {"command": "ls"}},
        {"tool": "read_file", "parameters": {"path": "README.md"}},
        {"tool": "list_files", "parameters": {"path": "."}},
        {"tool": "shell_exec", "parameters": {"command": "python3 -m unittest -q 2>&1 | tail -1"}},
        {"tool": "write_file", "parameters": {"path": "notes.md", "content": "x\n"}},
        {"tool": "git_diff", "parameters": {}},
        {"tool": "git_commit", "parameters": {"message": "notes"}},
        {"tool": "db_query", "parameters": {"sql": "SELECT count(*) FROM orders"}},
        {"tool": "db_mutate", "parameters": {"sql": "UPDATE orders SET status = 'paid' "
                                                    "WHERE id = 1"}},
        {"tool": "shell_exec", "parameters": {"command": "rm -rf /"}},
    ] * 2
    walls = []
    for _ in range(3):
        started = time.perf_counter()
        with Episode(config, trace_path=trace) as episode:
            for step in script:
                episode.act(step)
        walls.append(time.perf_counter() - started)
    print(json.dumps({
        "bare_sandbox_exec_true": bare_s,
        "episode_act_shell_exec_true": acted_s,
        "overhead_median_ms": round(acted_s["median_ms"] - bare_s["median_ms"], 3),
        "overhead_p95_ms": round(acted_s["p95_ms"] - bare_s["p95_ms"], 3),
        "ratio_act_to_bare_median": round(acted_s["median_ms"] / bare_s["median_ms"], 2),
        "harness_own_work_per_action_guardrail_budget_trace": summary(own),
        "guardrail_step": summary(steps["guardrail"][1:]),
        "measure_step_commits_and_rows": summary(steps["measure"][1:]),
        "episode_20_actions_wall_s_median": round(statistics.median(walls), 3),
        "episode_20_actions_wall_s": [round(w, 3) for w in walls],
        "target": "harness own work (guardrail + budget + trace) under 5 ms per action",
    }, indent=2))


if __name__ == "__main__":
    main()
