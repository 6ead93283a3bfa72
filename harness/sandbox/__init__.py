"""Sandboxes: hardened containers, throwaway git workspaces and (later) database snapshots."""

from harness.sandbox.container import Container
from harness.sandbox.result import ExecResult
from harness.sandbox.sandbox import Sandbox
from harness.sandbox.workspace import Workspace, WorkspaceChanges

__all__ = ["Container", "ExecResult", "Sandbox", "Workspace", "WorkspaceChanges"]
