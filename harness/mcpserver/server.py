"""The MCP server: the episode's tools with their own schemas, `changeset`, `promote`
when allowed, the injected state as resources; and serving it over stdio."""

from __future__ import annotations

import inspect
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, Resource, TextContent, ToolAnnotations
from mcp_types import Tool as MCPTool
from pydantic import WithJsonSchema

import harness.limits as limits
from harness.config import Config
from harness.episode import ActionResult, Episode
from harness.mcpserver.sessions import Sessions
from harness.tools import TOOLS, Effect, Tool, ToolAction
from harness.tools.base import INTEGER, STRING
from harness.version import __version__

STATE_RESOURCES = {
    "prompt": ("text/plain", "The injected state as the text an agent's prompt would hold."),
    "env": ("application/json", "Environment variables set in the sandbox's shell."),
    "schema": ("application/json", "The database's tables: columns, keys, row estimates."),
    "files": ("application/json", "Injected files with sha256, age and uncommitted changes."),
    "auth_headers": ("application/json",
                     "Header names the harness adds to HTTP requests (never their values)."),
}


class _HarnessMCPServer(MCPServer):
    """Lists each part of the injected state as a resource (read through the
    `harness://state/{part}` template, because only a template's reader learns the
    session it serves), and publishes each episode tool's result schema: its results
    carry their fields as structured content."""

    async def list_resources(self) -> list[Resource]:
        return [*await super().list_resources(), *(
            Resource(uri=f"harness://state/{part}", name=part, description=description,
                     mime_type=mime_type)
            for part, (mime_type, description) in STATE_RESOURCES.items())]

    async def list_tools(self) -> list[MCPTool]:
        return [tool.model_copy(update={"output_schema": OUTPUT_SCHEMAS[tool.name]})
                if tool.name in OUTPUT_SCHEMAS else tool for tool in await super().list_tools()]


_COUNTS = {"type": "object", "properties": {
    "inserted": INTEGER, "updated": INTEGER, "deleted": INTEGER, "rows": INTEGER}}
CHANGESET = {"type": "object", "required": ["workspace", "rows"], "properties": {
    "workspace": {"type": "object", "properties": {
        "base": STRING, "head": STRING, "commit_count": INTEGER, "files_changed": INTEGER,
        "lines_added": INTEGER, "lines_removed": INTEGER,
        "commits": {"type": "array", "items": {"type": "object"}},
        "files": {"type": "array", "items": {"type": "object"}}}},
    "rows": {"type": ["object", "null"], "description": "Null without a database.",
             "properties": {
                 "tables": {"type": "object", "additionalProperties": _COUNTS},
                 "total": _COUNTS, "ddl": {"type": "array", "items": STRING}}}}}
OUTPUT_SCHEMAS = {**{name: tool.output for name, tool in TOOLS.items()}, "changeset": CHANGESET}


def tool_annotations(spec: Tool) -> ToolAnnotations:
    """What an MCP client may assume of a tool, from what it can change."""
    return ToolAnnotations(
        title=spec.name.replace("_", " "),
        read_only_hint=not spec.affects,
        destructive_hint=bool(spec.affects & {Effect.FILES, Effect.ROWS}),
        idempotent_hint=not spec.affects,
        open_world_hint=Effect.NETWORK in spec.affects)


def _structured(output: dict[str, Any]) -> CallToolResult:
    """A result's fields as structured content (typed by the tool's output schema), and the
    same as JSON text for clients that read only text."""
    data = json.loads(json.dumps(output, default=str))
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(data))],
                          structured_content=data)


def _episode_tool(spec: Tool,
                  act: Callable[[Context[Any], str, dict[str, Any]], Awaitable[CallToolResult]]
                  ) -> Callable[..., Awaitable[CallToolResult]]:
    """An MCP tool function for one of the episode's tools, whose parameters publish the
    tool's own JSON schema (the SDK derives input schemas from signatures). The episode
    validates the arguments itself, as it does for every other client."""
    async def tool(ctx: Context[Any], **arguments: Any) -> CallToolResult:
        return await act(ctx, spec.name, {name: value for name, value in arguments.items()
                                          if value is not None})

    required = set(spec.parameters["required"])
    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context[Any])]
    for name, schema in spec.parameters["properties"].items():
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Any, WithJsonSchema(schema)],
            default=inspect.Parameter.empty if name in required else schema.get("default")))
    tool.__name__ = spec.name
    tool.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=CallToolResult)
    tool.__annotations__ = {p.name: p.annotation for p in parameters} | {
        "return": CallToolResult}
    return tool


def build_server(config: Config, *, allow_promote: bool | None = None,
                 per_connection: bool = False, max_sandboxes: int | None = None,
                 idle_timeout: float | None = None, max_idle_per_token: int | None = None,
                 pool: int = 0) -> tuple[MCPServer, Sessions]:
    """An MCP server offering the episode's tools, `changeset`, and (when allowed: not a
    dry run, or `allow_promote`) `promote`; `per_connection` keys episodes on HTTP
    sessions instead of the process, at most `max_sandboxes` open at once (see `Sessions`
    for the idle limits)."""
    sessions = Sessions(config, per_connection=per_connection, max_sandboxes=max_sandboxes,
                        idle_timeout=idle_timeout, max_idle_per_token=max_idle_per_token,
                        pool=pool)
    server: MCPServer = _HarnessMCPServer("harness", version=__version__, instructions=(
        "Tools of a transactional sandbox: a throwaway clone of the repository in a "
        "hardened container, and a copy of its database. Refused actions come back as "
        "tool errors with the reason; read the harness://state/prompt resource first."))

    async def act(ctx: Context[Any], tool: str, parameters: dict[str, Any]) -> CallToolResult:
        result: ActionResult = await sessions.run(
            ctx, lambda episode: episode.act(ToolAction(tool, parameters)))
        if result.refusal is not None or result.status == "error":
            raise ToolError(result.observation() if result.refusal else
                            json.dumps(result.output, default=str))
        return _structured(result.output)

    async def changeset(ctx: Context[Any]) -> CallToolResult:
        """What this session has changed so far: commits, files, lines, rows per table."""
        def measure(episode: Episode) -> dict[str, Any]:
            changes = episode.sandbox.changes()
            rows = episode.sandbox.row_delta()
            return dict(episode.redactor({
                "workspace": {k: v for k, v in changes.to_dict().items() if k != "diff"},
                "rows": rows.summary() if rows else None}))
        return _structured(await sessions.run(ctx, measure))

    for spec in (tool for tool in TOOLS.values() if tool.offered):
        server.add_tool(_episode_tool(spec, act), name=spec.name, description=spec.description,
                        annotations=tool_annotations(spec))
    server.add_tool(changeset, name="changeset", annotations=ToolAnnotations(
        title="changeset", read_only_hint=True, destructive_hint=False, idempotent_hint=True,
        open_world_hint=False))

    promote_allowed = not limits.dry_run(config) if allow_promote is None else allow_promote
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


def serve_stdio(config: Config, *, allow_promote: bool | None = None, pool: int = 0) -> None:
    """Serve over stdin/stdout: this process is the one session."""
    server, sessions = build_server(config, allow_promote=allow_promote, pool=pool)
    _exit_on_sigterm()
    try:
        server.run("stdio")
    finally:
        sessions.close_all()
