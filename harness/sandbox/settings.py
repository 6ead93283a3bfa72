"""The settings of a sandbox (its container's confinement, its workspace, its database
copy): plain frozen dataclasses, so that opening a sandbox needs no validation library.
Read from YAML, they are validated by `harness.config` (types by pydantic, the rules
here in `__post_init__`, which also holds when they are made in Python)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

_SIZE = re.compile(r"^\d+(\.\d+)?[kmg]?$", re.IGNORECASE)
_MASK_TARGET = re.compile(r"^([A-Za-z_][\w$]*\.){1,2}[A-Za-z_][\w$]*$")
_USER = re.compile(r"\*|[a-z_][a-z0-9_-]{0,31}|\d+(:\d+)?")
_STRICT = {"extra": "forbid"}
"""Read by pydantic when these are validated from a configuration: unknown keys are errors."""


class SettingError(ValueError):
    """A setting's value breaks its rule; `path` names the setting (and the entry of a
    mapping setting) under its section."""

    def __init__(self, *path: str, message: str) -> None:
        super().__init__(f"{'.'.join(path)}: {message}")
        self.path = path
        self.message = message


def size_bytes(size: str) -> int:
    """Bytes in a size like 512m or 2g (k, m, g are powers of 1024)."""
    unit = size[-1].lower()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(unit, 1)
    return int(float(size.rstrip("kmgKMG")) * scale)


def _size(owner: object, key: str, *, at_least: int = 0, wanted: str) -> None:
    value = getattr(owner, key)
    if value is None:
        return
    if not isinstance(value, str) or not _SIZE.match(value) or size_bytes(value) < at_least:
        raise SettingError(key, message=f"{value!r} is not a size {wanted}")
    object.__setattr__(owner, key, value.lower())


def _above(owner: object, key: str, bound: float, *, inclusive: bool) -> None:
    value = getattr(owner, key)
    if value is None:
        return
    if value < bound or (value == bound and not inclusive):
        relation = "greater than or equal to" if inclusive else "greater than"
        raise SettingError(key, message=f"Input should be {relation} {bound:g}")


@dataclass(frozen=True)
class Hardening:
    """How each sandbox container is confined. Every field that differs from the
    default is reported as an override (see `Hardening.overrides`)."""

    __pydantic_config__ = _STRICT

    network: bool = False
    """Give the container a network; off by default (no interface but lo)."""
    read_only_root: bool = True
    drop_capabilities: bool = True
    no_new_privileges: bool = True
    user: str = "agent"
    pids_limit: int = 256
    """At least 16."""
    memory: str = "1g"
    """Memory limit, e.g. 512m or 2g; swap is not allowed beyond it."""
    cpus: float = 1.0
    tmpfs_size: str = "256m"
    exec_users: list[str] = field(default_factory=list)
    """Users besides the agent a program may be run as (the exec tool's `user`, inspect's
    `exec(user=...)`), e.g. [root], or ["*"] for any; none by default. Root without
    capabilities and with a read-only root can change little: relax those too if the
    programs need it."""

    def __post_init__(self) -> None:
        _above(self, "pids_limit", 16, inclusive=True)
        _above(self, "cpus", 0, inclusive=False)
        for key in ("memory", "tmpfs_size"):
            _size(self, key, wanted="like 512m or 2g")
        for user in self.exec_users:
            if not _USER.fullmatch(user):
                raise SettingError("exec_users",
                                   message=f"{user!r} is not a user name or uid[:gid]")

    def may_run_as(self, user: str) -> bool:
        """Whether a program may be run as `user`, another than the container's own (which
        is asked for by naming no user: a name that looks like the agent's may be another
        user, when `user` above is not the agent or the host is not root)."""
        return user in self.exec_users or "*" in self.exec_users

    def overrides(self) -> dict[str, Any]:
        """The fields set to something other than the hardened default."""
        default = Hardening()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


@dataclass(frozen=True)
class FixedMask:
    """Mask a column with one value (cast to the column's type)."""

    __pydantic_config__ = _STRICT

    fixed: str | int | float | bool


MaskRule = Literal["hash", "null", "fake"] | FixedMask


@dataclass(frozen=True)
class DatabaseSettings:
    """The sandbox's copy of the target database."""

    __pydantic_config__ = _STRICT

    server_version: int | None = None
    """PostgreSQL major version of the sandbox server; default: the target's own (with
    `clone: reflink`, 18 for an older target)."""
    clone: Literal["auto", "reflink", "copy"] = "auto"
    """How a sandbox's database is copied from the baseline: `reflink` shares the blocks
    (constant time at any size; PostgreSQL 18 with its data on a reflink filesystem, which
    the harness makes as a loop-mounted XFS image when run as root) and fails when it
    cannot; `copy` copies every file (FILE_COPY); `auto` clones where it can and copies
    elsewhere, saying why (`harness doctor`, `clone_method` in `exec --json`)."""
    data_image_size: str = "32g"
    """Size of the sparse XFS image holding a PostgreSQL 18 sandbox server's data (its
    baselines and every sandbox copy); read when the image is first made."""
    baseline_max_age_s: float | None = None
    """Renew a cached baseline older than this; None keeps it until --refresh."""
    refresh_on_source_change: bool = True
    """Renew a cached baseline of a live source that has changed since it was made; false
    keeps one fixed copy (reproducible runs against a moving database)."""
    mask: dict[str, MaskRule] = field(default_factory=dict)
    """`table.column` (or `schema.table.column`) -> `hash`, `null`, `fake` (format-
    preserving) or `{fixed: value}`: applied when the baseline is built, so no sandbox
    holds the real values; a change set that writes a masked column is refused."""

    def __post_init__(self) -> None:
        _size(self, "data_image_size", at_least=1 << 30, wanted="of at least 1g (like 32g)")
        _above(self, "baseline_max_age_s", 0, inclusive=False)
        for target in self.mask:
            if not _MASK_TARGET.match(target):
                raise SettingError("mask", target, message=f"{target!r} is not table.column "
                                                           f"or schema.table.column")


@dataclass(frozen=True)
class SandboxSettings:
    """The sandbox every episode runs in."""

    __pydantic_config__ = _STRICT

    image: str = "agent"
    """A definition under sandboxes/ (built on demand) or any image reference containing ':'."""
    hardening: Hardening = field(default_factory=Hardening)
    exec_timeout_s: float = 120.0
    """Seconds a command may run when the agent names no timeout."""
    max_exec_timeout_s: float = 900.0
    """The most an agent may ask for: a longer timeout is cut to this."""
    output_limit_bytes: int = 1 << 20
    """Bytes of stdout and of stderr kept per command (at least 1024); the rest is dropped
    and flagged."""
    disk_limit: str | None = "4g"
    """Space for everything the agent writes (workspace, /tmp, home), e.g. 512m or 4g:
    one fixed-size filesystem per sandbox, enforced by the kernel (ENOSPC past it). Needs
    root and loop devices (`harness doctor` says); None: no limit."""
    require_disk_limit: bool = False
    """Refuse to open a sandbox when this host cannot enforce `disk_limit`; otherwise the
    sandbox opens and reports the limit as not enforced."""
    workspace_cow: Literal["auto", "off"] = "auto"
    """`auto`: the workspace is a copy-on-write overlay over one shared pristine checkout
    per (repository, revision), opening in constant time at any repository size, where the
    host can mount one (root, overlayfs; `harness doctor` says); elsewhere, and with `off`,
    each sandbox clones and checks out its own work tree."""
    database: DatabaseSettings = field(default_factory=DatabaseSettings)

    def __post_init__(self) -> None:
        _above(self, "exec_timeout_s", 0, inclusive=False)
        _above(self, "max_exec_timeout_s", 0, inclusive=False)
        _above(self, "output_limit_bytes", 1024, inclusive=True)
        _size(self, "disk_limit", at_least=16 << 20,
              wanted="of at least 16m (like 512m or 4g)")

    def fingerprint(self) -> str:
        """These settings as canonical JSON (what a pooled sandbox was made with)."""
        import json

        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
