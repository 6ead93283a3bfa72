"""A sandbox's disk: one fixed-size ext4 filesystem image, loop-mounted on the host, that
holds everything the agent can write (the workspace, /tmp and the home folder). The kernel
enforces its size: past it the agent gets ENOSPC, and the host loses at most that much
space. Needs root (to mount) and loop devices; `mechanism()` says whether this host has
them, and a sandbox without them falls back to size-capped tmpfs for /tmp and home only."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SandboxError
from harness.home import state_dir
from harness.sandbox.layout import HOME, TMP
from harness.sandbox.mounts import attach_loop, detach_loop, mount, unmount
from harness.sandbox.probes import forget, remembered

NEARLY_FULL_BYTES = 1 << 20
"""A disk with less free space than this (or no free inode) counts as full."""
_FOLDERS = {"tmp": 0o1777, "home": 0o700}
PROBE = "disk"
_FAILURE = "cannot make the sandbox disk"


@dataclass(frozen=True)
class Mechanism:
    """How disk limits are enforced on this host, or why they cannot be."""

    enforced: bool
    detail: str


_PROBING = threading.Lock()


def mechanism() -> Mechanism:
    """Whether this host can give each sandbox its own fixed-size filesystem (probed once
    per process, by one thread: parallel episodes share the answer)."""
    with _PROBING:
        return _probe()


def image_mount_blocker(mkfs: str, package: str) -> str | None:
    """Why this host cannot make a filesystem image with `mkfs` (from `package`) and
    loop-mount it; None when nothing is missing."""
    if os.geteuid() != 0:
        return f"mounting a filesystem image needs root (running as uid {os.geteuid()})"
    for tool in (mkfs, "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {package} mount)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control is missing)"
    return None


@functools.cache
def _probe() -> Mechanism:
    blocker = image_mount_blocker("mkfs.ext4", "e2fsprogs")
    if blocker is not None:
        return Mechanism(False, f"{blocker}; /tmp and home are size-capped tmpfs, the "
                                "workspace is not limited" if "root" in blocker else blocker)
    return Mechanism(*remembered(PROBE, _mount_one))


def _mount_one() -> tuple[bool, str]:
    probe = Disk(f"probe-{os.getpid()}-{secrets.token_hex(4)}", 16 << 20,
                 owner=(os.geteuid(), os.getegid()))
    try:
        probe.create(checked=False)
    except SandboxError as exc:
        return False, f"a filesystem image cannot be mounted here: {exc}"
    finally:
        probe.remove()
    return True, "a loop-mounted ext4 image per sandbox (workspace, /tmp and home)"


class Disk:
    """The filesystem of sandbox `name`, `size` bytes, mounted at the sandbox's folder
    under $HARNESS_HOME/workspaces; `remove()` unmounts it and deletes the image."""

    def __init__(self, name: str, size: int, *, owner: tuple[int, int]) -> None:
        self.name = name
        self.size = size
        self.owner = owner
        self.path = state_dir("workspaces") / name
        self.image = image_path(name)

    def create(self, *, checked: bool = True) -> Disk:
        """Make, format and mount the image, with tmp/ and home/ folders (the workspace
        clones itself into repo/)."""
        if checked and not mechanism().enforced:
            raise SandboxError(f"no disk limit on this host: {mechanism().detail}")
        try:
            # The folder, with its owner, exists before the image: gc judges by both.
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "owner.pid").write_text(str(os.getpid()))
            self.image.parent.mkdir(parents=True, exist_ok=True)
            with self.image.open("wb") as image:
                image.truncate(self.size)  # sparse: the host pays only for what is written
            # No journal: the filesystem lives as long as the sandbox; nothing to recover.
            # -F twice: the image is ours and new; a deleted image still attached to a loop
            # device can share its inode number, which mkfs would take for "in use".
            _run("mkfs.ext4", "-q", "-F", "-F", "-m", "0", "-O", "^has_journal", "-E",
                 "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(self.image))
            # discard: space the agent frees goes back to the host (holes in the image).
            mount_image(self.image, self.path, "ext4", "discard", failure=_FAILURE)
            for folder, mode in _FOLDERS.items():
                (self.path / folder).mkdir()
                os.chmod(self.path / folder, mode)
                if folder != "tmp":
                    os.chown(self.path / folder, *self.owner)
            shutil.rmtree(self.path / "lost+found", ignore_errors=True)
            (self.path / "owner.pid").write_text(str(os.getpid()))
        except BaseException as exc:
            self.remove()
            if checked and isinstance(exc, SandboxError):
                forget(PROBE)  # the next sandbox asks the host again
            raise
        return self

    def remove(self) -> None:
        """Unmount and delete; safe to call twice and on a half-made disk."""
        unmount(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()
        shutil.rmtree(self.path, ignore_errors=True)

    def mounts(self) -> dict[str, str]:
        """Host folder -> container path, for the writable folders on this disk."""
        return {str(self.path / "tmp"): TMP, str(self.path / "home"): HOME}

    def free_bytes(self) -> int:
        """Bytes the agent may still write."""
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def full(self) -> bool:
        """No room left for the agent (bytes or inodes)."""
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES or stats.f_favail == 0


def image_path(name: str) -> Path:
    """Where the image of sandbox `name` lives (outside the folder it is mounted on)."""
    return state_dir("disks") / f"{name}.img"


def mount_image(image: Path, target: Path, fstype: str, options: str, *,
                failure: str) -> None:
    """Attach `image` to a loop device and mount it at `target` (nosuid, nodev); on
    failure nothing stays attached, and SandboxError says `failure` and why."""
    try:
        device = attach_loop(image)
    except OSError as exc:
        raise SandboxError(f"{failure}: cannot attach {image} to a loop device: "
                           f"{exc.strerror or exc}") from exc
    try:
        mount(device, target, fstype, options)
    except BaseException as exc:
        detach_loop(device)  # also on Ctrl-C: a device attached to nothing mounted is lost
        if isinstance(exc, OSError):
            raise SandboxError(f"{failure}: {exc.strerror or exc}") from exc
        raise


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SandboxError(f"{_FAILURE}: {' '.join(argv[:2])}: "
                           f"{(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()
