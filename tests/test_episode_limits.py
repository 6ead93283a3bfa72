"""Every episode limit at its boundary, in a real sandbox: exactly the limit runs, one more is
refused (or cut) and says which limit, and the episode goes on."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.config import parse_config
from harness.episode import ActionResult, Episode
from harness.fixtures import fixture_seed

pytestmark = [pytest.mark.docker, pytest.mark.postgres]


def episode(repo: Path, tmp_path: Path, *, blast: dict[str, Any] | None = None,
            limits: dict[str, Any] | None = None, tools: str = "", database: bool = True
            ) -> Episode:
    cfg = parse_config(f"""
orchestrator:
  blast_radius: {json.dumps({"max_commits": 10, "max_database_rows": 100, **(blast or {})})}
  limits: {json.dumps(limits or {})}
{tools}
target:
  repo: {repo}
  {f"database: {fixture_seed('shop')}" if database else ""}
""")
    return Episode(cfg, trace_path=tmp_path / "trace.jsonl")


def act(ep: Episode, tool: str, **parameters: Any) -> ActionResult:
    return ep.act({"tool": tool, "parameters": parameters})


def refused_by(result: ActionResult) -> str | None:
    return result.refusal.rule if result.refusal is not None else None


def test_rows_exactly_at_the_budget_commit_and_one_more_rolls_back(
        shop_repo: Path, tmp_path: Path) -> None:
    with episode(shop_repo, tmp_path, blast={"max_database_rows": 5}) as ep:
        three = act(ep, "db_mutate", sql="UPDATE orders SET total = total + 1 WHERE id <= 3")
        assert three.status == "ok"
        over = act(ep, "db_mutate", sql="UPDATE orders SET total = total + 1 WHERE id IN (4, 5, 6)")
        assert refused_by(over) == "max_database_rows" and over.output["rolled_back"]
        assert over.output["rows_measured"] == 3
        two = act(ep, "db_mutate", sql="UPDATE orders SET total = total + 1 WHERE id IN (4, 5)")
        assert two.status == "ok" and two.counters["rows"] == 5, "exactly the budget"
        again = act(ep, "db_mutate", sql="UPDATE orders SET total = total + 1 WHERE id = 1")
        assert refused_by(again) == "max_database_rows", "the budget is spent"
        assert ep.sandbox.row_delta().rows == 5, "the refused statements left nothing"
        through_shell = act(ep, "shell_exec",
                            command="psql -qc \"UPDATE orders SET total = total + 1 WHERE id = 9\"")
        assert through_shell.output["rows_over_budget"] == 6, "measured after the shell"


def test_commits_exactly_at_the_budget_and_one_more(shop_repo: Path, tmp_path: Path) -> None:
    with episode(shop_repo, tmp_path, blast={"max_commits": 2}, database=False) as ep:
        for n in range(2):
            act(ep, "write_file", path=f"f{n}.txt", content="x\n")
            assert act(ep, "git_commit", message=f"c{n}").status == "ok"
        act(ep, "write_file", path="f2.txt", content="x\n")
        assert refused_by(act(ep, "git_commit", message="c2")) == "max_commits"
        shell = act(ep, "shell_exec", command="git add -A && git commit -qm c3")
        assert len(shell.output["commits_reset"]) == 1, "the commit past the budget is undone"
        assert ep.sandbox.workspace.commit_count() == 2


@pytest.mark.parametrize("setting", ["max_actions", "max_tool_calls"])
def test_the_last_allowed_action_runs(shop_repo: Path, tmp_path: Path, setting: str) -> None:
    blast, limits = ({setting: 3}, None) if setting == "max_tool_calls" else (None, {setting: 3})
    with episode(shop_repo, tmp_path, blast=blast, limits=limits, database=False) as ep:
        results = [act(ep, "shell_exec", command="true") for _ in range(4)]
    assert [r.status for r in results] == ["ok", "ok", "ok", "refused"]
    assert refused_by(results[3]) == "max_actions"


def test_wall_and_shell_time_run_out(shop_repo: Path, tmp_path: Path) -> None:
    with episode(shop_repo, tmp_path, limits={"max_wall_seconds": 3}, database=False) as ep:
        assert act(ep, "shell_exec", command="true").status == "ok"
        time.sleep(3.1 - ep.budget.counters.wall_seconds)
        assert refused_by(act(ep, "shell_exec", command="true")) == "max_wall_seconds"
    with episode(shop_repo, tmp_path, limits={"max_shell_seconds": 1.5}, database=False) as ep:
        capped = act(ep, "shell_exec", command="sleep 5")
        assert capped.output["timed_out"], "a command cannot outlive the shell budget"
        assert refused_by(act(ep, "shell_exec", command="true")) == "max_shell_seconds"
        assert act(ep, "read_file", path="README.md").status == "ok", "other tools go on"


def test_output_bytes_run_out_after_the_action_that_crosses_them(
        shop_repo: Path, tmp_path: Path) -> None:
    with episode(shop_repo, tmp_path, limits={"max_output_bytes": 4096}, database=False) as ep:
        first = act(ep, "shell_exec", command="head -c 4000 /dev/zero | tr '\\0' x")
        assert first.status == "ok" and first.counters["output_bytes"] == 4000
        second = act(ep, "shell_exec", command="head -c 96 /dev/zero | tr '\\0' y")
        assert second.status == "ok" and second.counters["output_bytes"] == 4096
        assert refused_by(act(ep, "read_file", path="README.md")) == "max_output_bytes"


def test_query_rows_exactly_the_cap_are_all_shown(shop_repo: Path, tmp_path: Path) -> None:
    tools = "tools: {max_query_rows: 3}"
    with episode(shop_repo, tmp_path, tools=tools) as ep:
        exact = act(ep, "db_query", sql="SELECT id FROM orders ORDER BY id LIMIT 3")
        over = act(ep, "db_query", sql="SELECT id FROM orders ORDER BY id LIMIT 4")
    assert exact.output["results"][0]["rows"] == [[1], [2], [3]]
    assert exact.output["results"][0]["more_rows"] is False
    assert over.output["results"][0]["rows"] == [[1], [2], [3]]
    assert over.output["results"][0]["more_rows"] is True


class _Sized(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        size = int(self.path.strip("/"))
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"z" * size)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def sized_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_response_exactly_the_cap_is_whole_and_one_byte_more_is_cut(
        shop_repo: Path, tmp_path: Path, sized_server: str) -> None:
    tools = f"tools: {{http: {{allow_hosts: ['{sized_server}'], max_response_bytes: 2048}}}}"
    with episode(shop_repo, tmp_path, tools=tools, database=False) as ep:
        exact = act(ep, "http_request", method="GET", url=f"http://{sized_server}/2048")
        over = act(ep, "http_request", method="GET", url=f"http://{sized_server}/2049")
    assert exact.output["body"] == "z" * 2048 and exact.output["truncated"] is False
    assert over.output["body"] == "z" * 2048 and over.output["truncated"] is True


def test_a_timeout_the_agent_asks_for_is_cut_to_the_configured_maximum(
        shop_repo: Path, tmp_path: Path) -> None:
    cfg = parse_config(f"sandbox: {{max_exec_timeout_s: 1.5}}\ntarget: {{repo: {shop_repo}}}\n")
    with Episode(cfg, trace_path=tmp_path / "t.jsonl") as ep:
        started = time.monotonic()
        result = act(ep, "shell_exec", command="sleep 30", timeout=100000)
        assert result.output["timed_out"] and time.monotonic() - started < 15
