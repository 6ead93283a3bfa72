"""The change set: everything a sandbox changed, as the diff-and-commit stage sees it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.sandbox.capture import RowDelta
from harness.sandbox.workspace import WorkspaceChanges


@dataclass(frozen=True)
class ChangeSet:
    """The commits since the base, the row deltas per table and the DDL of one sandbox."""

    trace_id: str
    workspace: WorkspaceChanges
    rows: RowDelta | None
    bundle: Path | None = None
    """A git bundle of HEAD's commits since the base (None when there are none)."""

    @property
    def commit_count(self) -> int:
        """Commits since the base."""
        return self.workspace.commit_count

    @property
    def row_count(self) -> int:
        """Rows inserted, updated and deleted (net)."""
        return self.rows.rows if self.rows is not None else 0

    def summary(self) -> dict[str, Any]:
        """Counts only: commits, files, lines, rows per table, DDL."""
        return {
            "trace_id": self.trace_id,
            "commits": self.commit_count,
            "files_changed": len(self.workspace.files),
            "lines_added": self.workspace.lines_added,
            "lines_removed": self.workspace.lines_removed,
            "rows": self.rows.summary() if self.rows is not None else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (diff and row images included)."""
        return {"trace_id": self.trace_id, "workspace": self.workspace.to_dict(),
                "rows": self.rows.to_dict() if self.rows is not None else None,
                "bundle": str(self.bundle) if self.bundle else None,
                "summary": self.summary()}
