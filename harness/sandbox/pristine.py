"""Pristine checkouts: one read-only work tree per (repository, revision, owner), with an
index whose stat data stays valid when the tree is seen through an overlay, shared by
every sandbox of that revision as the lower layer of its copy-on-write view.

A checkout is built once under a per-key file lock (concurrent opens wait for the first
builder), into a folder renamed into place when complete, so a killed builder leaves
only a `*.building-*` folder that `prune` removes. No sandbox ever writes one: the overlay
copies a file up before changing it. `prune` removes checkouts no overlay mounts and no
opener holds that were last used longer ago than a given age."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.home import state_dir
from harness.sandbox.overlay import lower_layers_in_use

IDLE_S = 24 * 3600.0
"""A pristine checkout no sandbox used for this long is removed by `harness gc`."""
_LAST_USED = "last-used"
_BUILDING = ".building-"


@dataclass(frozen=True)
class PristineCheckout:
    """A built checkout: `tree` (the overlay's lower layer) and `index` (git's index of
    that tree, to copy into each sandbox's `.git`)."""

    key: str
    folder: Path

    @property
    def tree(self) -> Path:
        """The work tree at the revision (no `.git`)."""
        return self.folder / "tree"

    @property
    def index(self) -> Path:
        """git's index of `tree`, its stat data refreshed after the tree was chowned."""
        return self.folder / "index"


def key_for(source: Path, base: str, owner: tuple[int, int], settings: str = "") -> str:
    """The name of the checkout of commit `base` of repository `source` owned by `owner`,
    made under git `settings` (the configuration a checkout reads: line endings, filters)."""
    text = f"{source.resolve()}\0{base}\0{owner[0]}:{owner[1]}\0{settings}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextlib.contextmanager
def pristine_checkout(source: Path, base: str, owner: tuple[int, int], *,
                      build: Callable[[Path], None], settings: str = ""
                      ) -> Iterator[PristineCheckout]:
    """The checkout of `base` of `source` under git `settings`, built by `build(folder)`
    if missing (it fills `folder` with `tree/` and `index`), held against pruning until
    the block ends (mount the view inside it: from then on the mount itself keeps the
    checkout in use)."""
    key = key_for(source, base, owner, settings)
    root = state_dir("pristine")
    with _held(root / f"{key}.lock", blocking=True):
        checkout = PristineCheckout(key, root / key)
        if not checkout.index.is_file():
            shutil.rmtree(checkout.folder, ignore_errors=True)
            building = root / f"{key}{_BUILDING}{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            # Only root reaches the tree (the overlay reads it with the mounter's rights): a
            # host user with the agent's uid must not edit what later sandboxes start from.
            building.mkdir(mode=0o700)
            os.chmod(building, 0o700)
            try:
                build(building)
                (building / "meta.json").write_text(json.dumps(
                    {"source": str(source), "base": base, "owner": list(owner),
                     "built": time.time()}))
                os.rename(building, checkout.folder)
            finally:
                shutil.rmtree(building, ignore_errors=True)
        (checkout.folder / _LAST_USED).touch()
        yield checkout


def prune(*, idle_s: float = IDLE_S) -> list[str]:
    """Remove pristine checkouts that no overlay mounts, no opener holds, and no sandbox
    used for `idle_s` seconds, and half-built ones whose builder is gone; their keys."""
    root = state_dir("pristine")
    removed = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir():
            continue
        key = folder.name.split(_BUILDING)[0]
        lock = root / f"{key}.lock"
        with _held(lock, blocking=False) as held:
            if not held:
                continue  # being built, or about to be mounted
            # Read the mounts under the lock: an opener mounts its view before letting go.
            if _BUILDING not in folder.name and (_idle_for(folder) < idle_s or str(
                    folder / "tree") in lower_layers_in_use()):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
            if not (root / key).exists():
                lock.unlink(missing_ok=True)
    for lock in root.glob("*.lock"):  # of checkouts removed by hand
        if not (root / lock.stem).exists():
            with _held(lock, blocking=False) as held:
                if held and not (root / lock.stem).exists():
                    lock.unlink(missing_ok=True)
    return removed


def _idle_for(folder: Path) -> float:
    try:
        return time.time() - (folder / _LAST_USED).stat().st_mtime
    except FileNotFoundError:
        return float("inf")


@contextlib.contextmanager
def _held(path: Path, *, blocking: bool) -> Iterator[bool]:
    """An exclusive lock on the file `path`; yields False when `blocking` is off and the
    lock is taken. A lock file removed by `prune` while another process waited on it is
    opened again, so two holders never hold different files of the same name."""
    while True:
        handle = path.open("a")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                same = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield True
                return
        finally:
            handle.close()  # closing releases the lock
