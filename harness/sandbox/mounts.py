"""Mounts on the host, made by system call: loop devices, filesystem images, overlays.

A sandbox mounts its disk and its workspace view when it opens and unmounts them when it
closes. The `mount`, `umount` and `losetup` programs each cost a process (2-5 ms) for
calls that take microseconds; these are the same calls, made from here. Errors raise
OSError with the kernel's reason."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
from pathlib import Path

MS_NOSUID = 0x2
MS_NODEV = 0x4
_MNT_DETACH = 0x2
_LOOP_SET_FD = 0x4C00
_LOOP_CLR_FD = 0x4C01
_LOOP_CTL_GET_FREE = 0x4C82
_ATTEMPTS = 32
"""Free loop devices to try: another process may attach the one the kernel offered."""


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def mount(source: str, target: Path, fstype: str, options: str = "", *,
          flags: int = MS_NOSUID | MS_NODEV) -> None:
    """mount(2) `source` (a device, or a name for a filesystem without one) at `target`."""
    if _libc().mount(source.encode(), os.fsencode(target), fstype.encode(), flags,
                     options.encode()) != 0:
        _raise(f"mount {fstype} at {target}")


def unmount(path: Path) -> None:
    """Unmount `path` if something is mounted there (lazily when still busy), and free its
    loop device (at once, or when the last user lets go)."""
    if not os.path.ismount(path):
        return
    where = os.path.realpath(path)  # the table names the resolved path
    devices = [fields[0] for fields in _mount_table() if unescape(fields[1]) == where]
    libc = _libc()
    if libc.umount2(os.fsencode(path), 0) != 0 and ctypes.get_errno() == errno.EBUSY:
        libc.umount2(os.fsencode(path), _MNT_DETACH)
    for device in devices:
        if device.startswith("/dev/loop"):
            detach_loop(device)


def attach_loop(image: Path) -> str:
    """Attach the file `image` to a free loop device; the device's path."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(_ATTEMPTS):
                device = f"/dev/loop{fcntl.ioctl(control, _LOOP_CTL_GET_FREE)}"
                handle = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(handle, _LOOP_SET_FD, backing)
                    return device
                except OSError as exc:
                    if exc.errno != errno.EBUSY:  # EBUSY: another process took it first
                        raise
                finally:
                    os.close(handle)
        finally:
            os.close(backing)
    finally:
        os.close(control)
    raise OSError(errno.EBUSY, f"no loop device stayed free for {image} "
                               f"in {_ATTEMPTS} attempts")


def detach_loop(device: str) -> None:
    """Detach a loop device; one still in use is detached when its last user lets go."""
    try:
        handle = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(handle, _LOOP_CLR_FD, 0)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: nothing was attached
            raise
    finally:
        os.close(handle)


def loop_devices() -> dict[str, str]:
    """Every attached loop device and its backing file (a deleted one ends " (deleted)")."""
    found = {}
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            found[f"/dev/{backing.parent.parent.name}"] = backing.read_text().rstrip("\n")
    return found


def mounted_devices() -> set[str]:
    """The devices something is mounted from now."""
    return {fields[0] for fields in _mount_table()}


def _mount_table() -> list[list[str]]:
    return [line.split() for line in Path("/proc/mounts").read_text().splitlines()]


def unescape(path: str) -> str:
    """A path as /proc/mounts writes it (space, tab, newline and backslash octal-escaped)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def _raise(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")
