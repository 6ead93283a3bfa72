"""The harness configuration: one YAML file validated once into frozen typed objects.

The reference configuration of the article (`shared/seed/agent-scaffold-config.yaml`)
is valid as it is. Errors name the key path and the line of the offending key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.errors import ConfigError
from harness.sandbox.settings import SandboxSettings, SettingError

if TYPE_CHECKING:
    import yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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
    max_lines_changed: int | None = Field(None, ge=0)
    """Lines added plus removed over the change set; None for no limit."""
    max_rows_per_table: dict[str, int] = {}
    """Row limits for single tables (bare or schema-qualified names)."""
    allow_ddl: bool = False
    """Promote schema changes (replayed in order in the same transaction)."""
    dry_run: bool = True
    """Run everything in the sandbox but promote nothing; only show the plan."""


class EpisodeLimits(_Strict):
    """Limits on an episode beside its blast radius; None for no limit."""

    max_actions: int | None = Field(200, ge=1)
    max_wall_seconds: float | None = Field(3600, gt=0)
    max_shell_seconds: float | None = Field(None, gt=0)
    """Total time the episode's shell commands may run."""
    max_output_bytes: int | None = Field(64 << 20, ge=1024)
    """Total stdout and stderr the episode's actions may return."""


class Orchestrator(_Strict):
    """The episode orchestrator's settings."""

    blast_radius: BlastRadius = Field(default_factory=BlastRadius)
    limits: EpisodeLimits = Field(default_factory=EpisodeLimits)


# ------------------------------------------------------------------ guardrails


Action = Literal["block", "warn", "require_approval"]


class _Rule(_Strict):
    id: str | None = None
    """A name shown in every decision the rule makes; derived from the rule if unset."""
    action: Action = "block"


class PatternRule(_Rule):
    """The simple form: a pattern looked for in what an action would run.

    For shell commands it matches a run of words starting at the program (so
    `echo "rm -rf /"` does not match `rm -rf /`); for SQL it matches a run of words of a
    statement, ignoring case, comments and string literals. With `regex: true` the
    pattern is a regular expression searched in each normalised command or statement."""

    kind: Literal["pattern"] = "pattern"
    pattern: str = Field(min_length=1)
    regex: bool = False

    @model_validator(mode="after")
    def _compiles(self) -> PatternRule:
        if self.regex:
            _compile(self.pattern)
        return self


class ShellRule(_Rule):
    """A program (glob on its base name), optionally with arguments that must all appear."""

    kind: Literal["shell"]
    program: str
    args: list[str] = []
    args_regex: str | None = None

    @field_validator("args_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value


class SqlRule(_Rule):
    """Statements by kind and/or target table; optionally only without a WHERE clause."""

    kind: Literal["sql"]
    statements: list[str] = []
    """Statement kinds (SELECT, INSERT, UPDATE, DELETE, DROP, ...); empty for any."""
    tables: list[str] = []
    """Target tables, bare or schema-qualified; empty for any."""
    without_where: bool = False
    multi_statement: bool = False
    """Match an action holding more than one statement."""


class PathRule(_Rule):
    """Paths by glob (relative to the workspace root, or absolute) and kind of access."""

    kind: Literal["path"]
    glob: list[str] | str
    access: Literal["read", "write", "any"] = "write"


class GitRule(_Rule):
    """git subcommands, optionally only forced ones or those naming given branches."""

    kind: Literal["git"]
    subcommand: str
    force: bool = False
    branches: list[str] = []


class ToolRule(_Rule):
    """Tools by name: `deny` lists tools to stop, `allow` lists the only tools permitted."""

    kind: Literal["tool"]
    deny: list[str] = []
    allow: list[str] | None = None


def _rule_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "pattern"))
    return str(getattr(value, "kind", "pattern"))


GuardrailRule = Annotated[
    Annotated[PatternRule, Tag("pattern")] | Annotated[ShellRule, Tag("shell")]
    | Annotated[SqlRule, Tag("sql")] | Annotated[PathRule, Tag("path")]
    | Annotated[GitRule, Tag("git")] | Annotated[ToolRule, Tag("tool")],
    Discriminator(_rule_kind),
]


class Guardrails(_Strict):
    """The deterministic policy every action passes before it runs."""

    type: Literal["deterministic"] = "deterministic"
    rules: list[GuardrailRule] = []
    protected_tables: list[str] = []
    """Tables no action may write (bare names match in any schema)."""
    protected_paths: list[str] = []
    """Globs no action may write, relative to the workspace root or absolute."""
    protected_branches: list[str] = ["main", "master"]
    builtin: dict[str, Literal["block", "warn", "require_approval", "off"]] = {}
    """Built-in rules switched off or given another action, by rule id."""
    fail_closed: bool = True
    """Block input that cannot be parsed; with false it is only a warning."""
    max_input_bytes: int = Field(256 * 1024, ge=1024)
    """Larger inputs are not analysed (and so are blocked when failing closed)."""

    @field_validator("builtin", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false.
        if isinstance(value, dict):
            return {k: "off" if v is False else v for k, v in value.items()}
        return value


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


# ------------------------------------------------------------- state injection


class EnvVarSource(_Strict):
    """Environment variables whose names start with `prefix`, from the host or `values`.
    They are set in the agent's shell; unless `secret`, their values are also shown to the
    agent and recorded in traces."""

    type: Literal["env_var"]
    prefix: str
    values: dict[str, str] = {}
    secret: bool = False
    """The values are credentials: set in the shell, never shown to the agent (it is told
    the names), and redacted, with their encodings, from every output, trace and log."""


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
    """Give the agent's commands the trace id (HARNESS_TRACE_ID and TRACEPARENT)."""
    path: str | None = None
    """Folder for trace files; default $HARNESS_HOME/traces."""
    otlp_endpoint: str | None = None
    """Also send each span, as it ends, to this OTLP/HTTP endpoint
    (e.g. http://127.0.0.1:4318/v1/traces): one root span per episode, a tool span per
    action under it."""


class Logging(_Strict):
    """How much the harness logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the `harness` loggers (each action is logged at info)."""
    include_tool_io: bool = False
    """Record each action's full output in the trace (redacted), log its I/O at debug,
    and send tool calls' arguments and results (redacted) to the OTLP endpoint as
    `gen_ai.tool.call.arguments` and `gen_ai.tool.call.result`."""


class Observability(_Strict):
    """Tracing and logging."""

    tracing: Tracing = Field(default_factory=Tracing)
    logging: Logging = Field(default_factory=Logging)
    attribute_rows: bool = True
    """Name, for every changed row, the action that changed it (in the change set and on
    each action's span). Off saves two reads per database-writing action; effect policies
    need the per-action rows and keep them on."""


# --------------------------------------------------------------------- sandbox

class Target(_Strict):
    """The real systems a promotion may change."""

    repo: str | None = None
    branch: str = "main"
    database: str | None = None


class Promotion(_Strict):
    """How a change set reaches the real systems."""

    branch_prefix: str = "harness/"
    """Commits are pushed to a new branch `<prefix><trace id>` on the target repository."""
    fast_forward: bool = False
    """Also fast-forward `target.branch` when its head is still the base (never forced)."""
    atomicity: Literal["auto", "two-phase", "single-phase"] = "auto"
    """How rows and commits are made one change: `two-phase` prepares the database
    transaction and commits it once the push is done (needs max_prepared_transactions > 0
    on the target); `single-phase` pushes while the transaction holds its rows and commits
    it last; `auto` takes two-phase where the target allows it."""
    triggers: Literal["replicate", "fire"] = "replicate"
    """`replicate`: the target's triggers and rules do not fire on the promoted rows (their
    effects are already in the change set; needs superuser or GRANT SET ON PARAMETER
    session_replication_role when a touched table has any); `fire`: they fire, the
    receipt records the rows as they really were written (the triggers' rows in other
    tables included, read back after the writes), and the result names what the
    triggers changed beyond the change set (`rewritten`, `side_effects`)."""


class HttpTool(_Strict):
    """The http_request tool: the harness makes requests for the agent, to these hosts only."""

    allow_hosts: list[str] = []
    """Where the agent may send requests, checked on every redirect hop too: `host` (http
    or https, any port), `host:port`, `https://host` (port 443) or `https://host:port`;
    empty: nowhere."""
    timeout_s: float = Field(10, gt=0)
    """For the whole request, redirects included."""
    max_response_bytes: int = Field(1 << 20, ge=1024)
    max_redirects: int = Field(5, ge=0)
    """Redirects followed at most (each one re-checked against allow_hosts)."""

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        from harness.hosts import AllowedHost

        for entry in value:
            AllowedHost.parse(entry)
        return value


class Tools(_Strict):
    """Settings of the built-in tools."""

    http: HttpTool = Field(default_factory=HttpTool)
    max_query_rows: int = Field(500, ge=1)
    """Rows a db_query returns at most (the rest are counted, not shown)."""


class Gate(_Strict):
    """The CI gate for agent pull requests (`harness gate`)."""

    migrate: str | None = None
    """Command that applies the PR's migrations, run in a sandbox at the PR's head with a
    snapshot of the database (`--db`), e.g. `for f in migrations/*.sql; do psql -f $f; done`."""
    ci_paths: list[str] = [".github/workflows/**", ".github/actions/**", ".gitlab-ci.yml",
                           ".circleci/**", "Jenkinsfile", "azure-pipelines.yml", ".ci/**",
                           ".buildkite/**"]
    """Changes here are CI configuration changes, which fail the gate."""
    sql_paths: list[str] = ["**/alembic/versions/*.py", "**/migrations/versions/*.py",
                            "**/migrations/0*.py", "**/migrations/**/*.sql",
                            "**/migration/**/*.sql", "**/db/migrate/**/*.sql"]
    """Migrations: `.sql` files here are judged as SQL by the guardrails (and squawk), Python
    migrations (Alembic `upgrade()`, Django operations) by the SQL they run forward."""
    fail_on_new_executables: bool = True
    secret_min_entropy: float = Field(4.5, gt=0)
    """Shannon entropy (bits per character) above which a quoted base64-like string counts
    as a secret (detect-secrets' `Base64HighEntropyString` limit)."""
    secrets_baseline: str | None = ".secrets.baseline"
    """A detect-secrets baseline, read at the PR's base (a PR cannot allow its own secret):
    the secrets it lists (by file and hash, unless audited as real) are allowed."""
    secrets_allow_paths: list[str] = []
    """Globs of files whose secrets are allowed (test fixtures with fake keys)."""
    secrets_max_per_file: int = Field(10, ge=1)
    """Findings listed per file; the rest are counted."""
    lock_safety: Literal["require_approval", "warn", "off"] = "require_approval"
    """What squawk's lock-safety findings on migration SQL do: fail the gate (they need a
    human's approval), show as warnings, or are not looked for."""
    @field_validator("lock_safety", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    squawk_rules: list[str] = [
        "adding-field-with-default", "adding-foreign-key-constraint", "adding-not-nullable-field",
        "adding-required-field", "adding-serial-primary-key-field", "ban-alter-domain-with-add-constraint",
        "ban-concurrent-index-creation-in-transaction", "ban-create-domain-with-constraint",
        "changing-column-type", "constraint-missing-not-valid", "disallowed-unique-constraint",
        "renaming-column", "renaming-table", "require-concurrent-index-creation",
        "require-concurrent-index-deletion"]
    """squawk rules that count: what rewrites a table or holds a long lock on a live one."""
    postgres_version: str | None = None
    """The target's PostgreSQL version for squawk (e.g. `15`): some operations stopped
    rewriting tables in later versions."""


# ---------------------------------------------------------------------- effects

Scalar = str | int | float | bool | None


class RowEffect(_Strict):
    """Rows an action (or a change set) changed: of `table` (`*`: any table), by `op`,
    optionally only those whose columns hold given values (`where`: the row as it was, for
    updates and deletes; as it is, for inserts; `where_after`: as it is after an insert or
    update), or updates that change one of `changes`. The policy fires when more than
    `more_than` rows match (in any one table, with `each_table`). A dropped table's rows
    are all deleted and beyond counting: it breaks any policy over its deletes."""

    table: str = Field(min_length=1)
    op: Literal["insert", "update", "delete", "any"] = "any"
    where: dict[str, Scalar | list[Scalar]] = {}
    where_after: dict[str, Scalar | list[Scalar]] = {}
    changes: list[str] = []
    more_than: int = Field(0, ge=0)
    each_table: bool = False

    @model_validator(mode="after")
    def _possible(self) -> RowEffect:
        if self.where_after and self.op == "delete":
            raise ValueError("where_after describes a row after an insert or update; a "
                             "deleted row has no after image (use where)")
        if self.changes and self.op in ("insert", "delete"):
            raise ValueError(f"changes names updated columns; op {self.op!r} updates none")
        return self


class FileEffect(_Strict):
    """Files changed: under `path` (globs), by `change`, optionally only those executable
    after it, those whose mode changed (made executable or not, a file become a link), or
    with more than `lines_more_than` lines added and removed. The policy fires when more
    than `more_than` files match."""

    path: list[str] | str = "**"
    change: Literal["added", "modified", "deleted", "any"] = "any"
    executable: bool | None = None
    mode_changed: bool | None = None
    lines_more_than: int | None = Field(None, ge=0)
    more_than: int = Field(0, ge=0)


class CommitEffect(_Strict):
    """Commits made: all of them, or those whose message, author (`name <email>`) or
    branch (or tag) matches a regular expression. The policy fires when more than
    `more_than` match."""

    message: str | None = None
    author: str | None = None
    branch: str | None = None
    more_than: int = Field(0, ge=0)

    @field_validator("message", "author", "branch")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value


class EffectPolicy(_Strict):
    """A rule over what actions did (not what they said they would do): checked after
    every action, at promotion and in the gate."""

    id: str = Field(min_length=1)
    decision: Literal["block", "require_approval", "warn"] = "block"
    message: str | None = None
    """What a refusal says (default: the policy's predicate)."""
    rows: RowEffect | None = None
    files: FileEffect | None = None
    commits: CommitEffect | None = None

    @model_validator(mode="after")
    def _one_predicate(self) -> EffectPolicy:
        given = [name for name in ("rows", "files", "commits") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"effect policy {self.id!r} needs exactly one of rows, files or "
                             f"commits (it has {', '.join(given) or 'none'})")
        return self


class RaySettings(_Strict):
    """`harness eval` on a Ray cluster (see README, "Running eval on Ray")."""

    address: str | None = None
    """The cluster to run on (`--ray` and RAY_ADDRESS win over it); none: run locally."""
    max_attempts: int = Field(3, ge=1)
    """Attempts a run gets when its node fails it (engine, clone, database, a dead worker
    or node); an agent's failure is never retried."""
    max_in_flight: int | None = Field(None, ge=1)
    """Runs submitted at once (default: twice the cluster's harness_episode resources)."""
    images_tarball: str | None = None
    """A `docker save` tarball each node loads its sandbox image from when it lacks it
    (a path on the node); without it a node builds the image."""


class EvalSettings(_Strict):
    """Settings of `harness eval`."""

    ray: RaySettings = Field(default_factory=RaySettings)


class Config(_Strict):
    """A whole harness configuration."""

    orchestrator: Orchestrator = Field(default_factory=Orchestrator)
    guardrails: Guardrails = Field(default_factory=Guardrails)
    state_injection: StateInjection = Field(default_factory=StateInjection)
    observability: Observability = Field(default_factory=Observability)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    target: Target = Field(default_factory=Target)
    promotion: Promotion = Field(default_factory=Promotion)
    tools: Tools = Field(default_factory=Tools)
    gate: Gate = Field(default_factory=Gate)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    effects: list[EffectPolicy] = []
    """Policies over measured effects (see EffectPolicy)."""

    @field_validator("effects")
    @classmethod
    def _unique_ids(cls, value: list[EffectPolicy]) -> list[EffectPolicy]:
        return unique_policy_ids(value)


def unique_policy_ids(policies: list[EffectPolicy]) -> list[EffectPolicy]:
    """`policies`, when no two share an id (a refusal names its policy by it)."""
    seen = [p.id for p in policies]
    twice = sorted({i for i in seen if seen.count(i) > 1})
    if twice:
        raise ValueError(f"effect policy ids must be unique: {twice} appear more than once")
    return policies


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
    return _relative_to(parse_config(text, origin=str(path)), path.resolve().parent)


def _relative_to(config: Config, folder: Path) -> Config:
    """Relative local paths in `target` mean paths beside the config file."""
    changes: dict[str, str] = {}
    repo, database = config.target.repo, config.target.database
    if repo and "://" not in repo and not Path(repo).is_absolute() and ":" not in repo:
        changes["repo"] = str(folder / repo)
    if database and database.endswith(".sql") and not Path(database).is_absolute():
        changes["database"] = str(folder / database)
    if not changes:
        return config
    return config.model_copy(update={"target": config.target.model_copy(update=changes)})


def parse_config(text: str, *, origin: str = "<string>") -> Config:
    """Validate YAML text as a configuration; `origin` names it in errors."""
    import yaml

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
        return Config.model_validate(_mask_nulls(data))
    except ValidationError as exc:
        problems = [_describe(error, lines, origin) for error in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _mask_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """`column: null` under sandbox.database.mask is YAML's None: the null rule, as meant."""
    sandbox = data.get("sandbox")
    if not isinstance(sandbox, dict) or not isinstance(sandbox.get("database"), dict):
        return data
    database = sandbox["database"]
    mask = database.get("mask")
    if not isinstance(mask, dict) or None not in mask.values():
        return data
    fixed = {k: "null" if v is None else v for k, v in mask.items()}
    return {**data, "sandbox": {**sandbox, "database": {**database, "mask": fixed}}}


def _describe(
    error: Any, lines: dict[tuple[str | int, ...], int], origin: str,
    tags: frozenset[str] | set[str] | None = None,
) -> str:
    # Pydantic puts the discriminator's tag into the location of union members; drop it.
    tags = _UNION_TAGS if tags is None else tags
    loc = tuple(
        part for part in error["loc"]
        if not (isinstance(part, str) and part in tags)
    )
    message = error["msg"]
    broken = (error.get("ctx") or {}).get("error")
    if isinstance(broken, SettingError):  # a sandbox setting's own rule names its key
        loc, message = (*loc, *broken.path), broken.message
    key = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc)
    key = key.replace(".[", "[")
    line = None
    for depth in range(len(loc), -1, -1):
        line = lines.get(loc[:depth])
        if line is not None:
            break
    where = f"{origin}:{line}" if line is not None else origin
    if error["type"] == "union_tag_invalid":
        context = error.get("ctx", {})
        message = (f"unknown kind {context.get('tag')!r}; expected one of "
                   f"{context.get('expected_tags')}")
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        message = "unknown key (check its spelling and section)"
    return f"{where}: {key or '<top>'}: {message}"


_UNION_TAGS = {"env_var", "db_schema", "auth_header", "file", "pattern", "shell", "sql", "path",
               "git", "tool"}


def _record_lines(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines)
