"""The Docker labels every harness resource carries, so `harness gc` can find leftovers."""

from __future__ import annotations

import getpass
import os
import time

OWNER = "harness.owner"
SANDBOX = "harness.sandbox"
CREATED_AT = "harness.created-at"
KIND = "harness.kind"
PID = "harness.pid"
IMAGE_HASH = "harness.image-hash"


def resource_labels(sandbox_id: str, kind: str) -> dict[str, str]:
    """Labels for one resource (container, volume) of the sandbox `sandbox_id`."""
    return {
        OWNER: _owner(),
        SANDBOX: sandbox_id,
        KIND: kind,
        CREATED_AT: str(int(time.time())),
        PID: str(os.getpid()),
    }


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
