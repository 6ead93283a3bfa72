"""Effect policies: what judging every action by its measured effects costs.

Figures: per action (median, p95) for a database write, a database write through psql in
the shell, a file write and a commit, with row attribution and three effect policies
(over rows, files and commits, none of which fires) against the same actions with both
off (`observability.attribute_rows: false`, no policies), the two episodes interleaved in
the same run; the ratio of the medians; and the time to undo an action that changed
1,000 rows (the inverse applied in the sandbox database, as the refusal reports it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.config import Config, parse_config
from harness.episode import Episode
from harness.fixtures import fixture_repo

SEED = """
CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, label text NOT NULL);
INSERT INTO items SELECT g, g % 97, md5(g::text) FROM generate_series(1, 20000) g;
"""

POLICIES = """
effects:
  - id: no-negative
    rows: {table: items, where_after: {n: -1}}
  - id: no-ci
    files: {path: ".github/**"}
  - id: no-wip
    commits: {message: "^WIP"}
"""


def config(seed: Path, judged: bool) -> Config:
    return parse_config(f"""
target: {{repo: {fixture_repo()}, database: {seed}}}
orchestrator: {{blast_radius: {{max_database_rows: 1000000, max_commits: 100000}},
               limits: {{max_actions: 100000}}}}
observability: {{attribute_rows: {str(judged).lower()}}}
{POLICIES if judged else ""}
""")


ACTIONS = {
    "db_mutate": lambda i: {"tool": "db_mutate", "parameters": {
        "sql": f"UPDATE items SET n = n + 1 WHERE id BETWEEN {i * 5 + 1} AND {i * 5 + 5}"}},
    "psql_in_shell": lambda i: {"tool": "shell_exec", "parameters": {
        "command": f"psql -q -c 'UPDATE items SET label = label WHERE id = {i + 1}'"}},
    "write_file": lambda i: {"tool": "write_file", "parameters": {
        "path": f"notes/{i}.md", "content": f"note {i}\n"}},
    "git_commit": lambda i: {"tool": "git_commit", "parameters": {"message": f"note {i}"}},
}


def per_action(seed: Path, runs: int) -> dict[str, object]:
    samples: dict[bool, dict[str, list[float]]] = {True: {}, False: {}}
    with Episode(config(seed, True)) as judged, Episode(config(seed, False)) as plain:
        episodes = {True: judged, False: plain}
        for episode in episodes.values():  # warm: first writes, connections
            for make in ACTIONS.values():
                episode.act(make(runs + 1))
        for i in range(runs):
            for name, make in ACTIONS.items():
                action = make(i)
                for on in (i % 2 == 0, i % 2 != 0):  # alternate who goes first
                    episode = episodes[on]
                    started = time.perf_counter()
                    result = episode.act(action)
                    samples[on].setdefault(name, []).append(time.perf_counter() - started)
                    assert result.status == "ok", result
        attributed = judged.close().attribution
        assert attributed["public.items"], "attribution was on"
        assert plain.close().attribution == {}
    figures: dict[str, object] = {}
    for name in ACTIONS:
        with_them, without = summary(samples[True][name]), summary(samples[False][name])
        figures[name] = {"with_attribution_and_policies": with_them,
                         "without": without,
                         "ratio_median": round(with_them["median_ms"] / without["median_ms"], 3),
                         "added_median_ms": round(with_them["median_ms"]
                                                  - without["median_ms"], 3)}
    return figures


def undo_figures(seed: Path, runs: int) -> dict[str, object]:
    cfg = parse_config(f"""
target: {{repo: {fixture_repo()}, database: {seed}}}
orchestrator: {{blast_radius: {{max_database_rows: 1000000}}, limits: {{max_actions: 100000}}}}
effects:
  - id: at-most-999
    rows: {{table: items, more_than: 999}}
""")
    undo, action = [], []
    with Episode(cfg) as episode:
        for i in range(runs):
            low = (i % 19) * 1000 + 1
            result = None

            def act(low: int = low) -> None:
                nonlocal result
                result = episode.act({"tool": "db_mutate", "parameters": {
                    "sql": f"UPDATE items SET n = n + 1 WHERE id BETWEEN {low} AND {low + 999}"}})

            action.append(timed(act))
            assert result is not None and result.refusal is not None, result
            assert result.output["undone"]["rows"] == 1000, result.output
            undo.append(result.output["undone"]["duration_s"])
        assert episode.close().rows.rows == 0  # type: ignore[union-attr]
    return {"rows": 1000, "undo": summary(undo), "whole_refused_action": summary(action)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        seed = Path(folder) / "items.sql"
        seed.write_text(SEED)
        print(json.dumps({"per_action": per_action(seed, args.runs),
                          "undo_1000_rows": undo_figures(seed, max(5, args.runs // 3))},
                         indent=2))


if __name__ == "__main__":
    main()
