"""`harness mcp`: an episode's tools served over the Model Context Protocol (stdio, or
streamable HTTP on 127.0.0.1), so an existing MCP-capable agent works in the sandbox
instead of on the real machine.

Every MCP session gets its own episode, opened at its first call and closed (sandbox
removed, trace written) when the session ends. Over stdio the server process is the
session. Over HTTP a session is what the initialize handshake opens (one
`Mcp-Session-Id`); it ends with the client's DELETE, the idle timeout, or the server.
The 2026-07-28 protocol has no sessions at all, so the HTTP server refuses it with the
versions it does serve, and clients fall back to the handshake."""

from __future__ import annotations

import contextlib
import hmac
import inspect
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.connection import Connection
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import INVALID_REQUEST, UNSUPPORTED_PROTOCOL_VERSION, Resource
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import WithJsonSchema

from harness.actions import ToolAction
from harness.config import Config
from harness.episode import ActionResult, Episode
from harness.errors import HarnessError
from harness.sandbox.home import harness_home
from harness.tools import TOOLS, ToolSpec

_LOG = logging.getLogger("harness.mcp")
PROCESS = "process"
DEFAULT_IDLE_TIMEOUT = 30 * 60.0
DEFAULT_MAX_SANDBOXES = 16
_CLOSE_HOOKED = "harness.close-hooked"
T = TypeVar("T")


def _connection(ctx: Context[Any]) -> Connection:
    # The SDK hands tools no public handle on their connection (whose `state` and
    # `exit_stack` are public); the request's session proxy holds it. The mcp requirement
    # is pinned below the next minor version and tests/test_mcp.py exercises this path.
    connection = getattr(ctx.request_context.session, "_connection", None)
    if not isinstance(connection, Connection):
        raise RuntimeError("this version of the mcp SDK gives tools no connection; "
                           "harness cannot tell MCP sessions apart")
    return connection


class Sessions:
    """The open episodes, one per MCP session: the process's one (stdio), or one per
    HTTP session, closed when the SDK tears that session's connection down."""

    def __init__(self, config: Config, *, per_connection: bool = False,
                 max_sandboxes: int | None = None) -> None:
        self.config = config
        self.per_connection = per_connection
        self.max_sandboxes = max_sandboxes
        self._reserved = 0
        self._episodes: dict[str, Episode] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._ended: set[str] = set()
        self._guard = threading.Lock()

    async def run(self, ctx: Context[Any], work: Callable[[Episode], T]) -> T:
        """`work` on the calling session's episode (opened on first use), one call at a
        time per session, off the event loop."""
        key = self._session(ctx)

        def in_thread() -> T:
            try:
                episode, lock = self._episode(key)
                with lock:
                    return work(episode)
            except HarnessError as error:
                # The agent (and its user) read tool errors: say what went wrong.
                raise ToolError(f"{type(error).__name__}: {error}") from error
        return await anyio.to_thread.run_sync(in_thread)

    def _session(self, ctx: Context[Any]) -> str:
        if not self.per_connection:
            return PROCESS
        connection = _connection(ctx)
        key = connection.session_id
        if key is None:
            raise ToolError("this request belongs to no MCP session; harness keeps one sandbox "
                            "per session: connect with the initialize handshake")
        if not connection.state.get(_CLOSE_HOOKED):
            connection.state[_CLOSE_HOOKED] = True

            async def session_ended() -> None:
                await anyio.to_thread.run_sync(self.end, key)
            connection.exit_stack.push_async_callback(session_ended)
        return key

    async def restart(self, ctx: Context[Any]) -> None:
        """Close the calling session's episode; its next call opens a fresh one."""
        key = self._session(ctx)
        await anyio.to_thread.run_sync(self.close, key)

    def _episode(self, key: str) -> tuple[Episode, threading.Lock]:
        with self._guard:
            if key in self._ended:
                raise ToolError("this MCP session has ended and its sandbox is closed")
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._episodes:
                self._reserve()
                try:
                    self._episodes[key] = Episode(self.config).open()
                except BaseException:
                    self._release()
                    raise
                _LOG.info("MCP session %s: episode %s opened", key, self._episodes[key].trace_id)
                with self._guard:
                    ended_meanwhile = key in self._ended
                if ended_meanwhile:
                    self._episodes.pop(key).close()
                    self._release()
                    raise ToolError("this MCP session has ended and its sandbox is closed")
            return self._episodes[key], lock

    def _reserve(self) -> None:
        with self._guard:
            if self.max_sandboxes is not None and self._reserved >= self.max_sandboxes:
                raise ToolError(f"{self.max_sandboxes} sandboxes are open, as many as this "
                                "server keeps at once (--max-sandboxes): try again when a "
                                "session has ended")
            self._reserved += 1

    def _release(self) -> None:
        with self._guard:
            self._reserved -= 1

    def close(self, key: str) -> None:
        """Close the session's episode (the sandbox goes, the trace stays) once its
        running call, if any, is done; a later call opens a fresh one."""
        with self._guard:
            episode = self._episodes.pop(key, None)
            lock = self._locks.pop(key, None)
        if episode is not None and lock is not None:
            try:
                with lock:
                    episode.close()
            finally:
                self._release()
            _LOG.info("MCP session %s: episode %s closed", key, episode.trace_id)

    def end(self, key: str) -> None:
        """The session is over: close its episode and open none for it again."""
        with self._guard:
            self._ended.add(key)
        self.close(key)

    def close_all(self) -> None:
        """End every session."""
        for key in list(self._episodes):
            self.end(key)

    @property
    def open_keys(self) -> list[str]:
        """Sessions with an open episode."""
        return list(self._episodes)


STATE_RESOURCES = {
    "prompt": ("text/plain", "The injected state as the text an agent's prompt would hold."),
    "env": ("application/json", "Environment variables set in the sandbox's shell."),
    "schema": ("application/json", "The database's tables: columns, keys, row estimates."),
    "files": ("application/json", "Injected files with sha256, age and uncommitted changes."),
    "auth_headers": ("application/json",
                     "Header names the harness adds to HTTP requests (never their values)."),
}


class _HarnessMCPServer(MCPServer):
    """Lists each part of the injected state as a resource. They are read through the
    `harness://state/{part}` template, because only a template's reader learns the
    session it serves."""

    async def list_resources(self) -> list[Resource]:
        return [*await super().list_resources(), *(
            Resource(uri=f"harness://state/{part}", name=part, description=description,
                     mime_type=mime_type)
            for part, (mime_type, description) in STATE_RESOURCES.items())]


def _episode_tool(spec: ToolSpec, act: Callable[[Context[Any], str, dict[str, Any]], Awaitable[str]]
                  ) -> Callable[..., Awaitable[str]]:
    """An MCP tool function for one of the episode's tools, whose parameters publish the
    tool's own JSON schema (the SDK derives input schemas from signatures). The episode
    validates the arguments itself, as it does for every other client."""
    async def tool(ctx: Context[Any], **arguments: Any) -> str:
        return await act(ctx, spec.name, {name: value for name, value in arguments.items()
                                          if value is not None})

    required = set(spec.parameters["required"])
    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context[Any])]
    for name, schema in spec.parameters["properties"].items():
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Any, WithJsonSchema(schema)],
            default=inspect.Parameter.empty if name in required else schema.get("default")))
    tool.__name__ = spec.name
    tool.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": str}
    return tool


def build_server(config: Config, *, allow_promote: bool | None = None,
                 per_connection: bool = False, max_sandboxes: int | None = None
                 ) -> tuple[MCPServer, Sessions]:
    """An MCP server offering the episode's tools, `changeset`, and (when allowed: not a
    dry run, or `allow_promote`) `promote`; `per_connection` keys episodes on HTTP
    sessions instead of the process, at most `max_sandboxes` open at once."""
    sessions = Sessions(config, per_connection=per_connection, max_sandboxes=max_sandboxes)
    server: MCPServer = _HarnessMCPServer("harness", instructions=(
        "Tools of a transactional sandbox: a throwaway clone of the repository in a "
        "hardened container, and a copy of its database. Refused actions come back as "
        "tool errors with the reason; read the harness://state/prompt resource first."))

    async def act(ctx: Context[Any], tool: str, parameters: dict[str, Any]) -> str:
        result: ActionResult = await sessions.run(
            ctx, lambda episode: episode.act(ToolAction(tool, parameters)))
        if result.refusal is not None or result.status == "error":
            raise ToolError(result.observation() if result.refusal else
                            json.dumps(result.output, default=str))
        return json.dumps(result.output, default=str)

    async def changeset(ctx: Context[Any]) -> str:
        """What this session has changed so far: commits, files, lines, rows per table."""
        def measure(episode: Episode) -> str:
            changes = episode.sandbox.changes()
            rows = episode.sandbox.row_delta()
            return json.dumps({"workspace": {k: v for k, v in changes.to_dict().items()
                                             if k != "diff"},
                               "rows": rows.summary() if rows else None}, default=str)
        return await sessions.run(ctx, measure)

    for spec in TOOLS.values():
        server.add_tool(_episode_tool(spec, act), name=spec.name, description=spec.description)
    server.add_tool(changeset, name="changeset")

    promote_allowed = (not config.orchestrator.blast_radius.dry_run) if allow_promote is None \
        else allow_promote
    if promote_allowed:
        async def promote(ctx: Context[Any]) -> str:
            """Promote this session's change set to the real systems within the limits. The
            sandbox is closed afterwards; a later call starts a fresh one."""
            result = await sessions.run(ctx, lambda episode: episode.promote())
            await sessions.restart(ctx)
            return json.dumps(result.to_dict(), default=str)

        server.add_tool(promote, name="promote")

    @server.resource("harness://state/{part}", mime_type="application/json")
    async def state(part: str, ctx: Context[Any]) -> str:
        """The injected state: env, schema, files, auth_headers, or prompt (as text)."""
        def read(episode: Episode) -> str:
            data = episode.state.to_dict()
            if part == "prompt":
                return episode.state.prompt_text()
            if part not in data:
                raise ToolError(f"no state {part!r}; try one of {sorted(STATE_RESOURCES)}")
            return json.dumps(data[part], default=str)
        return await sessions.run(ctx, read)

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


def _sessionless_refusal(requested: str) -> dict[str, Any]:
    supported = list(HANDSHAKE_PROTOCOL_VERSIONS)
    return {"code": UNSUPPORTED_PROTOCOL_VERSION,
            "message": (f"protocol {requested} has no sessions, and harness keeps one sandbox "
                        f"per session: connect with the initialize handshake ({supported[-1]})"),
            "data": {"supported": supported, "requested": requested}}


def bearer_token() -> str:
    """The token HTTP clients must send: $HARNESS_MCP_TOKEN, or else one kept in
    $HARNESS_HOME/mcp-token (made on first use, readable by its owner only)."""
    token = os.environ.get("HARNESS_MCP_TOKEN", "").strip()
    if token:
        return token
    path = harness_home() / "mcp-token"
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


async def _reply(receive: Any, send: Any, status: int, payload: dict[str, Any],
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer an HTTP request with a JSON-RPC error (echoing its id), reading its body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        parsed = json.loads(body)
        request_id = parsed.get("id") if isinstance(parsed, dict) else None
    except ValueError:
        request_id = None
    data = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": payload}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        *headers]})
    await send({"type": "http.response.body", "body": data})


def http_app(config: Config, *, allow_promote: bool | None = None,
             idle_timeout: float = DEFAULT_IDLE_TIMEOUT, token: str | None = None,
             max_sandboxes: int = DEFAULT_MAX_SANDBOXES) -> tuple[Any, Sessions]:
    """The ASGI app of the HTTP server: requests without `token` (when one is given)
    refused; one episode per handshake session; sessionless (2026-07-28) requests refused;
    every episode closed at the lifespan's shutdown."""
    server, sessions = build_server(config, allow_promote=allow_promote, per_connection=True,
                                    max_sandboxes=max_sandboxes)
    app = server.streamable_http_app(host="127.0.0.1", session_idle_timeout=idle_timeout)
    expected = f"Bearer {token}".encode() if token is not None else None

    async def harness_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if expected is not None and not hmac.compare_digest(
                    headers.get(b"authorization", b""), expected):
                await _reply(receive, send, 401, {
                    "code": INVALID_REQUEST,
                    "message": "harness mcp needs the header 'Authorization: Bearer <token>'; "
                               "the token is $HARNESS_MCP_TOKEN or the file "
                               "$HARNESS_HOME/mcp-token"},
                    ((b"www-authenticate", b'Bearer realm="harness"'),))
                return
            requested = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
            if requested and requested not in HANDSHAKE_PROTOCOL_VERSIONS:
                await _reply(receive, send, 400, _sessionless_refusal(requested))
                return
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        # uvicorn re-raises SIGTERM once it has shut down, so a `finally` after it would
        # not run: the episodes close on the lifespan's shutdown message instead.
        async def shutdown_aware() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(sessions.close_all)
            return message

        await app(scope, shutdown_aware, send)

    return harness_app, sessions


def serve_http(config: Config, *, port: int, allow_promote: bool | None = None,
               idle_timeout: float = DEFAULT_IDLE_TIMEOUT, authenticate: bool = True,
               max_sandboxes: int = DEFAULT_MAX_SANDBOXES) -> None:
    """Serve streamable HTTP on 127.0.0.1:`port`/mcp until stopped; every client must
    send the bearer token unless `authenticate` is off."""
    import uvicorn

    token = bearer_token() if authenticate else None
    app, sessions = http_app(config, allow_promote=allow_promote, idle_timeout=idle_timeout,
                             token=token, max_sandboxes=max_sandboxes)
    print(f"harness mcp: serving http://127.0.0.1:{port}/mcp (one sandbox per session, at "
          f"most {max_sandboxes} at once, closed after {idle_timeout:g} s idle)",
          file=sys.stderr, flush=True)
    if token is not None:
        source = "$HARNESS_MCP_TOKEN" if os.environ.get("HARNESS_MCP_TOKEN", "").strip() \
            else str(harness_home() / "mcp-token")
        print(f"harness mcp: clients send 'Authorization: Bearer <token>', the token in "
              f"{source}", file=sys.stderr, flush=True)
    else:
        print("harness mcp: --no-auth: any local process can drive these sandboxes",
              file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        sessions.close_all()
