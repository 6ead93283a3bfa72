"""The Docker labels every harness resource carries, so `harness gc` can find leftovers."""

from __future__ import annotations

import contextlib
import getpass
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar

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
RUN = "harness.run"
"""The distributed evaluation a resource was made for (its run id), when it was."""
NODE = "harness.node"
"""The cluster node (by name) whose task made the resource, when one did."""

_TAGS: ContextVar[dict[str, str] | None] = ContextVar("harness_labels_tags", default=None)


@contextlib.contextmanager
def tagged(*, run: str, node: str) -> Iterator[None]:
    """Within the block, every resource made in this context also carries the run id and
    the node, so that a node's leftovers can be told apart on an engine shared by nodes."""
    token = _TAGS.set({RUN: run, NODE: node})
    try:
        yield
    finally:
        _TAGS.reset(token)


def tags() -> dict[str, str]:
    """The run and node labels of the current context (empty outside `tagged`)."""
    return dict(_TAGS.get() or {})


def resource_labels(sandbox_id: str, kind: str) -> dict[str, str]:
    """Labels for one resource (container, volume) of the sandbox `sandbox_id`."""
    return {
        OWNER: _owner(),
        SANDBOX: sandbox_id,
        KIND: kind,
        CREATED_AT: str(int(time.time())),
        PID: str(os.getpid()),
        HOME: home_key(),
        **tags(),
    }


def own_home_selector() -> dict[str, str]:
    """A Docker filter for the resources of this harness home."""
    return {"label": f"{HOME}={home_key()}"}


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
