"""The durable records of a promotion: its journal while it is in progress, and its receipt
(pending until the commit point is passed, settled after). Every write is atomic: a
temporary file, fsync, rename, fsync of the folder."""

from __future__ import annotations

import json
import os
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
    starts, so recovery knows how far a crashed promotion got."""

    def __init__(self, promotion_id: str, data: dict[str, Any] | None = None) -> None:
        self.id = promotion_id
        self.path = state_dir("journal") / f"{promotion_id}.json"
        self.data: dict[str, Any] = data or {}

    @classmethod
    def pending(cls) -> list[Journal]:
        """Every journal a crash left behind, oldest first."""
        found = []
        for path in sorted(state_dir("journal").glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                data = json.loads(path.read_text())
            except ValueError:
                continue  # an unreadable journal is never written: writes are atomic
            found.append(cls(path.stem, data))
        return found

    def write(self, **changes: Any) -> None:
        """Update and persist."""
        self.data.update(changes)
        write_atomically(self.path, json.dumps(self.data, default=str))

    def finish(self) -> None:
        """The promotion is settled: remove the journal."""
        self.path.unlink(missing_ok=True)
        _sync_folder(self.path.parent)


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
