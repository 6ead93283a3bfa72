"""The MCP server, driven by the official SDK's own client over stdio and over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import docker
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import UNSUPPORTED_PROTOCOL_VERSION

from harness.fixtures import fixture_seed, fixtures_root
from harness.sandbox import labels

pytestmark = [pytest.mark.docker, pytest.mark.postgres]


def sandboxes(client: docker.DockerClient) -> int:
    return sum(1 for c in client.containers.list(all=True, filters=labels.own_home_selector(),
                                                 ignore_removed=True)
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
             ("http_request", {"method": "GET", "url": "http://10.9.9.9/"}),
             ("shell_exec", {"command": 5}),
             ("db_mutate", {"sql": "UPDATE orders SET status = 'void' WHERE id <= 100"})]
    results = []
    for name, arguments in calls:
        result = await client.call_tool(name, arguments)
        results.append((name, result.is_error, result.content[0].text))
    seen["results"] = results
    seen["changeset"] = json.loads((await client.call_tool("changeset", {})).content[0].text)
    seen["resources"] = {}
    for resource in (await client.list_resources()).resources:
        read = await client.read_resource(resource.uri)
        seen["resources"][str(resource.uri)] = read.contents[0].text  # type: ignore[union-attr]
    return seen


def check(seen: dict[str, Any]) -> None:
    assert seen["tools"] == sorted(["shell_exec", "read_file", "write_file", "list_files",
                                    "git_commit", "git_diff", "db_query", "db_mutate",
                                    "http_request", "changeset"]), "no promote on a dry run"
    results = seen["results"]
    assert [index for index, (_, is_error, _) in enumerate(results) if is_error] == [8, 9, 10, 11]
    refused = results[8][2]
    assert "REFUSED" in refused and "sql.delete-without-where" in refused
    assert "is not in tools.http.allow_hosts" in results[9][2]
    assert "shell_exec.command must be a string" in results[10][2]
    over = results[11][2]
    assert "budget max_database_rows" in over and "rolled back: nothing it changed was kept" in over
    assert json.loads(results[0][2])["stdout"] == "mcp\n"
    assert seen["changeset"]["workspace"]["commit_count"] == 1
    assert seen["changeset"]["rows"]["total"]["updated"] == 1
    resources = seen["resources"]
    assert sorted(resources) == sorted(f"harness://state/{part}" for part in
                                       ("prompt", "env", "schema", "files", "auth_headers"))
    assert "public.orders(" in resources["harness://state/prompt"]
    assert json.loads(resources["harness://state/env"]) == {"APP_MODE": "mcp"}
    assert "public.orders" in json.loads(resources["harness://state/schema"])
    assert json.loads(resources["harness://state/files"]) == []
    assert json.loads(resources["harness://state/auth_headers"]) == {}


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


TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def http_client(url: str, token: str = TOKEN, **options: Any) -> AsyncIterator[Client]:
    """The SDK's client over streamable HTTP, sending the server's bearer token."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http, Client(
            streamable_http_client(url, http_client=http), read_timeout_seconds=120,
            **options) as client:
        yield client


@contextlib.contextmanager
def serving(config_file: Path | None, *options: str, tokens: str = TOKEN
            ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`harness mcp --http` in its own process (without --config when `config_file` is
    None); its URL once it accepts connections."""
    port = _free_port()
    config = [] if config_file is None else ["--config", str(config_file)]
    server = subprocess.Popen([sys.executable, "-m", "harness.cli", "mcp", *config,
                               "--http", str(port), *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=os.environ | {"HARNESS_MCP_TOKEN": tokens})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", server
    finally:
        server.terminate()
        server.wait(timeout=60)
        if server.stderr:
            server.stderr.close()


def wait_for_sandboxes(client: docker.DockerClient, count: int) -> int:
    deadline = time.monotonic() + 30
    while sandboxes(client) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return sandboxes(client)


def test_over_http_each_session_has_its_own_sandbox_closed_when_the_session_ends(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    before = sandboxes(docker_client)
    seen: dict[str, Any] = {}
    with serving(config_file, "--max-sandboxes", "2") as (url, server):
        async def sessions() -> None:
            async with http_client(url) as one, http_client(url) as three:
                seen.update(await exercise(one))
                async with http_client(url) as two:
                    await two.call_tool("write_file", {"path": "TWO.md", "content": "two\n"})
                    seen["two"] = json.loads((await two.call_tool("changeset", {})).content[0].text)
                    seen["both_open"] = sandboxes(docker_client)
                    crowded = await three.call_tool("list_files", {})
                    seen["crowded"] = (crowded.is_error, crowded.content[0].text)
                seen["one_files"] = (await one.call_tool("list_files", {})).content[0].text
                seen["after_two"] = await anyio.to_thread.run_sync(
                    wait_for_sandboxes, docker_client, before + 1)
                # The slot frees once session two's episode has closed (trace written too).
                for _ in range(60):
                    admitted = await three.call_tool("list_files", {})
                    if not admitted.is_error or "--max-sandboxes" not in admitted.content[0].text:
                        break
                    await anyio.sleep(0.5)
                seen["three_admitted"] = not admitted.is_error
                seen["still"] = (await one.call_tool("shell_exec", {"command": "cat NOTES.md"})
                                 ).content[0].text

        anyio.run(sessions)
        check(seen)
        assert seen["two"]["workspace"]["commit_count"] == 0, "session two sees none of one's work"
        assert seen["two"]["rows"]["total"]["updated"] == 0
        assert "TWO.md" not in seen["one_files"], "session one sees none of two's work"
        assert seen["both_open"] == before + 2, "one sandbox per session"
        assert seen["crowded"][0] and "--max-sandboxes" in seen["crowded"][1], seen["crowded"]
        assert seen["after_two"] == before + 1, "ending session two closed its sandbox only"
        assert seen["three_admitted"], "a sandbox is free again once a session ends"
        assert json.loads(seen["still"])["stdout"] == "notes\n"
        assert wait_for_sandboxes(docker_client, before) == before, "ending the sessions closed them"
        assert server.poll() is None, "the server outlives its sessions"
    traces = sorted((config_file.parent / "traces").glob("*.jsonl"))
    assert len(traces) == 3 and all("episode.end" in t.read_text() for t in traces)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           **AUTH}


def open_raw_session(url: str) -> dict[str, str]:
    """The initialize handshake by hand (a client that may vanish without a DELETE)."""
    opened = httpx2.post(url, headers=HEADERS, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}})
    assert opened.status_code == 200, opened.text
    headers = HEADERS | {"mcp-session-id": opened.headers["mcp-session-id"],
                         "mcp-protocol-version": "2025-11-25"}
    httpx2.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return headers


def call_raw(url: str, headers: dict[str, str], tool: str, arguments: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(url, headers=headers, timeout=120, json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}})


def test_over_http_an_abandoned_session_is_closed_when_idle_and_stopping_closes_the_rest(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    before = sandboxes(docker_client)
    with serving(config_file, "--idle-timeout", "3") as (url, _):
        abandoned = open_raw_session(url)
        answer = call_raw(url, abandoned, "shell_exec", {"command": "echo here"})
        assert answer.status_code == 200 and "here" in answer.text
        assert sandboxes(docker_client) == before + 1
        assert wait_for_sandboxes(docker_client, before) == before, "the idle session was closed"
        late = call_raw(url, abandoned, "shell_exec", {"command": "echo late"})
        assert late.status_code == 404, "an ended session stays ended"

        open_at_stop = open_raw_session(url)
        assert call_raw(url, open_at_stop, "list_files", {}).status_code == 200
        assert sandboxes(docker_client) == before + 1
    assert sandboxes(docker_client) == before, "stopping the server closed the open session"


def test_an_idle_session_loses_its_sandbox_even_with_its_stream_open_and_is_told_why(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    before = sandboxes(docker_client)
    with serving(config_file, "--idle-timeout", "2") as (url, _):
        async def idle() -> tuple[int, bool, str]:
            # The SDK's client keeps a GET stream open all along: the transport never
            # counts it idle, the harness does.
            async with http_client(url) as client:
                await client.call_tool("shell_exec", {"command": "echo hi > HI.md"})
                held = sandboxes(docker_client)
                await anyio.to_thread.run_sync(wait_for_sandboxes, docker_client, before)
                late = await client.call_tool("list_files", {})
                return held, late.is_error, late.content[0].text
        held, refused, message = anyio.run(idle)
    assert held == before + 1
    assert refused and "reclaimed" in message and "--idle-timeout" in message, message
    assert "trace" in message and "initialize again" in message
    assert sandboxes(docker_client) == before


def test_one_token_cannot_hold_more_idle_sandboxes_than_its_share(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    before = sandboxes(docker_client)
    with serving(config_file, "--max-idle-per-token", "1", tokens="token-a-1234,token-b-5678"
                 ) as (url, _):
        async def crowd() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            async with http_client(url, "token-a-1234") as first, \
                    http_client(url, "token-a-1234") as second, \
                    http_client(url, "token-b-5678") as other:
                assert not (await first.call_tool("list_files", {})).is_error
                refused = await second.call_tool("list_files", {})
                seen["refused"] = (refused.is_error, refused.content[0].text)
                seen["other"] = (await other.call_tool("list_files", {})).is_error
                seen["open"] = sandboxes(docker_client)
                # A busy session is not idle: first keeps working while the cap holds.
                seen["first_again"] = (await first.call_tool("list_files", {})).is_error
            return seen
        seen = anyio.run(crowd)
    refused, message = seen["refused"]
    assert refused and "--max-idle-per-token 1" in message and "already holds 1 idle" in message
    assert "token sha256:" in message and "token-a" not in message, "the token is not shown"
    assert seen["other"] is False, "another client's token has its own share"
    assert seen["first_again"] is False
    assert seen["open"] == before + 2
    assert wait_for_sandboxes(docker_client, before) == before


def test_first_calls_racing_each_other_do_not_beat_the_idle_cap(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    before = sandboxes(docker_client)
    with serving(config_file, "--max-idle-per-token", "1") as (url, _):
        async def race() -> list[bool]:
            async with http_client(url) as one, http_client(url) as two:
                outcomes: list[bool] = []

                async def first_call(client: Client) -> None:
                    outcomes.append((await client.call_tool("list_files", {})).is_error)
                async with anyio.create_task_group() as group:
                    group.start_soon(first_call, one)
                    group.start_soon(first_call, two)
                return outcomes
        outcomes = anyio.run(race)
    assert sorted(outcomes) == [False, True], "one opened a sandbox, the other was refused"
    assert wait_for_sandboxes(docker_client, before) == before


def test_over_http_sessionless_requests_web_pages_and_tokenless_clients_are_refused(
        config_file: Path, docker_client: docker.DockerClient) -> None:
    before = sandboxes(docker_client)
    with serving(config_file) as (url, _):
        refusals: list[BaseException] = []

        async def modern_only() -> None:
            try:
                async with http_client(url, mode="2026-07-28") as client:
                    await client.call_tool("list_files", {})
            except* MCPError as group:
                refusals.extend(leaves(group))

        anyio.run(modern_only)
        assert len(refusals) == 1 and isinstance(refusals[0], MCPError)
        refused = refusals[0]
        assert refused.code == UNSUPPORTED_PROTOCOL_VERSION
        assert "one sandbox per session" in str(refused)
        assert "2025-11-25" in refused.error.data["supported"]

        # A web page the user visits must not drive the sandbox (or promote) through the
        # browser: foreign origins and rebound host names are refused.
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "page", "version": "0"}}}
        from_page = httpx2.post(url, json=initialize,
                                headers=HEADERS | {"Origin": "http://evil.example"})
        rebound = httpx2.post(url, json=initialize, headers=HEADERS | {"Host": "evil.example"})
        assert (from_page.status_code, rebound.status_code) == (403, 421)

        # Nor can another local process without the token.
        for headers in ({k: v for k, v in HEADERS.items() if k != "Authorization"},
                        HEADERS | {"Authorization": "Bearer wrong"}):
            anonymous = httpx2.post(url, json=initialize, headers=headers)
            assert anonymous.status_code == 401 and "Bearer" in anonymous.json()["error"]["message"]
    assert sandboxes(docker_client) == before


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


def test_a_sandbox_that_cannot_open_is_a_tool_error_that_says_why(tmp_path: Path) -> None:
    from harness.config import parse_config
    from harness.mcpserver import build_server

    (tmp_path / "plain").mkdir()
    server, sessions = build_server(parse_config(f"target:\n  repo: {tmp_path / 'plain'}\n"))

    async def run() -> tuple[bool, str]:
        async with Client(server) as client:
            result = await client.call_tool("list_files", {})
            return result.is_error, result.content[0].text

    is_error, text = anyio.run(run)
    assert is_error and f"WorkspaceError: {tmp_path / 'plain'} is not a git repository" in text
    assert sessions.open_keys == []


def test_the_tools_publish_the_episode_tool_schemas(tmp_path: Path) -> None:
    from harness.config import parse_config
    from harness.mcpserver import build_server
    from harness.tools import TOOLS

    server, _ = build_server(parse_config(f"target:\n  repo: {tmp_path}\n"))

    async def listed() -> dict[str, Any]:
        async with Client(server) as client:
            return {t.name: (t.description, t.input_schema) for t in (await client.list_tools()).tools}

    tools = anyio.run(listed)
    assert "exec" not in tools, "a tool for programs, not offered to models"
    for name, spec in ((n, s) for n, s in TOOLS.items() if s.offered):
        description, schema = tools[name]
        assert description == spec.description
        assert sorted(schema.get("required", [])) == sorted(spec.parameters["required"])
        published = {parameter: {k: v for k, v in property_schema.items() if k not in ("title", "default")}
                     for parameter, property_schema in schema["properties"].items()}
        expected = {parameter: {k: v for k, v in property_schema.items() if k != "default"}
                    for parameter, property_schema in spec.parameters["properties"].items()}
        assert published == expected, name
    assert tools["http_request"][1]["properties"]["method"]["enum"][0] == "GET"
    assert tools["list_files"][1]["properties"]["path"]["default"] == "."


def test_the_http_token_is_made_once_readable_by_its_owner_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.mcpserver import bearer_token

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HARNESS_MCP_TOKEN", raising=False)
    token = bearer_token()
    assert len(token) >= 40 and bearer_token() == token
    assert (tmp_path / "home" / "mcp-token").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("HARNESS_MCP_TOKEN", "from-the-environment")
    assert bearer_token() == "from-the-environment"


def test_a_config_without_a_target_repository_is_refused_at_start(tmp_path: Path) -> None:
    seed = fixtures_root() / "configs" / "agent-scaffold-config.yaml"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "mcp", "--config", str(seed)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "target.repo" in done.stderr and done.stdout == ""


def test_a_cancelled_call_stops_its_command(config_file: Path) -> None:
    from harness.config import load_config
    from harness.mcpserver import build_server

    server, sessions = build_server(load_config(config_file))

    async def run() -> str:
        async with Client(server) as client:
            await client.call_tool("shell_exec", {"command": "true"})  # the sandbox is open
            with anyio.move_on_after(3):
                await client.call_tool("shell_exec", {"command": "sleep 300; echo finished"})
            after = await client.call_tool("shell_exec", {"command": "ps -eo args"})
            with anyio.move_on_after(3):
                await client.call_tool("db_query", {"sql": "SELECT pg_sleep(300)"})
            query = await client.call_tool("db_query", {"sql": "SELECT 41 + 1 AS answer"})
            assert json.loads(query.content[0].text)["results"][0]["rows"] == [[42]], query
            return str(after.content[0].text)

    try:
        processes = json.loads(anyio.run(run))["stdout"]
    finally:
        sessions.close_all()
    assert "sleep 300" not in processes, processes
    trace = next((config_file.parent / "traces").glob("*.jsonl")).read_text()
    results = [found for line in trace.splitlines() for found in results_in(json.loads(line))]
    interrupted = [r for r in results if r.get("interrupted")]
    assert len(interrupted) == 1, results
    assert (interrupted[0]["exit_code"], interrupted[0]["stdout"]) == (137, "")


def results_in(record: Any) -> list[dict[str, Any]]:
    """Every command result (a dict with an exit code) nested in a trace record."""
    if isinstance(record, dict):
        found = [record] if "exit_code" in record and "interrupted" in record else []
        return found + [r for value in record.values() for r in results_in(value)]
    if isinstance(record, list):
        return [r for value in record for r in results_in(value)]
    return []
