"""What a tool is: its name, the JSON schema of its parameters, the parameter the
guardrails judge and how, what it can change, which budgets must have room before it runs,
and the function that runs it against what an episode gives it (`ToolContext`)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from harness.limits.violation import Limit, Violation
from harness.sandbox.layout import WORKSPACE

if TYPE_CHECKING:
    import psycopg

    from harness.config import Config
    from harness.sandbox import Sandbox

Status = Literal["ok", "error", "refused"]


class Effect(enum.Enum):
    """What a tool can change: measured after it runs, and shown to MCP clients."""

    FILES = "files"
    COMMITS = "commits"
    ROWS = "rows"
    NETWORK = "network"


class Judged(enum.Enum):
    """How the guardrails read a tool's judged parameter."""

    SHELL = "a shell command line"
    SQL = "SQL that may write"
    SQL_READ_ONLY = "SQL that must only read"
    WRITE = "a path written"
    READ = "a path read"
    LISTING = "a folder listed"
    NOTHING = "nothing to judge"


@dataclass(frozen=True)
class Refusal:
    """Why an action did not run, or was undone: by which check (guardrail, budget,
    invalid, http, effect), which rule, limit or policy, and why."""

    kind: Literal["guardrail", "budget", "invalid", "http", "effect"]
    rule: str
    reason: str


@dataclass(frozen=True)
class ToolResult:
    """What running a tool gave: its status and output, and what stopped it, if anything
    did (a budget it would overrun, or a refusal of its own such as a redirect off the
    allow-list)."""

    status: Status
    output: dict[str, Any] = field(default_factory=dict)
    stop: Violation | Refusal | None = None


class ToolContext(Protocol):
    """What an episode gives a tool's handler."""

    @property
    def config(self) -> Config:
        """The episode's configuration."""

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox the tool acts in."""

    @property
    def edge_headers(self) -> Mapping[str, str]:
        """Headers added at the edge to allow-listed HTTP requests (those with a value)."""

    def shell(self, command: str | list[str], timeout: float | None = None, *,
              cwd: str | None = None, env: Mapping[str, str] | None = None,
              stdin: bytes | None = None, user: str | None = None) -> dict[str, Any]:
        """Run a command in the sandbox within the shell budget; its result as a dict."""

    def connection(self) -> psycopg.Connection[Any]:
        """The episode's connection to the sandbox database (HarnessError without one)."""

    def weigh_rows(self, projected: int) -> Violation | None:
        """Whether bringing the episode to `projected` changed rows breaks the budget."""

    def rows_counted(self) -> int:
        """Rows changed so far, as last measured."""

    def count_output(self, size: int) -> None:
        """Count `size` bytes an action returned against the output budget."""


Handler = Callable[[ToolContext, Mapping[str, Any]], ToolResult]


@dataclass(frozen=True)
class Tool:
    """One tool, as every part of harness reads it."""

    name: str
    description: str
    parameters: dict[str, Any]
    """The JSON schema of its parameters (an object)."""
    handler: Handler
    judged: Judged = Judged.NOTHING
    judged_parameter: str | None = None
    affects: frozenset[Effect] = frozenset()
    needs: frozenset[Limit] = frozenset()
    """Budgets that must have room before it may run (beyond the ones every action needs)."""
    judged_text: Callable[[Mapping[str, Any]], str | None] | None = None
    """What the guardrails read, when it is not one parameter as given (None: the
    parameters do not say what it would do)."""
    exclusive: tuple[tuple[str, ...], ...] = ()
    """Groups of parameters of which at most one may be given."""
    one_of: tuple[tuple[str, ...], ...] = ()
    """Groups of parameters of which one must be given."""
    offered: bool = True
    """Offered to models and MCP clients; the others serve programs (an inspect_ai
    sandbox, the pytest plugin) that call the episode directly."""
    output: dict[str, Any] = field(default_factory=lambda: result_schema({}))
    """The JSON schema of its result (what `ToolResult.output` holds), with what the
    episode may add to any result (`NOTES`)."""

    def judged_input(self, parameters: Mapping[str, Any]) -> str | None:
        """The text the guardrails judge for a call with `parameters` (None when it is
        missing or not text)."""
        if self.judged_text is not None:
            return self.judged_text(parameters)
        if self.judged_parameter is None:
            return ""
        value = parameters.get(self.judged_parameter)
        return value if isinstance(value, str) else None

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the Chat Completions `tools` format."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


def object_schema(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    """The schema of a parameters object."""
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null."""
    return {**schema, "type": [schema["type"], "null"]}


_BREACH = {"type": "object", "properties": {
    "policy": STRING, "decision": STRING, "allowed": INTEGER, "actual": INTEGER,
    "detail": STRING, "examples": {"type": "array"}, "table": nullable(STRING)}}

NOTES: dict[str, Any] = {
    "error": {**STRING, "description": "Why the tool failed."},
    "error_kind": {"type": "string", "enum": ["not_found", "is_a_directory", "not_a_directory",
                                              "permission", "timeout", "too_large", "os"]},
    "effects_warned": {"type": "array", "items": _BREACH,
                       "description": "Effect policies (decision warn) this action broke."},
    "effects": {"type": "array", "items": _BREACH,
                "description": "Effect policies this action broke; it was undone."},
    "undone": {"type": "object", "description": "What was put back of a refused action."},
    "commits_reset": {"type": "array", "items": STRING,
                      "description": "Commits past max_commits, reset away (work kept)."},
    "rows_over_budget": {**INTEGER, "description": "Rows changed, past max_database_rows."},
    "background_ended": INTEGER, "sessions_ended": INTEGER,
    "workspace_unrecorded": STRING,
}
"""What the episode may add to any tool's result."""


def result_schema(properties: dict[str, Any], required: list[str] | None = None
                  ) -> dict[str, Any]:
    """The schema of a tool's result object: its own fields, and the episode's notes."""
    return {"type": "object", "properties": {**properties, **NOTES},
            "required": required or [], "additionalProperties": True}


def in_workspace(path: str) -> str:
    """A path as the agent means it: relative ones start at the workspace root."""
    return path if path.startswith("/") else f"{WORKSPACE}/{path.removeprefix('./')}"
