"""The durable records of a promotion: its journal while it is in progress, and its receipt
(pending until the commit point is passed, settled after). Every write is atomic: a
temporary file, fsync, rename, fsync of the folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from harness.home import state_dir
from harness.sandbox.capture import dump_images, load_image


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves either the old or the new file.
    Readable by its owner only: journals and receipts name the target database as
    promotion reached it (its DSN, with a password if the config gave one), which a
    recovery or a revert needs to reach it again."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Journal:
    """The record of one promotion in progress: each step is written before the next one
    starts, so recovery knows how far a crashed promotion got.

    Beside it, a lock (`<id>.lock`, flock): held by the promoter from before the journal's
    first write to its end, and by the one recovery settling it. The kernel drops it when
    its holder dies, so a lock that cannot be taken means a live process works on the
    promotion (a process id alone may have been reused), and two recoveries never settle
    the same promotion at once."""

    def __init__(self, promotion_id: str, data: dict[str, Any] | None = None) -> None:
        self.id = promotion_id
        self.path = state_dir("journal") / f"{promotion_id}.json"
        self.lock_path = self.path.with_suffix(".lock")
        self.data: dict[str, Any] = data or {}
        self._lock: int | None = None

    @classmethod
    def pending(cls) -> list[Journal]:
        """Every journal a crash left behind, oldest first. One settled while this lists
        them is skipped; one that cannot be read is listed with `unreadable` set (its
        writes are atomic, so only a hand or a failing disk makes one)."""
        found = []
        for path in state_dir("journal").glob("*.json"):
            try:
                listed = (path.stat().st_mtime, cls(path.stem, _read(path)))
            except FileNotFoundError:
                continue  # settled (removed) since the folder was listed
            found.append(listed)
        return [journal for _, journal in sorted(found, key=lambda entry: entry[0])]

    def lock(self, *, wait_s: float = 0.0) -> bool:
        """Take the promotion's lock, trying for up to `wait_s` seconds; False when a live
        process holds it all that time."""
        if self._lock is not None:
            return True
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(descriptor)
                    return False
                time.sleep(0.05)
        self._lock = descriptor
        return True

    def unlock(self) -> None:
        """Let go of the lock (the promoter at its end, a recovery once it has settled)."""
        if self._lock is None:
            return
        descriptor, self._lock = self._lock, None
        if not self.path.exists():
            # Settled: the lock file goes too, if it is still the one held here.
            with contextlib.suppress(OSError):
                if os.stat(self.lock_path).st_ino == os.fstat(descriptor).st_ino:
                    self.lock_path.unlink()
        os.close(descriptor)

    def reload(self) -> bool:
        """Read the journal again (under the lock: what the last holder wrote); False when
        it is gone (a promoter or another recovery settled it meanwhile)."""
        try:
            self.data = _read(self.path)
        except FileNotFoundError:
            return False
        return True

    def write(self, **changes: Any) -> None:
        """Update and persist."""
        self.data.update(changes)
        write_atomically(self.path, json.dumps(self.data, default=str))

    def finish(self) -> None:
        """The promotion is settled: remove the journal (and let go of its lock)."""
        self.path.unlink(missing_ok=True)
        _sync_folder(self.path.parent)
        self.unlock()


def _read(path: Path) -> dict[str, Any]:
    """A journal's data; {"unreadable": why} when it is not one."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {"unreadable": f"{path} cannot be read as a journal: {exc}"}
    if not isinstance(data, dict):
        return {"unreadable": f"{path} cannot be read as a journal: not an object"}
    return data


def receipt_path(promotion_id: str, *, pending: bool) -> Path:
    """Where the receipt of a promotion is (`.pending` until the commit point)."""
    path = state_dir("receipts") / f"{promotion_id}.json"
    return path.with_name(path.name + ".pending") if pending else path


def write_receipt(promotion_id: str, receipt: dict[str, Any]) -> Path:
    """Write the pending receipt: before the commit point, so that a committed promotion
    always has one."""
    path = receipt_path(promotion_id, pending=True)
    write_atomically(path, dump_images(receipt))
    return path


def settle_receipt(promotion_id: str, *, committed: bool, **updates: Any) -> Path | None:
    """The commit point is passed (keep the receipt, with `updates`) or was never reached
    (remove it). Returns the settled receipt's path."""
    pending = receipt_path(promotion_id, pending=True)
    final = receipt_path(promotion_id, pending=False)
    if not committed:
        pending.unlink(missing_ok=True)
        return None
    if pending.exists():
        if updates:
            data = load_image(pending.read_text())
            data.update(updates)
            write_atomically(pending, dump_images(data))
        pending.replace(final)
        _sync_folder(final.parent)
    return final if final.exists() else None
