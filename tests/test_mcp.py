"""The MCP server, driven by the official SDK's own client over stdio and over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from harness.fixtures import fixture_seed
from harness.sandbox import labels

pytestmark = [pytest.mark.docker, pytest.mark.postgres]


def sandboxes(client: docker.DockerClient) -> int:
    return sum(1 for c in client.containers.list(all=True, filters={"label": labels.SANDBOX})
               if c.labels.get(labels.KIND) == "sandbox")


@pytest.fixture()
def config_file(shop_repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "harness.yaml"
    path.write_text(f"""
orchestrator:
  blast_radius: {{max_commits: 2, max_database_rows: 5, dry_run: true}}
guardrails:
  protected_tables: [users]
state_injection:
  sources:
    - {{type: env_var, prefix: APP_, values: {{APP_MODE: mcp}}}}
    - {{type: db_schema, tables: [orders]}}
observability:
  tracing: {{path: "{tmp_path / 'traces'}"}}
target:
  repo: {shop_repo}
  database: {fixture_seed('shop')}
""")
    return path


async def exercise(client: Client) -> dict[str, Any]:
    """Call every tool once, one of them refused; read the state; see the change set."""
    seen: dict[str, Any] = {}
    seen["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
    calls = [("shell_exec", {"command": "echo $APP_MODE"}), ("list_files", {"path": "."}),
             ("write_file", {"path": "NOTES.md", "content": "notes\n"}),
             ("read_file", {"path": "NOTES.md"}), ("git_diff", {}),
             ("git_commit", {"message": "Add notes"}),
             ("db_query", {"sql": "SELECT count(*) FROM orders"}),
             ("db_mutate", {"sql": "UPDATE orders SET status = 'void' WHERE id = 1"}),
             ("db_mutate", {"sql": "DELETE FROM users"}),
             ("http_request", {"method": "GET", "url": "http://10.9.9.9/"})]
    results = []
    for name, arguments in calls:
        result = await client.call_tool(name, arguments)
        results.append((name, result.is_error, result.content[0].text))
    seen["results"] = results
    seen["changeset"] = json.loads((await client.call_tool("changeset", {})).content[0].text)
    prompt = await client.read_resource("harness://state/prompt")
    seen["prompt"] = prompt.contents[0].text  # type: ignore[union-attr]
    env = await client.read_resource("harness://state/env")
    seen["env"] = json.loads(env.contents[0].text)  # type: ignore[union-attr]
    return seen


def check(seen: dict[str, Any]) -> None:
    assert seen["tools"] == sorted(["shell_exec", "read_file", "write_file", "list_files",
                                    "git_commit", "git_diff", "db_query", "db_mutate",
                                    "http_request", "changeset"]), "no promote on a dry run"
    results = seen["results"]
    assert [index for index, (_, is_error, _) in enumerate(results) if is_error] == [8, 9]
    refused = results[8][2]
    assert "REFUSED" in refused and "sql.delete-without-where" in refused
    assert "not an allowed host" in results[9][2]
    assert json.loads(results[0][2])["stdout"] == "mcp\n"
    assert seen["changeset"]["workspace"]["commit_count"] == 1
    assert seen["changeset"]["rows"]["total"]["updated"] == 1
    assert "public.orders(" in seen["prompt"]
    assert seen["env"] == {"APP_MODE": "mcp"}


def test_over_stdio_one_session_one_episode_closed_at_the_end(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    before = sandboxes(docker_client)
    parameters = StdioServerParameters(command=sys.executable, args=[
        "-m", "harness.cli", "mcp", "--config", str(config_file)])

    async def session() -> dict[str, Any]:
        async with Client(parameters, read_timeout_seconds=120) as client:
            return await exercise(client)

    check(anyio.run(session))
    deadline = time.monotonic() + 30
    while sandboxes(docker_client) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sandboxes(docker_client) == before, "closing the session removed the sandbox"
    traces = list((config_file.parent / "traces").glob("*.jsonl"))
    assert len(traces) == 1 and "episode.end" in traces[0].read_text()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_over_http_the_tools_work_and_stopping_the_server_cleans_up(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    port = _free_port()
    before = sandboxes(docker_client)
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "mcp", "--config",
                               str(config_file), "--http", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)

        async def session() -> dict[str, Any]:
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=120) as one:
                return await exercise(one)

        check(anyio.run(session))
        assert sandboxes(docker_client) == before + 1
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sandboxes(docker_client) == before, "stopping the server removed the sandbox"


def test_promote_is_offered_only_when_allowed_and_promotes_the_session(
        shop_repo: Path, tmp_path: Path) -> None:
    from harness.config import parse_config
    from harness.mcpserver import build_server

    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(remote)], check=True)
    config = parse_config(f"orchestrator:\n  blast_radius: {{dry_run: false}}\n"
                          f"target:\n  repo: {remote}\n")
    dry, _ = build_server(parse_config(f"target:\n  repo: {remote}\n"))
    server, sessions = build_server(config)

    async def run() -> tuple[list[str], list[str], dict[str, Any]]:
        async with Client(dry) as client:
            dry_tools = [t.name for t in (await client.list_tools()).tools]
        async with Client(server) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            await client.call_tool("write_file", {"path": "x.txt", "content": "x\n"})
            await client.call_tool("git_commit", {"message": "Add x"})
            result = await client.call_tool("promote", {})
            return dry_tools, tools, json.loads(result.content[0].text)

    dry_tools, tools, promoted = anyio.run(run)
    assert "promote" not in dry_tools and "promote" in tools
    assert promoted["outcome"] == "promoted"
    branch = next(iter(promoted["refs"]))
    done = subprocess.run(["git", "-C", str(remote), "log", "-1", "--format=%s", branch],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "Add x"
    assert sessions.open_keys == [], "promoting ends the session's episode"
