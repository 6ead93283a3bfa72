"""The demo behind `harness demo`: one episode on the bundled fixtures, start to end."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from harness.config import parse_config
from harness.episode import ActionResult, Episode
from harness.fixtures import fixture_repo, fixture_seed
from harness.sandbox import Sandbox
from harness.sandbox.workspace import run_git

ROGUE = "rm -rf --no-preserve-root /"
ACTIONS: list[dict[str, Any]] = [
    {"tool": "shell_exec", "parameters": {"command": "git log --oneline && echo $APP_MODE"}},
    {"tool": "shell_exec", "parameters": {"command": "python3 -m unittest -q 2>&1 | tail -1"}},
    {"tool": "shell_exec", "parameters": {
        "command": "sed -i 's/0.20/0.25/' shop/orders.py && sed -i 's/12.00/12.50/' "
                   "tests/test_orders.py && python3 -m unittest -q 2>&1 | tail -1"}},
    {"tool": "git_commit", "parameters": {"message": "Raise the tax rate to 25%"}},
    {"tool": "db_query", "parameters": {"sql": "SELECT status, count(*) FROM orders "
                                               "GROUP BY status ORDER BY status"}},
    {"tool": "db_mutate", "parameters": {"sql": "UPDATE orders SET status = 'void' "
                                                "WHERE id IN (3, 4)"}},
    {"tool": "db_mutate", "parameters": {"sql": "UPDATE orders SET status = 'void' "
                                                "WHERE status = 'open'"}},
    {"tool": "db_mutate", "parameters": {"sql": "DELETE FROM orders"}},
    {"tool": "db_mutate", "parameters": {"sql": "UPDATE users SET email = 'x' WHERE id = 1"}},
    {"tool": "shell_exec", "parameters": {"command": ROGUE}},
    {"tool": "shell_exec", "parameters": {"command": "echo cm0gLXJmIC8K | base64 -d | sh"}},
    {"tool": "shell_exec", "parameters": {
        "command": "for i in 1 2 3; do git commit -q --allow-empty -m \"loop $i\"; done"}},
]
CONFIG = """
orchestrator:
  blast_radius: {{max_commits: 2, max_database_rows: 5, dry_run: true}}
guardrails:
  type: deterministic
  protected_tables: [users]
  rules:
    - {{pattern: "rm -rf /", action: block}}
    - {{pattern: "DROP DATABASE", action: block}}
state_injection:
  sources:
    - {{type: env_var, prefix: "APP_", values: {{APP_MODE: demo}}}}
    - {{type: db_schema, tables: [users, orders]}}
    - {{type: file, path: README.md}}
target:
  repo: {repo}
  database: {seed}
"""


def run_demo(console: Console) -> None:
    """Run the episode, print each action's outcome, the change set and the trace."""
    repo = fixture_repo()
    origin_head = run_git(repo, "rev-parse", "HEAD")
    config = parse_config(CONFIG.format(repo=repo, seed=fixture_seed("shop")), origin="demo")
    with Episode(config) as episode:
        console.print(Panel.fit(
            f"episode {episode.trace_id}\nsandbox {episode.sandbox.id}: a hardened container "
            f"(no network, read-only root, no capabilities, non-root) over a throwaway clone of "
            f"{repo}, with its own copy of the shop database\nblast radius: 2 commits, "
            "5 rows; users is a protected table", title="harness demo"))
        console.print("[bold]State injected for the agent:[/]")
        console.print(episode.state.prompt_text().split("File README.md")[0].rstrip(),
                      markup=False)
        for action in ACTIONS:
            _show(console, action, episode.act(action))
        changeset = episode.close()
    summary = changeset.summary()
    console.print(Panel.fit(
        f"{summary['commits']} commit(s), {summary['files_changed']} file(s), "
        f"+{summary['lines_added']} -{summary['lines_removed']} lines; dry run: nothing "
        "is promoted", title="change set"))
    console.print(Syntax(changeset.workspace.diff, "diff", theme="ansi_dark"))
    if changeset.rows is not None:
        table = Table("table", "inserted", "updated", "deleted", title="row delta (measured)")
        for name, counts in changeset.rows.summary()["tables"].items():
            table.add_row(name, *(str(counts[k]) for k in ("inserted", "updated", "deleted")))
        console.print(table)
    console.print("[bold]Had the blocked command run anyway, only a throwaway sandbox would "
                  "suffer:[/]")
    with Sandbox(repo) as sandbox:
        wrecked = sandbox.exec(f"{ROGUE} 2>/dev/null; ls -A /workspace | wc -l")
    console.print(f"  files left in that sandbox's /workspace: {wrecked.stdout.strip()}")
    intact = run_git(repo, "rev-parse", "HEAD") == origin_head and not run_git(
        repo, "status", "--porcelain")
    console.print(f"sandbox removed (container, clone and database copy); the origin is "
                  f"{'intact' if intact else 'CHANGED'} at {origin_head[:12]}")
    console.print(f"trace: {episode.trace_path}  (harness trace show / harness replay)")


def _show(console: Console, action: dict[str, Any], result: ActionResult) -> None:
    parameters = action["parameters"]
    text = parameters.get("command") or parameters.get("sql") or parameters.get("message")
    console.print(f"[bold cyan]{action['tool']}[/] {text}", markup=True, highlight=False,
                  soft_wrap=True)
    if result.refusal is not None:
        console.print(f"  [bold red]refused[/] ({result.refusal.kind} "
                      f"[bold]{result.refusal.rule}[/]): {result.refusal.reason}")
        return
    output = result.output
    if "stdout" in output:
        shown = (output["stdout"] + output["stderr"]).strip()
        if shown:
            console.print("  " + shown.replace("\n", "\n  "), markup=False)
    elif "results" in output:
        last = output["results"][-1]
        console.print("  " + (json.dumps(last.get("rows")) if "rows" in last
                              else str(last["status"])), markup=False)
    if "commits_reset" in output:
        console.print(f"  [yellow]{len(output['commits_reset'])} commit(s) over the budget "
                      "were reset away[/]")
    console.print(f"  [dim]{result.status}, {result.duration_s * 1000:.0f} ms; commits "
                  f"{result.counters['commits']}, rows {result.counters['rows']}[/]")
