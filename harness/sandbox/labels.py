"""The Docker labels every harness resource carries, so `harness gc` can find leftovers."""

from __future__ import annotations

import getpass
import os
import time

from harness.home import home_key

OWNER = "harness.owner"
SANDBOX = "harness.sandbox"
CREATED_AT = "harness.created-at"
KIND = "harness.kind"
PID = "harness.pid"
HOME = "harness.home"
"""The harness home (`home.home_key`) the resource belongs to: gc and tests touch only
their own home's resources."""
IMAGE_HASH = "harness.image-hash"


def resource_labels(sandbox_id: str, kind: str) -> dict[str, str]:
    """Labels for one resource (container, volume) of the sandbox `sandbox_id`."""
    return {
        OWNER: _owner(),
        SANDBOX: sandbox_id,
        KIND: kind,
        CREATED_AT: str(int(time.time())),
        PID: str(os.getpid()),
        HOME: home_key(),
    }


def own_home_selector() -> dict[str, str]:
    """A Docker filter for the resources of this harness home."""
    return {"label": f"{HOME}={home_key()}"}


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
