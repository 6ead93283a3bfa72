"""The sandbox one agent works in: a hardened container over a throwaway git clone."""

from __future__ import annotations

import dataclasses
import posixpath
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import (
    SandboxError,
    SandboxFileNotFound,
    SandboxFileTooLarge,
    SandboxIsADirectory,
    SandboxNotADirectory,
    SandboxPermissionError,
)
from harness.sandbox import engine, images
from harness.sandbox.container import Container
from harness.sandbox.disk import Disk, mechanism
from harness.sandbox.labels import resource_labels
from harness.sandbox.layout import HOME, WORKSPACE
from harness.sandbox.result import ExecResult
from harness.sandbox.settings import Hardening, SandboxSettings, size_bytes
from harness.sandbox.workspace import Workspace, WorkspaceChanges

if TYPE_CHECKING:  # the database driver loads only for sandboxes with a database
    from harness.sandbox.capture import RowDelta
    from harness.sandbox.database import SandboxDatabase
    from harness.sandbox.engine import Engine

_ENOSPC = "No space left on device"
BOUND_TRACE = "bound-trace-id"
"""Beside a pooled sandbox's clone: the trace id of the episode it was handed to."""


class Sandbox:
    """A container over a throwaway clone of `repo` at `ref`. Nothing done inside
    reaches the origin. `with Sandbox(repo) as sb:` always removes both."""

    def __init__(
        self,
        repo: str | Path,
        *,
        ref: str | None = None,
        settings: SandboxSettings | None = None,
        environment: Mapping[str, str] | None = None,
        database: str | None = None,
        client: Engine | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.id = f"hx-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.settings = settings or SandboxSettings()
        self.workspace = Workspace(repo, ref, name=self.id, owner=owner,
                                   cow=self.settings.workspace_cow)
        self._environment = dict(environment or {})
        self._client = client
        self._container: Container | None = None
        self._database_source = database
        self.database: SandboxDatabase | None = None
        self.disk: Disk | None = None
        """The filesystem holding everything the agent writes (None: no disk limit)."""
        self.open_duration_s = 0.0

    @property
    def container(self) -> Container:
        """The running container."""
        if self._container is None:
            raise SandboxError(f"sandbox {self.id} is not open")
        return self._container

    @property
    def hardening_overrides(self) -> dict[str, object]:
        """Hardening settings that differ from the defaults (for the trace), and a disk
        limit that is configured but not enforced."""
        overrides = self.settings.hardening.overrides()
        if self.settings.disk_limit is not None and not mechanism().enforced:
            overrides["disk_limit"] = f"not enforced: {mechanism().detail}"
        elif self.settings.disk_limit is None:
            overrides["disk_limit"] = None
        return overrides

    # ------------------------------------------------------------ lifecycle

    def open(self) -> Sandbox:
        """Clone the repo and start the container; on failure, undo what was made."""
        self._prepare()
        try:
            self.container.start()
        except BaseException:
            self.close()
            raise
        return self

    def run(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | str | None = None,
    ) -> ExecResult:
        """Make the sandbox for one command, the `docker run` of sandboxes: the clone (and
        database) as `open` makes them, and a container whose one process is `command`,
        removed when it ends (see `Container.run`). The workspace and database stay to be
        read until `close`. The result reads as `exec`'s."""
        cwd = self._folder(cwd)
        self._prepare()
        result = self.container.run(command, timeout=timeout, env=env, cwd=cwd, stdin=stdin)
        return self._with_disk_state(result)

    def _prepare(self) -> None:
        """The disk, the clone, the database, and the container to run over them (not yet
        started); on failure, undo what was made."""
        if self._container is not None:
            raise SandboxError(f"sandbox {self.id} was opened already: a sandbox opens, or "
                               "runs its one command, once until it is closed")
        started = time.monotonic()
        try:
            client = self._client or engine.connect()
            image = _image_reference(client, self.settings.image)
            writable = self._make_disk()
            self.workspace.create()
            mounts = self.workspace.container_mounts()
            environment = {**self._environment, **self.workspace.container_environment()}
            if self._database_source is not None:
                from harness.sandbox.database import SandboxDatabase, open_baseline

                server, baseline = open_baseline(self._database_source, self.settings.database)
                self.database = SandboxDatabase(server, baseline, self.id).create()
                mounts.update(self.database.mounts())
                environment.update(self.database.environment())
            self._container = Container(
                client,
                image,
                hardening=self._hardening(),
                labels=resource_labels(self.id, "sandbox"),
                workspace=str(self.workspace.path),
                writable_mounts=writable,
                read_only_mounts=mounts,
                # No .pyc files: they would land in `git add -A`, and a same-size edit within
                # one second of the last import would run stale bytecode.
                environment={"HOME": HOME, "PYTHONDONTWRITEBYTECODE": "1",
                             **environment},
                owner=self.workspace.owner,
                output_limit=self.settings.output_limit_bytes,
                default_timeout=self.settings.exec_timeout_s,
                name=self.id,
            )
        except BaseException:
            self.close()
            raise
        self.open_duration_s = time.monotonic() - started

    def bind(self, environment: Mapping[str, str]) -> None:
        """Give a sandbox opened ahead of time (a pool's) its user's variables: every
        command from now on runs with them, as if the container had been made with them."""
        own = {**self.workspace.container_environment(),
               **(self.database.environment() if self.database is not None else {})}
        chosen = {k: v for k, v in environment.items() if k not in own}  # as `open` ranks them
        self._environment.update(chosen)
        self.container.bound_environment = {**self.container.bound_environment, **chosen}
        if "HARNESS_TRACE_ID" in chosen:  # for `harness ps`: the container's own has none
            (self.workspace.path.parent / BOUND_TRACE).write_text(chosen["HARNESS_TRACE_ID"])

    def close(self) -> None:
        """Remove the container, the database copy and the clone; safe to call twice.
        Each step runs even when one before it failed or was interrupted (Ctrl-C); the
        first failure is raised at the end."""
        failure: BaseException | None = None
        for step in (self._remove_container, self._drop_database, self._remove_files):
            try:
                step()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _remove_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.stop()

    def _drop_database(self) -> None:
        database, self.database = self.database, None
        if database is not None:
            database.drop()

    def _remove_files(self) -> None:
        disk, self.disk = self.disk, None
        if disk is None:
            self.workspace.remove()
            return
        try:
            self.workspace.detach()  # the view's upper layer is on the disk
        finally:
            disk.remove()  # the clone goes with its filesystem

    def _make_disk(self) -> dict[str, str]:
        """The sandbox's own filesystem when a disk limit is set and enforceable; the
        writable folders to mount from it."""
        limit = self.settings.disk_limit
        if limit is None:
            return {}
        if not mechanism().enforced:
            if self.settings.require_disk_limit:
                raise SandboxError(f"sandbox.disk_limit {limit} cannot be enforced on this "
                                   f"host ({mechanism().detail}) and "
                                   "sandbox.require_disk_limit is set")
            return {}
        self.disk = Disk(self.id, size_bytes(limit), owner=self.workspace.owner).create()
        return self.disk.mounts()

    def _hardening(self) -> Hardening:
        """The hardening settings, with tmpfs no larger than the disk limit."""
        hardening = self.settings.hardening
        limit = self.settings.disk_limit
        if limit is not None and size_bytes(limit) < size_bytes(hardening.tmpfs_size):
            return dataclasses.replace(hardening, tmpfs_size=limit)
        return hardening

    def __enter__(self) -> Sandbox:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ actions

    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | str | None = None,
        user: str | None = None,
    ) -> ExecResult:
        """Run a command in the container (see `Container.exec`); `disk_limit_hit` says
        whether the sandbox's disk is full after it. `user` is the agent (None) or one
        of `sandbox.hardening.exec_users`; another raises SandboxPermissionError."""
        cwd = self._folder(cwd)
        if user is not None and not self.settings.hardening.may_run_as(user):
            raise SandboxPermissionError(
                f"commands run as the agent user: {user!r} is not in "
                "sandbox.hardening.exec_users")
        result = self.container.exec(command, timeout=timeout, env=env, cwd=cwd, stdin=stdin,
                                     user=user)
        return self._with_disk_state(result)

    def _with_disk_state(self, result: ExecResult) -> ExecResult:
        if self.disk is not None and (self.disk.full() or _ENOSPC in result.stderr):
            return replace(result, disk_limit_hit=True)
        return result

    @staticmethod
    def _folder(cwd: str | None) -> str | None:
        """A working folder in the container; a relative one starts at the workspace."""
        if cwd is not None and not cwd.startswith("/"):
            return posixpath.normpath(posixpath.join(WORKSPACE, cwd))
        return cwd

    def interrupt(self) -> None:
        """Kill the commands running in the container now (see `Container.interrupt`)."""
        if self._container is not None:
            self._container.interrupt()

    def read_file(self, path: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes of a file as the agent sees it (a relative path starts at the
        workspace). Raises SandboxFileNotFound, SandboxIsADirectory, SandboxPermissionError
        (unreadable by the agent), SandboxFileTooLarge (over `max_bytes`; nothing read)."""
        path = _absolute(path)
        result = self.container.exec(
            ["bash", "-c", _READ, "read", path, str(max_bytes or "")],
            output_limit=(max_bytes or 1 << 34) + 1, stdout_bytes=True,
            timeout=max(self.settings.exec_timeout_s, 300.0))
        if result.exit_code == 42:
            size = int(result.stderr.strip() or 0)
            raise SandboxFileTooLarge(path, size, max_bytes or 0)
        _raise_typed(result, path, "read")
        return result.stdout_bytes or b""

    def write_file(self, path: str, content: bytes | str) -> None:
        """Write a file as the agent would (its permissions apply), creating parent
        folders; a relative path starts at the workspace. Raises SandboxIsADirectory,
        SandboxNotADirectory (a parent is a file), SandboxPermissionError, or SandboxError
        saying why (the disk full, for one)."""
        path = _absolute(path)
        data = content.encode() if isinstance(content, str) else content
        result = self.container.exec(["bash", "-c", _WRITE, "write", path], stdin=data,
                                     timeout=max(self.settings.exec_timeout_s, 300.0))
        if not result.ok and self.disk is not None and self.disk.full():
            raise SandboxError(f"cannot write {path}: {result.stderr.strip()} (disk_limit_hit: "
                               "the sandbox's disk, sandbox.disk_limit, is full)")
        _raise_typed(result, path, "write")

    def changes(self) -> WorkspaceChanges:
        """What was committed in the workspace since the base."""
        return self.workspace.changes()

    def row_delta(self) -> RowDelta | None:
        """The net row changes and DDL in the sandbox's database (None without one)."""
        return self.database.delta() if self.database is not None else None


# Exit codes of the file scripts: each a typed error.
_READ = r"""
p=$1 max=$2
[ -e "$p" ] || exit 44
[ -d "$p" ] && exit 45
[ -r "$p" ] || exit 43
if [ -n "$max" ]; then
  size=$(stat -L -c %s -- "$p") || exit 46
  [ "$size" -gt "$max" ] && { echo "$size" >&2; exit 42; }
fi
exec cat -- "$p"
"""
_WRITE = r"""
p=$1
[ -d "$p" ] && exit 45
dir=$(dirname -- "$p")
if ! [ -d "$dir" ]; then
  error=$(mkdir -p -- "$dir" 2>&1) || {
    case $error in *"Permission denied"*) exit 43;; *"Not a directory"*|*"File exists"*) exit 47;; esac
    echo "$error" >&2; exit 46; }
fi
if [ -e "$p" ]; then [ -w "$p" ] || exit 43; else [ -w "$dir" ] || exit 43; fi
cat > "$p"
"""


def _raise_typed(result: ExecResult, path: str, verb: str) -> None:
    """The error a file script's exit code stands for (nothing when it succeeded)."""
    if result.ok:
        return
    errors: dict[int, tuple[type[SandboxError], str]] = {
        44: (SandboxFileNotFound, f"no such file: {path}"),
        45: (SandboxIsADirectory, f"{path} is a directory"),
        43: (SandboxPermissionError, f"permission denied: the agent may not {verb} {path}"),
        47: (SandboxNotADirectory, f"a parent of {path} is not a directory"),
    }
    kind, message = errors.get(result.exit_code, (
        SandboxError, f"cannot {verb} {path}: {result.stderr.strip() or result.exit_code}"))
    raise kind(message)


def _absolute(path: str) -> str:
    return path if path.startswith("/") else posixpath.join(WORKSPACE, path)


def _image_reference(client: Engine, image: str) -> str:
    """An image reference: a definition under sandboxes/ is built when missing."""
    if ":" in image or "/" in image:
        return image
    return images.ensure(client, images.ImageDefinition.named(image))
