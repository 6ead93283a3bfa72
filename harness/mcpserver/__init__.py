"""`harness mcp`: an episode's tools served over the Model Context Protocol (stdio, or
streamable HTTP on 127.0.0.1), so an existing MCP-capable agent works in the sandbox
instead of on the real machine.

Every MCP session gets its own episode, opened at its first call and closed (sandbox
removed, trace written) when the session ends. Over stdio the server process is the
session. Over HTTP a session is what the initialize handshake opens (one
`Mcp-Session-Id`); it ends with the client's DELETE, the idle timeout (a sandbox is
reclaimed after minutes without a call, whatever streams stay open), or the server.
The 2026-07-28 protocol has no sessions at all, so the HTTP server refuses it with the
versions it does serve, and clients fall back to the handshake."""

from harness.mcpserver.over_http import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_IDLE_PER_TOKEN,
    DEFAULT_MAX_SANDBOXES,
    bearer_token,
    bearer_tokens,
    http_app,
    serve_http,
)
from harness.mcpserver.server import STATE_RESOURCES, build_server, serve_stdio
from harness.mcpserver.sessions import Sessions

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_IDLE_PER_TOKEN", "DEFAULT_MAX_SANDBOXES",
           "STATE_RESOURCES", "Sessions", "bearer_token", "bearer_tokens", "build_server",
           "http_app", "serve_http", "serve_stdio"]
