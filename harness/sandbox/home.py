"""The harness's own state folder on the host ($HARNESS_HOME, default ~/.cache/harness)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def harness_home() -> Path:
    """The folder for workspaces, caches and journals; created on first use."""
    override = os.environ.get("HARNESS_HOME")
    base = Path(override) if override else Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "harness"
    base.mkdir(parents=True, exist_ok=True)
    return base


def state_dir(name: str) -> Path:
    """A named subfolder of the harness home, e.g. `workspaces`."""
    path = harness_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) against every other process
    and thread of this harness home, until the block ends."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
