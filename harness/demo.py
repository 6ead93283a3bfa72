"""The demo behind `harness demo`: one sandbox on the bundled fixture repo, start to end."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from harness.actions import ToolAction
from harness.fixtures import fixture_repo, fixture_seed
from harness.guardrails import Policy
from harness.sandbox import Sandbox
from harness.sandbox.workspace import run_git

STEPS = [
    "git log --oneline",
    "python3 -m unittest -q 2>&1 | tail -1",
    "sed -i 's/0.20/0.25/' shop/orders.py && sed -i 's/12.00/12.50/' tests/test_orders.py",
    "python3 -m unittest -q 2>&1 | tail -1",
    "git commit -qam 'Raise the tax rate to 25%' && git log --oneline -1",
    "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), 1)' 2>&1 | tail -1",
    "psql -c \"UPDATE orders SET status = 'void' WHERE id IN (3, 4) RETURNING id, status\"",
    "psql -c \"INSERT INTO audit_log (message) VALUES ('voided 3 and 4')\"",
]
ROGUE = "rm -rf --no-preserve-root / 2>/dev/null; ls -A /workspace | wc -l"


def run_demo(console: Console) -> None:
    """Print each step's command and result, then the commit diff; nothing outside changes."""
    repo = fixture_repo()
    origin_head = run_git(repo, "rev-parse", "HEAD")
    with Sandbox(repo, database=str(fixture_seed("shop"))) as sandbox:
        console.print(Panel.fit(
            f"sandbox [bold]{sandbox.id}[/] over a throwaway clone of {repo}\n"
            f"with its own copy of the shop database; opened in "
            f"{sandbox.open_duration_s * 1000:.0f} ms; no network, read-only root, "
            "no capabilities, non-root user",
            title="harness demo",
        ))
        for command in STEPS:
            _step(console, sandbox, command)
        changes = sandbox.changes()
        console.print(Panel.fit(
            f"{changes.commit_count} commit(s) since base, {len(changes.files)} file(s), "
            f"+{changes.lines_added} -{changes.lines_removed}",
            title="workspace changes",
        ))
        console.print(Syntax(changes.diff, "diff", theme="ansi_dark"))
        delta = sandbox.row_delta()
        if delta is not None:
            table = Table("table", "inserted", "updated", "deleted", title="row delta (measured)")
            for name, counts in delta.summary()["tables"].items():
                table.add_row(name, *(str(counts[k]) for k in ("inserted", "updated", "deleted")))
            console.print(table)
        console.print("[bold]Now the agent goes rogue.[/] The guardrails judge the action first:")
        decision = Policy().evaluate(ToolAction("shell_exec", {"command": ROGUE}))
        console.print(f"[bold red]{decision.verdict.label}[/] by [bold]{decision.rule_id}[/]: "
                      f"{decision.reason}")
        console.print("[bold]Had it run anyway, only the throwaway sandbox would suffer:[/]")
        _step(console, sandbox, ROGUE)
    intact = run_git(repo, "rev-parse", "HEAD") == origin_head and not run_git(
        repo, "status", "--porcelain")
    console.print(f"sandbox removed (container, clone and database copy); the origin is "
                  f"{'intact' if intact else 'CHANGED'} at {origin_head[:12]}")


def _step(console: Console, sandbox: Sandbox, command: str) -> None:
    result = sandbox.exec(command, timeout=30)
    console.print(f"[bold cyan]$ {command}[/]")
    text = (result.stdout + result.stderr).rstrip()
    if text:
        console.print(text, markup=False)
    console.print(f"[dim]exit {result.exit_code}, {result.duration_s * 1000:.0f} ms[/]")
