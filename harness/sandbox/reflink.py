"""The reflink filesystem a sandbox database server keeps its data on: an XFS image
(reflink=1) under $HARNESS_HOME, loop-mounted on the host and bind-mounted into the
server's container, where PostgreSQL 18 clones a template database in constant time
(`file_copy_method = clone`). Needs root, loop devices and mkfs.xfs; `host_support()`
says whether this host has them, and a server without them keeps its data on a Docker
volume and copies."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SandboxError
from harness.home import scratch_folder
from harness.sandbox.disk import image_mount_blocker, mount_image
from harness.sandbox.mounts import unmount

REFLINK_MIN_VERSION = 18
"""The first PostgreSQL major version with `file_copy_method = clone`."""
IMAGE_NAME = "data.xfs"
"""The image file in a server's folder."""
MIN_IMAGE_BYTES = 300 << 20
"""mkfs.xfs refuses a filesystem smaller than this."""
_FAILURE = "cannot make the database data image"
_FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h


@dataclass(frozen=True)
class CloneSupport:
    """Whether a database copy can share blocks with its template, and why (or why not)."""

    reflink: bool
    detail: str


def can_reflink(folder: Path) -> CloneSupport:
    """Whether files in `folder` can be cloned by reflink (FICLONE between two files)."""
    source = folder / f".reflink-probe-{os.getpid()}-{secrets.token_hex(4)}"
    target = source.with_suffix(".clone")
    try:
        source.write_bytes(b"x" * 4096)
        with source.open("rb") as src, target.open("wb") as dst:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
    except OSError as exc:
        kind = filesystem_type(folder)
        why = "it does not support reflinks" if exc.errno in (
            errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV) else exc.strerror
        return CloneSupport(False, f"{folder} is on {kind}: {why}")
    finally:
        for path in (source, target):
            with contextlib.suppress(OSError):
                path.unlink()
    return CloneSupport(True, f"{folder} is on {filesystem_type(folder)} with reflinks")


def filesystem_type(folder: Path) -> str:
    """The type of the filesystem `folder` is on, from /proc/mounts (longest mount point)."""
    best, kind = "", "an unknown filesystem"
    resolved = str(folder.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


_PROBING = threading.Lock()


def host_support() -> CloneSupport:
    """Whether this host can hold a server's data on a reflink image (probed once per
    process by making, mounting and cloning in a small one)."""
    with _PROBING:
        return _probe()


@functools.cache
def _probe() -> CloneSupport:
    blocker = image_mount_blocker("mkfs.xfs", "xfsprogs")
    if blocker is not None:
        return CloneSupport(False, blocker)
    with scratch_folder("reflink-probe") as folder:
        image = DataImage(folder, MIN_IMAGE_BYTES)
        try:
            found = image.ensure()
        except SandboxError as exc:
            return CloneSupport(False, str(exc))
        finally:
            image.remove()
    return CloneSupport(True, "an XFS image (reflink=1) loop-mounted for the server's data"
                        if found.reflink else found.detail)


class DataImage:
    """The XFS image `folder`/data.xfs of `size` bytes (sparse), mounted at `folder`/data;
    the server's data directory is its `pgdata` folder. `remove()` unmounts and deletes."""

    def __init__(self, folder: Path, size: int, *, owner: tuple[int, int] = (0, 0)) -> None:
        self.image = folder / IMAGE_NAME
        self.mountpoint = folder / "data"
        self.pgdata = self.mountpoint / "pgdata"
        self.size = size
        self.owner = owner
        """Who owns `pgdata` (the server's uid and gid)."""

    def exists(self) -> bool:
        """Whether the image file is there (mounted or not)."""
        return self.image.exists()

    def mounted(self) -> bool:
        """Whether the image is mounted on the host."""
        return os.path.ismount(self.mountpoint)

    def ensure(self) -> CloneSupport:
        """Make the image when missing, mount it when not mounted (after a reboot), and
        check that it clones by reflink. Idempotent."""
        if self.mounted():
            return can_reflink(self.mountpoint)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        fresh = not self.image.exists()
        if fresh:
            if self.size < MIN_IMAGE_BYTES:
                raise SandboxError(f"a database data image needs at least "
                                   f"{MIN_IMAGE_BYTES >> 20} MB (asked for {self.size} bytes)")
            try:
                with self.image.open("wb") as handle:
                    handle.truncate(self.size)  # sparse: the host pays for what is written
                # -f: the image is ours and new (a deleted image still attached to a loop
                # device may share its inode number).
                _run("mkfs.xfs", "-q", "-f", "-m", "reflink=1", "-L", "harness-pg",
                     str(self.image))
            except BaseException:
                self.image.unlink(missing_ok=True)
                raise
        # discard: a dropped database's blocks go back to the host (holes in the image).
        mount_image(self.image, self.mountpoint, "xfs", "discard", failure=_FAILURE)
        if fresh or not self.pgdata.exists():
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.pgdata, *self.owner)
        return can_reflink(self.mountpoint)

    def remove(self) -> None:
        """Unmount and delete the image; safe to call twice and on a half-made one."""
        unmount(self.mountpoint)
        self.image.unlink(missing_ok=True)
        if not os.path.ismount(self.mountpoint):
            shutil.rmtree(self.mountpoint, ignore_errors=True)


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SandboxError(f"{_FAILURE}: {' '.join(argv[:2])}: "
                           f"{(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()
