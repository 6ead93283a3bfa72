"""Episodes end to end: real sandbox, real git, real PostgreSQL."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.config import Config, parse_config
from harness.episode import Episode
from harness.episode.replay import replay_trace
from harness.fixtures import fixture_seed, fixtures_root
from harness.trace.reader import read_trace
from tests.fix_pg import CHINOOK

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
SECRET = "s3cr3t-header-value-7781"


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def config(repo: Path, database: str | None, extra: str = "", **blast: int) -> Config:
    limits = {"max_commits": 2, "max_database_rows": 5, **blast}
    return parse_config(f"""
orchestrator:
  blast_radius: {json.dumps({**limits, "dry_run": True})}
  limits: {{max_actions: 40}}
guardrails:
  type: deterministic
  protected_tables: [users, employee]
  protected_paths: [".github/workflows/**"]
  rules:
    - {{pattern: "rm -rf /", action: block}}
    - {{pattern: "DROP DATABASE", action: block}}
state_injection:
  sources:
    - {{type: env_var, prefix: "APP_", values: {{APP_MODE: test}}}}
    - {{type: db_schema, tables: [orders, users]}}
    - {{type: auth_header, key: "X-API-Key", value_env: TEST_API_KEY}}
    - {{type: file, path: README.md}}
target:
  repo: {repo}
  {f"database: {database}" if database else ""}
{extra}
""")


def test_a_scripted_episode_hits_every_guardrail_and_budget_and_replays(
        shop_repo: Path, tmp_path: Path, echo_server: str) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")),
                 f"tools:\n  http:\n    allow_hosts: ['{echo_server}']\n")
    trace_file = tmp_path / "trace.jsonl"
    actions: list[Any] = [
        {"tool": "shell_exec", "parameters": {"command": "echo $APP_MODE && ls"}},
        {"tool": "read_file", "parameters": {"path": "README.md"}},
        {"tool": "list_files", "parameters": {"path": "shop"}},
        {"tool": "write_file", "parameters": {"path": "NOTES.md", "content": "notes\n"}},
        {"tool": "git_diff", "parameters": {}},
        {"tool": "git_commit", "parameters": {"message": "Add notes"}},
        {"tool": "db_query", "parameters": {"sql": "SELECT count(*) FROM orders"}},
        {"tool": "db_mutate", "parameters": {"sql": "UPDATE orders SET status = 'void' "
                                                    "WHERE id <= 3"}},
        {"tool": "db_mutate", "parameters": {"sql": "UPDATE orders SET status = 'void' "
                                                    "WHERE id BETWEEN 10 AND 20"}},
        {"tool": "db_mutate", "parameters": {"sql": "UPDATE users SET email = 'x' WHERE id = 1"}},
        {"tool": "db_mutate", "parameters": {"sql": "DELETE FROM orders"}},
        {"tool": "db_query", "parameters": {"sql": "DELETE FROM order_lines WHERE order_id = 1"}},
        {"tool": "shell_exec", "parameters": {"command": "rm -rf /"}},
        {"tool": "shell_exec", "parameters": {"command": "psql -c 'DROP DATABASE postgres'"}},
        {"tool": "write_file", "parameters": {"path": ".github/workflows/ci.yml",
                                              "content": "x"}},
        {"tool": "shell_exec", "parameters": {
            "command": "for i in 1 2 3; do git commit -q --allow-empty -m loop$i; done"}},
        {"tool": "git_commit", "parameters": {"message": "one too many"}},
        {"tool": "http_request", "parameters": {"method": "GET",
                                                "url": f"http://{echo_server}/status"}},
        {"tool": "http_request", "parameters": {"method": "GET", "url": "http://10.1.2.3/"}},
        "this is not json",
        {"tool": "teleport", "parameters": {}},
        {"tool": "shell_exec", "parameters": {"command": ["ls"]}},
        {"tool": "shell_exec", "parameters": {"command": "cat README.md | wc -l"}},
    ]
    with Episode(cfg, trace_path=trace_file, host_env={"TEST_API_KEY": SECRET}) as episode:
        assert episode.state.env == {"APP_MODE": "test"}
        assert set(episode.state.schema) == {"public.orders", "public.users"}
        assert episode.state.auth_headers == {"X-API-Key": True}
        assert episode.state.files[0].path == "README.md"
        assert len(episode.state.files[0].sha256) == 64
        assert episode.state.files[0].age_days is not None
        assert "public.orders(id integer not null" in episode.state.prompt_text()
        results = [episode.act(action) for action in actions]
        env = episode.sandbox.exec("env").stdout
        changeset = episode.close()

    by = {i: r for i, r in enumerate(results)}
    assert by[0].output["stdout"].startswith("test\n")
    assert "shop" in by[1].output["content"]
    assert by[5].status == "ok" and by[5].output["commit"]
    assert by[6].output["results"][0]["rows"] == [[200]]
    assert by[7].status == "ok"
    assert (by[8].refusal.kind, by[8].refusal.rule) == ("budget", "max_database_rows")
    assert by[8].output["rolled_back"] is True and by[8].output["rows_measured"] == 11
    assert (by[9].refusal.kind, by[9].refusal.rule) == ("guardrail", "sql.protected-table")
    assert by[10].refusal.rule == "sql.delete-without-where"
    assert by[11].refusal.rule == "tool.read-only"
    assert by[12].refusal.rule == "shell.recursive-delete"
    assert by[13].refusal.rule == "sql.drop-database"
    assert by[14].refusal.rule == "path.protected"
    assert by[15].status == "ok" and len(by[15].output["commits_reset"]) == 2
    assert by[16].refusal.rule == "max_commits"
    assert by[17].output["status"] == 200
    echoed = {k.lower(): v for k, v in json.loads(by[17].output["body"])["headers"].items()}
    assert echoed["x-api-key"] == "***", "added at the edge, and the agent never sees it"
    assert by[18].refusal.rule == "http.host-not-allowed"
    assert "10.1.2.3 is not in tools.http.allow_hosts" in by[18].refusal.reason
    assert by[19].refusal.rule == "bad-action"
    assert by[20].refusal.rule == "bad-parameters"
    assert by[21].refusal.rule == "bad-parameters"
    assert by[22].status == "ok", "the episode goes on after every refusal"

    assert changeset.commit_count == 2
    assert changeset.row_count == 3
    assert changeset.workspace.files[0].path == "NOTES.md"

    spans = read_trace(trace_file)
    assert {s["trace_id"] for s in spans} == {changeset.trace_id}
    action_spans = [s for s in spans if s["name"] == "action"]
    assert len(action_spans) == len(actions)
    ran = {s["parent_id"] for s in spans if s["name"] in ("execute", "measure")}
    checked = {s["parent_id"] for s in spans if s["name"] == "guardrail"}
    assert {s["span_id"] for s in action_spans if s["attributes"]["status"] != "refused"} <= ran
    assert len(checked) >= 18
    assert spans[0]["name"] == "episode.start"
    made = spans[0]["attributes"]
    assert made["workspace_view"]["view"] in ("overlay", "clone")
    assert made["database_clone"]["method"] in ("reflink", "copy")
    assert made["database_clone"]["seconds"] > 0 and made["database_clone"]["detail"]
    assert [s["name"] for s in spans[-2:]] == ["episode.end", "episode"]
    assert [s["name"] for s in spans if not s["parent_id"]] == ["episode"], "one root"
    assert SECRET not in trace_file.read_text()
    assert SECRET not in env
    assert all(SECRET not in json.dumps(r.to_dict()) for r in results)

    report = replay_trace(trace_file, trace_path=tmp_path / "replay.jsonl")
    assert report.actions == len(actions)
    assert report.divergences == []
    assert SECRET not in (tmp_path / "replay.jsonl").read_text()


def test_episode_on_chinook_measures_rows_made_through_the_shell(
        shop_repo: Path, tmp_path: Path) -> None:
    cfg = config(shop_repo, str(CHINOOK), max_database_rows=100)
    with Episode(cfg, trace_path=tmp_path / "t.jsonl") as episode:
        routine = [{"tool": "db_query", "parameters": {
            "sql": f"SELECT name FROM artist WHERE artist_id = {i}"}} for i in range(1, 9)]
        routine += [{"tool": "shell_exec", "parameters": {
            "command": f"psql -tA -c 'SELECT count(*) FROM track WHERE genre_id = {i}'"}}
            for i in range(1, 7)]
        routine += [{"tool": "db_mutate", "parameters": {
            "sql": f"UPDATE genre SET name = name || '!' WHERE genre_id = {i}"}}
            for i in range(1, 4)]
        routine += [{"tool": "list_files", "parameters": {}},
                    {"tool": "git_diff", "parameters": {}}]
        assert all(episode.act(action).status == "ok" for action in routine)
        result = episode.act({"tool": "shell_exec", "parameters": {
            "command": "psql -c \"UPDATE track SET unit_price = 1.29 WHERE album_id = 1\""}})
        assert result.status == "ok" and result.output["stdout"].strip() == "UPDATE 10"
        refused = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "UPDATE employee SET title = 'x' WHERE employee_id = 1"}})
        assert refused.refusal is not None and refused.refusal.rule == "sql.protected-table"
        over = episode.act({"tool": "shell_exec", "parameters": {
            "command": "psql -c \"DELETE FROM playlist_track WHERE playlist_id = 1\""}})
        assert over.output["rows_over_budget"] > 100
        blocked = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "UPDATE track SET unit_price = 0.99 WHERE track_id = 5"}})
        assert blocked.refusal is not None and blocked.refusal.rule == "max_database_rows"
        changeset = episode.close()
    assert changeset.rows is not None
    assert changeset.rows.summary()["tables"]["public.track"]["updated"] == 10
    assert changeset.rows.summary()["tables"]["public.genre"]["updated"] == 3
    assert len(read_trace(tmp_path / "t.jsonl")) > 4 * 20


@pytest.mark.parametrize(("limits", "first_refused", "rule"), [
    ("{max_actions: 2}", 2, "max_actions"),
    ("{max_shell_seconds: 1}", 1, "max_shell_seconds"),
    ("{max_output_bytes: 2048}", 1, "max_output_bytes"),
])
def test_episode_limits(shop_repo: Path, tmp_path: Path, limits: str, first_refused: int,
                        rule: str) -> None:
    cfg = parse_config(f"orchestrator:\n  limits: {limits}\ntarget:\n  repo: {shop_repo}\n")
    with Episode(cfg, trace_path=tmp_path / "t.jsonl") as episode:
        results = [episode.act({"tool": "shell_exec", "parameters": {
            "command": "sleep 1.2; head -c 4000 /dev/zero | tr '\\0' x"}}) for _ in range(3)]
    refused = [i for i, r in enumerate(results) if r.status == "refused"]
    assert refused and refused[0] == first_refused
    assert results[first_refused].refusal.rule == rule  # type: ignore[union-attr]


def test_a_config_without_a_target_repo_is_an_error() -> None:
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=r"target\.repo"):
        Episode(parse_config(""))


def test_harness_run_takes_the_reference_configuration_with_a_target(
        shop_repo: Path, tmp_path: Path) -> None:
    seed = fixtures_root() / "configs" / "agent-scaffold-config.yaml"
    cfg = tmp_path / "harness.yaml"
    cfg.write_text(seed.read_text() + f"target:\n  repo: {shop_repo}\n")
    actions = tmp_path / "actions.jsonl"
    actions.write_text('{"tool": "shell_exec", "parameters": {"command": "ls"}}\n'
                       '{"tool": "shell_exec", "parameters": {"command": "rm -rf /"}}\n'
                       '{"tool": "write_file", "parameters": {"path": "a.txt", "content": "a"}}\n'
                       '{"tool": "git_commit", "parameters": {"message": "a"}}\n')
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--config", str(cfg),
                           "--actions", str(actions), "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [a["status"] for a in report["actions"]] == ["ok", "refused", "ok", "ok"]
    assert report["dry_run"] is True
    assert report["changeset"]["commits"] == 1
    shown = subprocess.run([sys.executable, "-m", "harness.cli", "trace", "show",
                            report["trace"]], capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and "guardrail" in shown.stdout


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        _Collector.received.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_trace_goes_to_an_otlp_endpoint_with_genai_attributes(
        shop_repo: Path, tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    cfg = parse_config(f"observability:\n  tracing: {{otlp_endpoint: '{endpoint}'}}\n"
                       f"target:\n  repo: {shop_repo}\n")
    try:
        with Episode(cfg, trace_path=tmp_path / "t.jsonl") as episode:
            seen = episode.act({"tool": "shell_exec", "parameters": {
                "command": "echo $HARNESS_TRACE_ID"}})
            episode.act({"tool": "shell_exec", "parameters": {"command": "rm -rf /"}})
        assert seen.output["stdout"].strip() == episode.trace_id
    finally:
        server.shutdown()
        server.server_close()
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(_Collector.received))
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert {s.trace_id.hex() for s in spans} == {episode.trace_id}
    tools = [s for s in spans if s.name == "execute_tool shell_exec"]
    assert len(tools) == 2
    attributes = {a.key: a.value.string_value for a in tools[0].attributes}
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "shell_exec"
    assert {s.name for s in spans} >= {"guardrail", "execute", "measure", "episode.start"}
    refused = [s for s in tools if s.status.code == 2]
    assert len(refused) == 1, "the refused action is marked as an error"


@pytest.mark.parametrize("include", [True, False])
def test_include_tool_io_records_full_outputs_in_the_trace(
        shop_repo: Path, tmp_path: Path, include: bool, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(f"observability:\n  logging: {{level: debug, include_tool_io: {include}}}\n"
                       f"target:\n  repo: {shop_repo}\n")
    with caplog.at_level("DEBUG", logger="harness.episode"), \
            Episode(cfg, trace_path=tmp_path / "t.jsonl") as episode:
        episode.act({"tool": "shell_exec", "parameters": {
            "command": "for i in $(seq 100); do printf marker-; done"}})
    marker = "marker-" * 100  # in the output only (past the 512-byte digest limit)
    text = (tmp_path / "t.jsonl").read_text()
    assert (marker in text) is include, "long outputs are digested unless asked for"
    assert "#0 shell_exec ok" in caplog.text
    assert ("parameters" in caplog.text) is include
