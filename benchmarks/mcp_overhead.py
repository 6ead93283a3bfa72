"""What serving an episode over MCP costs: a tool call through the official SDK client
(stdio and streamable HTTP) against the same action on an `Episode` directly, and the
time from a new session to its first answer (the sandbox opens then).

Baseline: `Episode.act` of the same `shell_exec true`, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.config import parse_config
from harness.episode import Episode
from harness.fixtures import fixture_repo, fixture_seed

CALL = {"command": "true"}
TOKEN = secrets.token_urlsafe(32)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _through(client: Client, runs: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    await client.call_tool("shell_exec", CALL)
    first = time.perf_counter() - started
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await client.call_tool("shell_exec", CALL)
        samples.append(time.perf_counter() - started)
        assert not result.is_error, result.content
    return first, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    text = (f"target:\n  repo: {fixture_repo()}\n  database: {fixture_seed('shop')}\n"
            "orchestrator:\n  blast_radius: {max_tool_calls: 100000}\n"
            "observability:\n  logging: {level: warning}\n  tracing: {path: " + tempfile.mkdtemp()
            + "}\n")
    config_file = Path(tempfile.mkdtemp()) / "harness.yaml"
    config_file.write_text(text)

    with Episode(parse_config(text)) as episode:
        episode.act({"tool": "shell_exec", "parameters": CALL})
        direct = [timed(lambda: episode.act({"tool": "shell_exec", "parameters": CALL}))
                  for _ in range(args.runs)]

    command = [sys.executable, "-m", "harness.cli", "mcp", "--config", str(config_file)]

    async def over_stdio() -> tuple[float, list[float]]:
        async with Client(StdioServerParameters(command=command[0], args=command[1:]),
                          read_timeout_seconds=120) as client:
            return await _through(client, args.runs)

    stdio_first, stdio = anyio.run(over_stdio)

    port = _free_port()
    server = subprocess.Popen([*command, "--http", str(port)], stderr=subprocess.DEVNULL,
                              env=os.environ | {"HARNESS_MCP_TOKEN": TOKEN})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)

        async def over_http() -> tuple[float, list[float]]:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http, \
                    Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http),
                           read_timeout_seconds=120) as client:
                return await _through(client, args.runs)

        http_first, http = anyio.run(over_http)
    finally:
        server.terminate()
        server.wait(timeout=60)

    direct_s, stdio_s, http_s = summary(direct), summary(stdio), summary(http)
    print(json.dumps({
        "baseline_episode_act": direct_s,
        "mcp_stdio_call": stdio_s,
        "mcp_http_call": http_s,
        "ratio_stdio_vs_act": round(stdio_s["median_ms"] / direct_s["median_ms"], 2),
        "ratio_http_vs_act": round(http_s["median_ms"] / direct_s["median_ms"], 2),
        "first_call_with_sandbox_open_ms": {"stdio": round(stdio_first * 1000, 1),
                                            "http": round(http_first * 1000, 1)},
    }, indent=2))


if __name__ == "__main__":
    main()
