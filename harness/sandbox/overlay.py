"""Copy-on-write views: an overlayfs mount whose read-only lower layer is a shared folder
and whose upper layer holds one sandbox's writes. The lower layer is never written (the
kernel copies a file up before changing it); the upper layer and its work folder live
beside the view, so on the sandbox's own disk when it has one. Needs root and the
overlay filesystem; `support()` says whether this host has them."""

from __future__ import annotations

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
from harness.sandbox.mounts import mount, unescape, unmount
from harness.sandbox.probes import forget, remembered

PROBE = "overlay"
_UNSAFE = (",", ":", "\\", "\n")
"""Characters overlayfs's option parser would read as separators."""


@dataclass(frozen=True)
class Support:
    """Whether this host can mount copy-on-write views, or why not."""

    available: bool
    detail: str


_PROBING = threading.Lock()


def support() -> Support:
    """Whether an overlay can be mounted over the harness home here (probed once per
    process, by one thread)."""
    with _PROBING:
        return _probe()


@functools.cache
def _probe() -> Support:
    if os.geteuid() != 0:
        return Support(False, f"mounting an overlay needs root (running as uid {os.geteuid()})")
    if shutil.which("mount") is None:
        return Support(False, "mount not found (apt-get install mount)")
    filesystems = Path("/proc/filesystems").read_text()
    if "\toverlay\n" not in filesystems:
        subprocess.run(["modprobe", "overlay"], capture_output=True, check=False)
        if "\toverlay\n" not in Path("/proc/filesystems").read_text():
            return Support(False, "the kernel has no overlay filesystem (modprobe overlay)")
    return Support(*remembered(PROBE, _mount_one))


def _mount_one() -> tuple[bool, str]:
    probe = state_dir("workspaces") / f"probe-cow-{os.getpid()}-{secrets.token_hex(4)}"
    lower = state_dir("pristine") / f"probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
        (probe / "owner.pid").write_text(str(os.getpid()))
        lower.mkdir()
        (lower / "file").write_text("lower\n")
        mount_view(lower, probe / "upper", probe / "work", probe / "view")
        try:
            (probe / "view" / "file").write_text("upper\n")
            if (lower / "file").read_text() != "lower\n":
                return False, "the overlay wrote through to its lower layer"
        finally:
            unmount(probe / "view")
    except (SandboxError, OSError) as exc:
        return False, f"an overlay cannot be mounted over {state_dir('pristine')}: {exc}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
        shutil.rmtree(lower, ignore_errors=True)
    return True, ("a copy-on-write overlay per sandbox over one shared pristine checkout "
                  "per (repository, revision)")


def mount_view(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount at `target` a view of `lower` whose changes go to `upper` (`work` is the
    overlay's scratch folder, on the same filesystem as `upper`). Folders missing are made;
    an existing `upper` keeps what it holds. Raises SandboxError with mount's reason."""
    for path in (lower, upper, work, target):
        if any(char in str(path) for char in _UNSAFE):
            raise SandboxError(f"cannot mount an overlay over {path}: its path holds one of "
                               f"{' '.join(_UNSAFE[:3])} (set HARNESS_HOME elsewhere)")
    for path in (upper, work, target):
        path.mkdir(parents=True, exist_ok=True)
    # redirect_dir: renaming a folder of the lower layer works (else EXDEV, and `git mv dir`
    # fails); nosuid/nodev: the agent's files are never setuid programs or devices here.
    options = f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=on"
    try:
        mount("overlay", target, "overlay", options)
    except OSError as exc:
        forget(PROBE)  # the next sandbox asks the host again
        raise SandboxError(f"cannot mount the copy-on-write view at {target}: "
                           f"{exc.strerror or exc}") from exc


def unmount_view(target: Path) -> None:
    """Unmount the view at `target` if one is mounted (lazily when still busy)."""
    unmount(target)


def lower_layers_in_use() -> set[str]:
    """The lower folders of every overlay mounted on this host now."""
    found: set[str] = set()
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "overlay":
            continue
        for option in fields[3].split(","):
            if option.startswith("lowerdir="):
                found.update(unescape(part) for part in option[len("lowerdir="):].split(":"))
    return found
