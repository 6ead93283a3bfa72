"""Guardrail decision latency: typical and 10 KB inputs, corpus throughput, 1 MB bound,
and the start of `harness check` as a process (a pre-tool hook starts one per tool call).

Targets: p99 under 1 ms per decision for typical inputs; no input of up to 1 MB takes
more than 1 s; `harness check --shell 'ls -la'` within 5x of a bare `python -c pass`,
measured in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.config import load_config  # noqa: E402
from harness.guardrails import Context, Policy  # noqa: E402
from harness.tools import ToolAction  # noqa: E402

CORPUS = ROOT / "tests" / "guardrails" / "corpus"


def micros(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e6
    return {"runs": len(ordered), "median_us": round(statistics.median(ordered) * 1e6, 1),
            "p95_us": round(at(0.95), 1), "p99_us": round(at(0.99), 1),
            "max_us": round(ordered[-1] * 1e6, 1)}


def measure(call: Callable[[], object], repeat: int) -> list[float]:
    call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def process_start(runs: int) -> dict[str, object]:
    """`harness check --shell 'ls -la'` and a bare `python -c pass`, alternated."""
    harness = str(Path(sys.executable).with_name("harness"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands = {"harness_check": [harness, "check", "--shell", "ls -la"],
                "python_pass": [sys.executable, "-c", "pass"]}
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():  # warm: bytecode written, caches filled
        subprocess.run(argv, env=env, capture_output=True, check=False)
    for _ in range(runs):
        for name, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True, check=False)
            samples[name].append(time.perf_counter() - started)
    figures = {name: {"median_ms": round(statistics.median(s) * 1e3, 1),
                      "p95_ms": round(sorted(s)[int(0.95 * (len(s) - 1))] * 1e3, 1)}
               for name, s in samples.items()}
    ratio = figures["harness_check"]["median_ms"] / figures["python_pass"]["median_ms"]
    return {**figures, "ratio_check_over_python_median": round(ratio, 2)}


def main() -> None:
    policy = Policy(load_config(CORPUS / "policy.yaml").guardrails)
    context = Context(branch="agent/work")
    actions = [ToolAction.from_json(line)
               for name in ("destructive.jsonl", "everyday.jsonl")
               for line in (CORPUS / name).read_text().splitlines() if line.strip()]
    shell_actions = [a for a in actions if a.tool == "shell_exec"]
    sql_actions = [a for a in actions if a.tool == "db_mutate"]

    def each(group: list[ToolAction], repeat: int) -> list[float]:
        samples: list[float] = []
        for action in group:
            samples += measure(lambda a=action: policy.evaluate(a, context), repeat)
        return samples

    long_shell = " && ".join(f"grep -n 'pattern {i}' src/module_{i}.py | head -3"
                             for i in range(200))[:10_240]
    long_shell = long_shell[: long_shell.rfind(" && ")]
    long_insert = "INSERT INTO orders (user_id, total, note) VALUES " + ", ".join(
        f"({i}, {i}.99, 'note {i}')" for i in range(400))
    long_insert = long_insert[: long_insert.rfind("), (") + 1]
    long_in = "UPDATE orders SET status = 'x' WHERE id IN (" + ", ".join(
        str(i) for i in range(1800)) + ")"
    long_mixed = "; ".join(f"UPDATE orders SET total = total + {i} WHERE id = {i}"
                           for i in range(200))[:10_240]
    long_mixed = long_mixed[: long_mixed.rfind(";")]

    def one(tool: str, key: str, text: str, repeat: int) -> dict[str, float]:
        action = ToolAction(tool, {key: text})
        return {"bytes": len(text), **micros(measure(lambda: policy.evaluate(action, context),
                                                      repeat))}

    started = time.perf_counter()
    for action in actions:
        policy.evaluate(action, context)
    corpus_seconds = time.perf_counter() - started

    megabyte_shell = "echo " + "word " * 200_000
    megabyte_sql = "INSERT INTO t (a) VALUES " + ", ".join(["(1)"] * 200_000)
    near_cap_sql = "SELECT " + " + ".join(["a"] * 40_000)
    cap = policy.guardrails.max_input_bytes - 100
    near_cap_shell = " && ".join(f"grep -n 'p{i}' m{i}.py" for i in range(20_000))
    near_cap_shell = near_cap_shell[: near_cap_shell.rfind(" && ", 0, cap)]
    near_cap_statements = "; ".join(f"UPDATE t SET a = {i} WHERE id = {i}" for i in range(20_000))
    near_cap_statements = near_cap_statements[: near_cap_statements.rfind(";", 0, cap)]

    def slowest_ms(tool: str, key: str, text: str) -> float:
        action = ToolAction(tool, {key: text})
        return round(max(measure(lambda: policy.evaluate(action, context), 3)) * 1e3, 2)

    results = {
        "typical_shell": micros(each(shell_actions, 20)),
        "typical_sql": micros(each(sql_actions, 20)),
        "long_10kb": {
            "shell_200_commands": one("shell_exec", "command", long_shell, 200),
            "sql_insert_400_rows": one("db_mutate", "sql", long_insert, 200),
            "sql_in_list_1800": one("db_mutate", "sql", long_in, 200),
            "sql_200_statements": one("db_mutate", "sql", long_mixed, 200),
        },
        "corpus": {"actions": len(actions), "seconds": round(corpus_seconds, 4),
                   "decisions_per_second": round(len(actions) / corpus_seconds)},
        "one_megabyte": {
            "shell_1mb_max_ms": slowest_ms("shell_exec", "command", megabyte_shell),
            "sql_1mb_max_ms": slowest_ms("db_mutate", "sql", megabyte_sql),
            "input_cap_bytes": policy.guardrails.max_input_bytes,
            "shell_commands_just_under_cap_max_ms": slowest_ms("shell_exec", "command",
                                                               near_cap_shell),
            "sql_statements_just_under_cap_max_ms": slowest_ms("db_mutate", "sql",
                                                               near_cap_statements),
            "sql_one_huge_expression_max_ms": slowest_ms("db_mutate", "sql", near_cap_sql),
        },
    }
    results["process_start"] = process_start(20)
    results["target"] = ("p99 < 1000 us for typical input; every input up to 1 MB < 1 s; "
                         "harness check within 5x of python -c pass")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
