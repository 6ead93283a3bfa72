"""What a command run in a sandbox returns: a non-zero exit is data, not an exception."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TIMEOUT_EXIT_CODE = 124
"""Exit code reported for a command killed at its timeout (as coreutils `timeout` does)."""


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one command in a sandbox."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    truncated: bool = False
    """Output went past the cap; stdout/stderr hold the first bytes of each."""
    oom_killed: bool = False
    """The kernel's OOM killer ended a process of the command at the memory limit."""
    interrupted: bool = False
    """Its process tree was killed on request (the caller gave up on it) before it ended."""
    disk_limit_hit: bool = False
    """The sandbox's disk (sandbox.disk_limit) was full when it ended: writes got ENOSPC."""
    stdout_bytes: bytes | None = field(default=None, repr=False, compare=False)
    """Standard output as bytes, for callers that asked for them (then `stdout` is empty)."""

    @property
    def ok(self) -> bool:
        """Exited 0 within its time."""
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        data = asdict(self)
        del data["stdout_bytes"]
        return data
