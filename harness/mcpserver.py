"""`harness mcp`: an episode's tools served over the Model Context Protocol (stdio, or
streamable HTTP on 127.0.0.1), so an existing MCP-capable agent works in the sandbox
instead of on the real machine.

Over stdio the server process is the session: its episode opens at the first call and
closes (sandbox removed, trace written) when the client ends the session. Over HTTP the
SDK's 2026-07-28 protocol is stateless (no session id reaches a tool), so requests share
the server's one episode, closed when the server stops."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from harness.actions import ToolAction
from harness.config import Config
from harness.episode import ActionResult, Episode
from harness.tools import TOOLS

PROCESS = "process"


class Sessions:
    """The open episodes, by MCP session (stdio and stateless HTTP: one per process)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._episodes: dict[str, Episode] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def key(self, ctx: Context[Any] | None) -> str:
        """The session a request belongs to. Every request is the process's: stdio has one
        session, and the stateless HTTP protocol gives tools no session to tell apart."""
        return PROCESS

    def episode(self, key: str) -> tuple[Episode, threading.Lock]:
        """The session's episode, opened on first use."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._episodes:
                self._episodes[key] = Episode(self.config).open()
            return self._episodes[key], lock

    def close(self, key: str) -> None:
        """End a session: close its episode (the sandbox goes, the trace stays)."""
        with self._guard:
            episode = self._episodes.pop(key, None)
            self._locks.pop(key, None)
        if episode is not None:
            episode.close()

    def close_all(self) -> None:
        """End every session."""
        for key in list(self._episodes):
            self.close(key)

    @property
    def open_keys(self) -> list[str]:
        """Sessions with an open episode."""
        return list(self._episodes)


def build_server(config: Config, *, allow_promote: bool | None = None) -> tuple[MCPServer, Sessions]:
    """An MCP server offering the episode's tools, `changeset`, and (when allowed: not a
    dry run, or `allow_promote`) `promote`."""
    sessions = Sessions(config)
    server: MCPServer = MCPServer("harness", instructions=(
        "Tools of a transactional sandbox: a throwaway clone of the repository in a "
        "hardened container, and a copy of its database. Refused actions come back as "
        "tool errors with the reason; read the harness://state/prompt resource first."))

    async def act(ctx: Context[Any], tool: str, parameters: dict[str, Any]) -> str:
        def run() -> ActionResult:
            episode, lock = sessions.episode(sessions.key(ctx))
            with lock:
                return episode.act(ToolAction(tool, parameters))

        result = await anyio.to_thread.run_sync(run)
        if result.refusal is not None or result.status == "error":
            raise ToolError(result.observation() if result.refusal else
                            json.dumps(result.output, default=str))
        return json.dumps(result.output, default=str)

    async def shell_exec(command: str, ctx: Context[Any], timeout: float | None = None) -> str:
        return await act(ctx, "shell_exec", {"command": command}
                         | ({"timeout": timeout} if timeout is not None else {}))

    async def read_file(path: str, ctx: Context[Any]) -> str:
        return await act(ctx, "read_file", {"path": path})

    async def write_file(path: str, content: str, ctx: Context[Any]) -> str:
        return await act(ctx, "write_file", {"path": path, "content": content})

    async def list_files(ctx: Context[Any], path: str = ".") -> str:
        return await act(ctx, "list_files", {"path": path})

    async def git_commit(message: str, ctx: Context[Any]) -> str:
        return await act(ctx, "git_commit", {"message": message})

    async def git_diff(ctx: Context[Any]) -> str:
        return await act(ctx, "git_diff", {})

    async def db_query(sql: str, ctx: Context[Any]) -> str:
        return await act(ctx, "db_query", {"sql": sql})

    async def db_mutate(sql: str, ctx: Context[Any]) -> str:
        return await act(ctx, "db_mutate", {"sql": sql})

    async def http_request(method: str, url: str, ctx: Context[Any],
                           headers: dict[str, str] | None = None, body: str | None = None) -> str:
        parameters: dict[str, Any] = {"method": method, "url": url}
        if headers is not None:
            parameters["headers"] = headers
        if body is not None:
            parameters["body"] = body
        return await act(ctx, "http_request", parameters)

    async def changeset(ctx: Context[Any]) -> str:
        """What this session has changed so far: commits, files, lines, rows per table."""
        def run() -> str:
            episode, lock = sessions.episode(sessions.key(ctx))
            with lock:
                changes = episode.sandbox.changes()
                rows = episode.sandbox.row_delta()
            return json.dumps({"workspace": {k: v for k, v in changes.to_dict().items()
                                             if k != "diff"},
                               "rows": rows.summary() if rows else None}, default=str)
        return await anyio.to_thread.run_sync(run)

    for tool in (shell_exec, read_file, write_file, list_files, git_commit, git_diff, db_query,
                 db_mutate, http_request):
        # One wording for every client of the tools: the episode's own specs.
        server.add_tool(tool, name=tool.__name__, description=TOOLS[tool.__name__].description)
    server.add_tool(changeset, name="changeset")

    promote_allowed = (not config.orchestrator.blast_radius.dry_run) if allow_promote is None \
        else allow_promote
    if promote_allowed:
        async def promote(ctx: Context[Any]) -> str:
            """Promote this session's change set to the real systems within the limits; the
            session's sandbox is closed afterwards."""
            key = sessions.key(ctx)

            def run() -> str:
                episode, lock = sessions.episode(key)
                with lock:
                    result = episode.promote()
                sessions.close(key)
                return json.dumps(result.to_dict(), default=str)
            return await anyio.to_thread.run_sync(run)

        server.add_tool(promote, name="promote")

    @server.resource("harness://state/{part}", mime_type="application/json")
    async def state(part: str, ctx: Context[Any]) -> str:
        """The injected state: env, schema, files, auth_headers, or prompt (as text)."""
        def run() -> str:
            episode, _ = sessions.episode(sessions.key(ctx))
            data = episode.state.to_dict()
            if part == "prompt":
                return episode.state.prompt_text()
            if part not in data:
                raise ToolError(f"no state {part!r}; try one of {sorted(data)} or prompt")
            return json.dumps(data[part], default=str)
        return await anyio.to_thread.run_sync(run)

    return server, sessions


def _exit_on_sigterm() -> None:
    # MCP clients end a stdio server by closing stdin, then SIGTERM: either way the
    # `finally` below must run, or the session's sandbox would outlive it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve_stdio(config: Config, *, allow_promote: bool | None = None) -> None:
    """Serve over stdin/stdout: this process is the one session."""
    server, sessions = build_server(config, allow_promote=allow_promote)
    _exit_on_sigterm()
    try:
        server.run("stdio")
    finally:
        sessions.close_all()


def serve_http(config: Config, *, port: int, allow_promote: bool | None = None) -> None:
    """Serve streamable HTTP on 127.0.0.1:`port`/mcp until stopped; every episode still
    open is closed then."""
    import uvicorn

    server, sessions = build_server(config, allow_promote=allow_promote)
    app = server.streamable_http_app(host="127.0.0.1")

    async def closing_app(scope: Any, receive: Any, send: Any) -> None:
        # uvicorn re-raises SIGTERM once it has shut down, so a `finally` would not run:
        # the episodes close on the ASGI lifespan's shutdown message instead.
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def shutdown_aware() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(sessions.close_all)
            return message

        await app(scope, shutdown_aware, send)

    try:
        uvicorn.run(closing_app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        sessions.close_all()
