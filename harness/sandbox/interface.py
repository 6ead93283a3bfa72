"""The sandbox interface: what an episode needs of any backend. Today's backend is the
Docker sandbox (`harness.sandbox.Sandbox`); another (an inspect_ai provider, Kubernetes)
implements this and passes the conformance suite in tests/sandbox/test_conformance.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from harness.sandbox.result import ExecResult


@runtime_checkable
class SandboxEnvironment(Protocol):
    """A place where an agent's commands run and its files live, isolated from the host
    and thrown away at the end."""

    @property
    def id(self) -> str:
        """A name unique on this host, carried by everything the sandbox makes."""

    def open(self) -> SandboxEnvironment:
        """Make the sandbox ready. Raises EngineUnavailable (no engine answers), ImageError
        (its image is missing and cannot be built), WorkspaceError (the repository cannot
        be cloned) or SandboxError; a failed open leaves nothing behind."""

    def close(self) -> None:
        """Remove everything the sandbox made. Safe to call twice and after a failed open;
        raises nothing for a sandbox another process already removed."""

    def exec(self, command: Sequence[str] | str, *, timeout: float | None = None,
             env: Mapping[str, str] | None = None, cwd: str | None = None,
             stdin: bytes | str | None = None) -> ExecResult:
        """Run `command` (an argv, or a string run by bash) as the agent, in `cwd`
        (relative paths start at the workspace), with `env` added and `stdin` as its input.
        A non-zero exit is data, not an exception; past `timeout` the whole process tree is
        killed (`timed_out`); output past the cap is dropped (`truncated`). Raises
        FileNotFoundError or NotADirectoryError for a `cwd` that cannot be entered,
        ValueError for an empty argv, SandboxError when the sandbox is not open or the
        engine fails."""

    def read_file(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes of a file as the agent sees it (a relative path starts at the
        workspace). Raises FileNotFoundError, IsADirectoryError, PermissionError (the
        agent may not read it), SandboxFileTooLarge (over `max_bytes`: nothing is read);
        each also a SandboxError."""

    def write_file(self, path: str, content: bytes | str) -> None:
        """Write a file as the agent would (its permissions apply), creating parent
        folders; a relative path starts at the workspace. Raises IsADirectoryError,
        NotADirectoryError (a parent is a file), PermissionError, or SandboxError saying
        why (the disk full, for one); each also a SandboxError."""

    def interrupt(self) -> None:
        """Kill the commands running now (from another thread); never raises."""
