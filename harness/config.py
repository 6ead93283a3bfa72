"""The harness configuration: one YAML file validated once into frozen typed objects.

The reference configuration of the article (`shared/seed/agent-scaffold-config.yaml`)
is valid as it is. Errors name the key path and the line of the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- blast radius


class BlastRadius(_Strict):
    """Limits on what one episode may change; a change set over any of them is refused."""

    max_commits: int = Field(5, ge=0)
    """Commits the agent may make in the workspace."""
    max_database_rows: int = Field(10, ge=0)
    """Rows (inserted + updated + deleted) the agent may change in the database."""
    max_files_changed: int | None = Field(None, ge=0)
    """Files a change set may touch; None for no limit."""
    max_tool_calls: int | None = Field(None, ge=0)
    """Actions an episode may take; None for no limit."""
    dry_run: bool = True
    """Run everything in the sandbox but promote nothing; only show the plan."""


class Orchestrator(_Strict):
    """The episode orchestrator's settings."""

    blast_radius: BlastRadius = BlastRadius()


# ------------------------------------------------------------------ guardrails


class GuardrailRule(_Strict):
    """One rule of the simple form: a pattern and what to do when it matches."""

    pattern: str
    """Text (or, with `regex: true`, a regular expression) looked for in the action."""
    action: Literal["block", "warn", "require_approval"] = "block"
    id: str | None = None
    """A name for the rule, shown in every decision it makes; derived from the pattern if unset."""
    regex: bool = False

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str, info: Any) -> str:
        if not value:
            raise ValueError("pattern must not be empty")
        return value


class Guardrails(_Strict):
    """The deterministic policy every action passes before it runs."""

    type: Literal["deterministic"] = "deterministic"
    rules: list[GuardrailRule] = []
    protected_tables: list[str] = []
    protected_paths: list[str] = []
    protected_branches: list[str] = ["main", "master"]


# ------------------------------------------------------------- state injection


class EnvVarSource(_Strict):
    """Environment variables whose names start with `prefix`, from the host or `values`."""

    type: Literal["env_var"]
    prefix: str
    values: dict[str, str] = {}


class DbSchemaSource(_Strict):
    """The schema (columns, keys, constraints) of these tables in the snapshot."""

    type: Literal["db_schema"]
    tables: list[str] = []


class AuthHeaderSource(_Strict):
    """An auth header added at the edge to allow-listed HTTP requests; its value never shown."""

    type: Literal["auth_header"]
    key: str
    value_env: str | None = None
    """Host environment variable holding the value; default HARNESS_AUTH_<KEY>."""


class FileSource(_Strict):
    """A workspace file given to the agent with its checksum and age."""

    type: Literal["file"]
    path: str


StateSource = Annotated[
    EnvVarSource | DbSchemaSource | AuthHeaderSource | FileSource, Field(discriminator="type")
]


class StateInjection(_Strict):
    """Runtime state the harness gives the agent explicitly."""

    sources: list[StateSource] = []


# --------------------------------------------------------------- observability


class Tracing(_Strict):
    """Where and how traces are written."""

    enabled: bool = True
    propagate_trace_id: bool = True
    path: str | None = None
    otlp_endpoint: str | None = None


class Logging(_Strict):
    """How much the harness logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    include_tool_io: bool = False


class Observability(_Strict):
    """Tracing and logging."""

    tracing: Tracing = Tracing()
    logging: Logging = Logging()


# --------------------------------------------------------------------- sandbox

_SIZE = re.compile(r"^\d+(\.\d+)?[kmg]?$", re.IGNORECASE)


class Hardening(_Strict):
    """How each sandbox container is confined. Every field that differs from the
    default is reported as an override (see `Hardening.overrides`)."""

    network: bool = False
    """Give the container a network; off by default (no interface but lo)."""
    read_only_root: bool = True
    drop_capabilities: bool = True
    no_new_privileges: bool = True
    user: str = "agent"
    pids_limit: int = Field(256, ge=16)
    memory: str = "1g"
    """Memory limit, e.g. 512m or 2g; swap is not allowed beyond it."""
    cpus: float = Field(1.0, gt=0)
    tmpfs_size: str = "256m"

    @field_validator("memory", "tmpfs_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE.match(value):
            raise ValueError(f"{value!r} is not a size like 512m or 2g")
        return value.lower()

    def overrides(self) -> dict[str, Any]:
        """The fields set to something other than the hardened default."""
        default = Hardening()
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if getattr(self, name) != getattr(default, name)
        }


class SandboxSettings(_Strict):
    """The sandbox every episode runs in."""

    image: str = "agent"
    """A definition under sandboxes/ (built on demand) or any image reference containing ':'."""
    hardening: Hardening = Hardening()
    exec_timeout_s: float = Field(120.0, gt=0)
    output_limit_bytes: int = Field(1 << 20, ge=1024)
    """Bytes of stdout and of stderr kept per command; the rest is dropped and flagged."""


class Target(_Strict):
    """The real systems a promotion may change."""

    repo: str | None = None
    branch: str = "main"
    database: str | None = None


class Config(_Strict):
    """A whole harness configuration."""

    orchestrator: Orchestrator = Orchestrator()
    guardrails: Guardrails = Guardrails()
    state_injection: StateInjection = StateInjection()
    observability: Observability = Observability()
    sandbox: SandboxSettings = SandboxSettings()
    target: Target = Target()


# ---------------------------------------------------------------------- loading


def load_config(source: str | Path | Mapping[str, Any] | None = None) -> Config:
    """Read and validate a configuration from a YAML file path, a mapping, or nothing (defaults)."""
    if source is None:
        return Config()
    if isinstance(source, Mapping):
        return _validate(dict(source), lines={}, origin="<mapping>")
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    return parse_config(text, origin=str(path))


def parse_config(text: str, *, origin: str = "<string>") -> Config:
    """Validate YAML text as a configuration; `origin` names it in errors."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return _validate(data, lines=lines, origin=origin)


def _validate(
    data: dict[str, Any], *, lines: dict[tuple[str | int, ...], int], origin: str
) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, lines, origin) for error in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _describe(
    error: Any, lines: dict[tuple[str | int, ...], int], origin: str
) -> str:
    # Pydantic puts the discriminator's tag into the location of union members; drop it.
    loc = tuple(
        part for part in error["loc"]
        if not (isinstance(part, str) and part in _UNION_TAGS)
    )
    key = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc)
    key = key.replace(".[", "[")
    line = None
    for depth in range(len(loc), -1, -1):
        line = lines.get(loc[:depth])
        if line is not None:
            break
    where = f"{origin}:{line}" if line is not None else origin
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling and section)"
    return f"{where}: {key or '<top>'}: {message}"


_UNION_TAGS = {"env_var", "db_schema", "auth_header", "file"}


def _record_lines(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines)
