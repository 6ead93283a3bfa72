"""The harness's own state folder on the host ($HARNESS_HOME, default ~/.cache/harness)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

SCRATCH = "scratch"
"""The folder of short-lived work folders, each named `<purpose>-<owner pid>-<random>` so
that `harness gc` can remove those of killed processes."""


def harness_home() -> Path:
    """The folder for workspaces, caches and journals; created on first use."""
    override = os.environ.get("HARNESS_HOME")
    base = Path(override) if override else Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "harness"
    base.mkdir(parents=True, exist_ok=True)
    return base


def home_key() -> str:
    """A short name of this harness home, carried by everything it starts (labels, server
    names), so that homes sharing a Docker engine never touch each other's resources."""
    return hashlib.sha256(str(harness_home().resolve()).encode()).hexdigest()[:10]


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


@contextlib.contextmanager
def scratch_folder(purpose: str) -> Iterator[Path]:
    """A fresh folder under $HARNESS_HOME/scratch, removed when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix=f"{purpose}-{os.getpid()}-", dir=state_dir(SCRATCH)))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def scratch_owner(folder: Path) -> str:
    """The pid that made a scratch folder ('' when the name does not say)."""
    parts = folder.name.split("-")
    return parts[1] if len(parts) >= 3 else ""
