"""Serving the MCP server over streamable HTTP on 127.0.0.1: bearer tokens (one per
client, if you like), one sandbox per handshake session (the sessionless protocol
refused), caps on open sandboxes and on idle ones per token, idle sandboxes reclaimed,
every episode closed when the server stops."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import sys
from typing import Any

import anyio
from mcp_types import INVALID_REQUEST, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from harness.config import Config
from harness.home import harness_home
from harness.mcpserver.server import build_server
from harness.mcpserver.sessions import Sessions

DEFAULT_IDLE_TIMEOUT = 5 * 60.0
DEFAULT_MAX_SANDBOXES = 16
DEFAULT_MAX_IDLE_PER_TOKEN = 4


def _sessionless_refusal(requested: str) -> dict[str, Any]:
    supported = list(HANDSHAKE_PROTOCOL_VERSIONS)
    return {"code": UNSUPPORTED_PROTOCOL_VERSION,
            "message": (f"protocol {requested} has no sessions, and harness keeps one sandbox "
                        f"per session: connect with the initialize handshake ({supported[-1]})"),
            "data": {"supported": supported, "requested": requested}}


def bearer_token() -> str:
    """The first token HTTP clients may send (see `bearer_tokens`)."""
    return bearer_tokens()[0]


def bearer_tokens() -> list[str]:
    """The tokens HTTP clients may send, each counted apart for the idle cap:
    $HARNESS_MCP_TOKEN (several separated by commas), or else the lines of
    $HARNESS_HOME/mcp-token (made with one token on first use, readable by its owner
    only; add a line per client)."""
    tokens = [t.strip() for t in os.environ.get("HARNESS_MCP_TOKEN", "").split(",")]
    if any(tokens):
        return [t for t in tokens if t]
    path = harness_home() / "mcp-token"
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


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
             idle_timeout: float = DEFAULT_IDLE_TIMEOUT, token: str | list[str] | None = None,
             max_sandboxes: int = DEFAULT_MAX_SANDBOXES,
             max_idle_per_token: int = DEFAULT_MAX_IDLE_PER_TOKEN, pool: int = 0
             ) -> tuple[Any, Sessions]:
    """The ASGI app of the HTTP server: requests without one of the tokens (when given)
    refused; one episode per handshake session; sessionless (2026-07-28) requests refused;
    every episode closed at the lifespan's shutdown."""
    server, sessions = build_server(config, allow_promote=allow_promote, per_connection=True,
                                    max_sandboxes=max_sandboxes, idle_timeout=idle_timeout,
                                    max_idle_per_token=max_idle_per_token, pool=pool)
    app = server.streamable_http_app(host="127.0.0.1", session_idle_timeout=idle_timeout)
    tokens = [token] if isinstance(token, str) else token
    expected = [f"Bearer {t}".encode() for t in tokens] if tokens is not None else None

    async def harness_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"")
            # Every token compared, whichever matches: the time taken tells nothing.
            if expected is not None and not sum(hmac.compare_digest(given, e)
                                                for e in expected):
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
               max_sandboxes: int = DEFAULT_MAX_SANDBOXES,
               max_idle_per_token: int = DEFAULT_MAX_IDLE_PER_TOKEN, pool: int = 0) -> None:
    """Serve streamable HTTP on 127.0.0.1:`port`/mcp until stopped; every client must
    send a bearer token unless `authenticate` is off."""
    import uvicorn

    tokens = bearer_tokens() if authenticate else None
    app, sessions = http_app(config, allow_promote=allow_promote, idle_timeout=idle_timeout,
                             token=tokens, max_sandboxes=max_sandboxes,
                             max_idle_per_token=max_idle_per_token, pool=pool)
    print(f"harness mcp: serving http://127.0.0.1:{port}/mcp (one sandbox per session, at "
          f"most {max_sandboxes} at once and {max_idle_per_token} idle per token; a sandbox "
          f"is reclaimed after {idle_timeout:g} s without a call)", file=sys.stderr, flush=True)
    if tokens is not None:
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
