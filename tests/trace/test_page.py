"""A trace as a page and in a list: `harness trace show --html` renders, in a real
headless browser, the timeline, each action's decision, output, files and rows, and the
change set, with secrets redacted; `harness trace ls` lists the traces; `harness ps` the
live sandboxes with their owner and trace."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import parse_config
from harness.episode import Episode
from harness.fixtures import fixture_seed
from tests.browser import dom, screenshot

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
SECRET = "tr4ce-page-secret-9931"


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, check=False)


def test_a_trace_page_shows_each_action_and_the_change_set_and_ps_lists_the_sandbox(
        shop_repo: Path, tmp_path: Path) -> None:
    config = parse_config(f"""
state_injection:
  sources:
    - {{type: env_var, prefix: DEPLOY_, secret: true}}
target:
  repo: {shop_repo}
  database: {fixture_seed('shop')}
""")
    trace = tmp_path / "traces" / "episode.jsonl"
    with Episode(config, trace_path=trace, host_env={"DEPLOY_KEY": SECRET}) as episode:
        episode.act({"tool": "shell_exec", "parameters": {
            "command": "echo release notes > NOTES.md && echo $DEPLOY_KEY"}})
        episode.act({"tool": "db_mutate", "parameters": {
            "sql": "UPDATE orders SET status = 'void' WHERE id IN (1, 2)"}})
        episode.act({"tool": "shell_exec", "parameters": {"command": "rm -rf /"}})
        episode.act({"tool": "git_commit", "parameters": {"message": "Add release notes"}})
        live = harness("ps", "--json")  # while the episode runs
    assert live.returncode == 0, live.stderr
    mine = [s for s in json.loads(live.stdout) if s["trace_id"] == episode.trace_id]
    assert len(mine) == 1 and mine[0]["pid"] == os.getpid() and mine[0]["owner_alive"]
    assert mine[0]["status"] == "running" and mine[0]["age_seconds"] >= 0
    assert not [s for s in json.loads(harness("ps", "--json").stdout)
                if s["trace_id"] == episode.trace_id], "gone once the episode closed"

    page = tmp_path / "trace.html"
    done = harness("trace", "show", "--html", str(trace), "--out", str(page))
    assert done.returncode == 0, done.stderr
    assert SECRET not in page.read_text() and "***" in page.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page.read_text()), "self-contained"
    printed = harness("trace", "show", "--html", str(trace))
    assert printed.stdout == page.read_text(), "without --out the page goes to stdout"
    assert screenshot(page, tmp_path / "trace.png").stat().st_size > 10_000
    rendered = dom(page)
    assert rendered.by_id("timeline").find_all("rect", cls="bar")
    assert episode.trace_id in rendered.by_id("meta").all_text()
    shell, mutate, refused, commit = (rendered.by_id(f"action-{i}") for i in range(4))
    assert (shell.attrs["data-outcome"], refused.attrs["data-outcome"]) == ("ok", "refused")
    assert "allowed" in shell.all_text() and "NOTES.md" in shell.all_text()
    assert "release notes" in shell.all_text() or "***" in shell.all_text()
    assert "public.orders +0 ~2 -0" in " ".join(mutate.all_text().split())
    assert "refused by guardrail rule shell.recursive-delete" in refused.all_text()
    assert "Add release notes" in commit.all_text()
    changeset = " ".join(rendered.by_id("changeset").all_text().split())
    assert "1 commit(s), 1 file(s)" in changeset and "NOTES.md" in changeset
    assert "public.orders" in changeset and "2 row(s) changed" in changeset

    listed = harness("trace", "ls", str(trace.parent), "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["trace_id"], entry["actions"], entry["refused"]) == (
        episode.trace_id, 4, 1)
    assert entry["seconds"] > 0 and entry["path"] == str(trace)
    table = harness("trace", "ls", str(trace.parent))
    assert episode.trace_id[:12] in table.stdout


def test_what_is_no_trace_gets_exit_2_and_an_empty_folder_lists_nothing(
        tmp_path: Path) -> None:
    bogus = tmp_path / "x.jsonl"
    bogus.write_text("not json\n")
    done = harness("trace", "show", "--html", str(bogus))
    assert done.returncode == 2 and "is not a trace file" in done.stderr
    assert json.loads(harness("trace", "ls", str(tmp_path), "--json").stdout) == []
