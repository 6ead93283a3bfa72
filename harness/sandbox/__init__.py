"""Sandboxes: hardened containers, throwaway git workspaces and database snapshots.

Imported on first use: the modules of this package that need no engine (catalog, labels)
stay cheap to import."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {"Container": "harness.sandbox.container", "ExecResult": "harness.sandbox.result",
           "Sandbox": "harness.sandbox.sandbox", "SandboxPool": "harness.sandbox.pool",
           "Workspace": "harness.sandbox.workspace",
           "WorkspaceChanges": "harness.sandbox.workspace"}

__all__ = ["Container", "ExecResult", "Sandbox", "SandboxPool", "Workspace", "WorkspaceChanges"]

if TYPE_CHECKING:
    from harness.sandbox.container import Container
    from harness.sandbox.pool import SandboxPool
    from harness.sandbox.result import ExecResult
    from harness.sandbox.sandbox import Sandbox
    from harness.sandbox.workspace import Workspace, WorkspaceChanges


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
