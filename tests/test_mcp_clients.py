"""The MCP server driven by an independent client (fastmcp's), over stdio and over HTTP:
every tool's structured result validates against the output schema it declares and uses
only fields it declares, the annotations say what each tool may change, and `harness mcp`
finds its configuration without flags."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import docker
import jsonschema
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport

from harness import __version__
from harness.fixtures import fixture_seed
from harness.sandbox import labels
from tests import loopback
from tests.test_mcp import TOKEN, serving

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

READ_ONLY = {"read_file", "list_files", "git_diff", "db_query", "changeset"}
DESTRUCTIVE = {"db_mutate", "shell_exec", "write_file"}


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"hello": "world"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def web() -> Iterator[str]:
    with loopback.serving(_Hello) as address:
        yield address


@pytest.fixture()
def project(shop_repo: Path, tmp_path: Path, web: str) -> Path:
    """A folder holding a harness.yaml, as a client would start the server in."""
    (tmp_path / "harness.yaml").write_text(f"""
orchestrator:
  blast_radius: {{max_commits: 2, max_database_rows: 5, dry_run: true}}
tools:
  http: {{allow_hosts: ["{web}"]}}
observability:
  tracing: {{path: "{tmp_path / 'traces'}"}}
target:
  repo: {shop_repo}
  database: {fixture_seed('shop')}
""")
    return tmp_path


CALLS: list[tuple[str, dict[str, Any]]] = [
    ("shell_exec", {"command": "echo hi; echo there >&2; exit 3"}),
    ("list_files", {"path": "."}),
    ("write_file", {"path": "NOTES.md", "content": "notes\n"}),
    ("write_file", {"path": "blob.bin", "content_base64": "AAEC/w=="}),
    ("read_file", {"path": "NOTES.md"}),
    ("read_file", {"path": "blob.bin"}),
    ("git_diff", {}),
    ("git_commit", {"message": "Add notes"}),
    ("db_query", {"sql": "SELECT id, status FROM orders ORDER BY id LIMIT 2"}),
    ("db_mutate", {"sql": "UPDATE orders SET status = 'void' WHERE id = 1"}),
]


def _undeclared(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Fields in `value` that `schema` does not declare, at any depth it describes."""
    if not isinstance(value, dict) or "properties" not in schema:
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [f for item in value for f in _undeclared(item, schema["items"], f"{where}[]")]
        return []
    found = []
    for key, item in value.items():
        if key not in schema["properties"]:
            found.append(f"{where}.{key}")
        else:
            found += _undeclared(item, schema["properties"][key], f"{where}.{key}")
    return found


async def exercise(client: Client, web: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"server": client.server_info}
    tools = {tool.name: tool for tool in await client.list_tools()}
    seen["tools"] = tools
    results = []
    for name, arguments in [*CALLS, ("http_request", {"method": "GET", "url": f"http://{web}/"}),
                            ("changeset", {})]:
        results.append((name, await client.call_tool_mcp(name, arguments)))
    seen["results"] = results
    seen["empty_commit"] = await client.call_tool_mcp("git_commit", {"message": "again"})
    return seen


def check(seen: dict[str, Any]) -> None:
    assert seen["server"].name == "harness" and seen["server"].version == __version__
    tools = seen["tools"]
    for name, tool in tools.items():
        hints = tool.annotations
        assert hints is not None, name
        assert hints.read_only_hint is (name in READ_ONLY), name
        assert bool(hints.destructive_hint) is (name in DESTRUCTIVE), name
        assert bool(hints.open_world_hint) is (name == "http_request"), name
        schema = tool.output_schema
        assert schema is not None and schema["type"] == "object", name
        assert "result" not in schema["properties"], "fields, not one string holding JSON"
        jsonschema.Draft202012Validator.check_schema(schema)
    for name, result in seen["results"]:
        assert not result.is_error, (name, result.content)
        data = result.structured_content
        assert isinstance(data, dict), name
        jsonschema.validate(data, tools[name].output_schema)
        assert _undeclared(data, tools[name].output_schema) == [], name
        assert json.loads(result.content[0].text) == data, "text carries the same fields"
    by_name = dict(seen["results"])
    assert by_name["shell_exec"].structured_content["exit_code"] == 3
    assert by_name["shell_exec"].structured_content["stdout"] == "hi\n"
    reads = [r.structured_content for n, r in seen["results"] if n == "read_file"]
    assert reads[0]["content"] == "notes\n" and reads[1]["content_base64"] == "AAEC/w=="
    query = by_name["db_query"].structured_content["results"][0]
    assert query["columns"] == ["id", "status"] and len(query["rows"]) == 2
    assert by_name["http_request"].structured_content["status"] == 200
    changeset = by_name["changeset"].structured_content
    assert changeset["workspace"]["commit_count"] == 1
    assert changeset["rows"]["tables"]["public.orders"]["updated"] == 1
    empty = seen["empty_commit"]
    assert empty.is_error and "nothing to commit" in empty.content[0].text


def test_fastmcp_over_stdio_with_the_config_found_in_the_working_folder(
        project: Path, web: str) -> None:
    transport = StdioTransport(command=sys.executable, args=["-m", "harness.cli", "mcp"],
                               cwd=str(project),
                               env={k: v for k, v in os.environ.items() if k != "HARNESS_CONFIG"})

    async def session() -> dict[str, Any]:
        async with Client(transport, timeout=120) as client:
            return await exercise(client, web)

    check(anyio.run(session))


def test_fastmcp_over_http_with_the_config_from_the_environment(
        project: Path, web: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CONFIG", str(project / "harness.yaml"))
    with serving(None) as (url, _):
        async def session() -> dict[str, Any]:
            transport = StreamableHttpTransport(url, headers={"Authorization": f"Bearer {TOKEN}"})
            async with Client(transport, timeout=120) as client:
                return await exercise(client, web)

        check(anyio.run(session))


def test_mcp_without_any_config_exits_2_saying_where_it_looked(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "mcp"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "HARNESS_CONFIG"})
    assert done.returncode == 2
    assert "pass --config, set HARNESS_CONFIG, or put a harness.yaml" in done.stderr


def _sandbox_ids() -> set[str]:
    client = docker.from_env()
    try:
        return {c.labels[labels.SANDBOX] for c in client.containers.list(
            all=True, ignore_removed=True, filters=labels.own_home_selector())
            if c.labels.get(labels.KIND) == "sandbox"}
    finally:
        client.close()


def test_with_a_pool_a_session_gets_a_sandbox_made_before_it_connected(
        project: Path, web: str) -> None:
    before = _sandbox_ids()
    with serving(project / "harness.yaml", "--pool", "1") as (url, server):
        deadline = time.monotonic() + 120
        while not _sandbox_ids() - before and time.monotonic() < deadline:
            time.sleep(0.2)
        ready = _sandbox_ids() - before
        assert len(ready) == 1, "the pool made one before any session"

        async def session() -> dict[str, Any]:
            transport = StreamableHttpTransport(url, headers={"Authorization": f"Bearer {TOKEN}"})
            async with Client(transport, timeout=120) as client:
                done = await client.call_tool_mcp("shell_exec", {"command": "echo pooled"})
                return dict(done.structured_content or {})

        assert anyio.run(session)["stdout"] == "pooled\n"
        traces = list((project / "traces").glob("*.jsonl"))
        assert len(traces) == 1
        start = next(json.loads(line) for line in traces[0].read_text().splitlines()
                     if '"episode.start"' in line)
        assert start["attributes"]["sandbox"] in ready, "the session used the ready sandbox"
        deadline = time.monotonic() + 120
        while len(_sandbox_ids() - before) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.poll() is None
    deadline = time.monotonic() + 60
    while _sandbox_ids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sandbox_ids() - before == set(), "stopping the server removed the pool's sandboxes"


def test_every_result_an_episode_gives_fits_its_tools_declared_schema(
        project: Path, web: str) -> None:
    """Not only the happy path: timeouts, truncation, refusals by budget, errors, undone
    actions and binary files, each validated against the schema clients are given."""
    from harness.config import load_config
    from harness.episode import Episode
    from harness.tools import TOOLS

    config = load_config(project / "harness.yaml")
    actions = [
        ("shell_exec", {"command": "sleep 5", "timeout": 1}),
        ("shell_exec", {"command": "head -c 2000000 /dev/zero | tr '\\0' x"}),
        ("shell_exec", {"command": "exit 7"}),
        ("read_file", {"path": "missing.txt"}),
        ("read_file", {"path": "."}),
        ("write_file", {"path": "bin.dat", "content_base64": "/wA="}),
        ("read_file", {"path": "bin.dat"}),
        ("list_files", {"path": "nowhere"}),
        ("git_diff", {}),
        ("git_commit", {"message": "nothing yet?"}),
        ("db_query", {"sql": "SELECT 1 AS one, NULL AS nothing; SELECT now()"}),
        ("db_query", {"sql": "SELECT * FROM no_such_table"}),
        ("db_mutate", {"sql": "UPDATE orders SET status = 'void' WHERE id <= 3"}),
        ("db_mutate", {"sql": "UPDATE orders SET status = 'x' WHERE id <= 100"}),
        ("http_request", {"method": "GET", "url": f"http://{web}/"}),
        ("http_request", {"method": "GET", "url": "http://10.9.9.9/"}),
    ]
    with Episode(config) as episode:
        for name, parameters in actions:
            result = episode.act({"tool": name, "parameters": parameters})
            data = json.loads(json.dumps(result.output, default=str))
            jsonschema.validate(data, TOOLS[name].output)
            assert _undeclared(data, TOOLS[name].output) == [], (name, parameters, data)
