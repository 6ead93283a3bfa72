"""The change set: everything a sandbox changed, as the diff-and-commit stage sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.sandbox.capture import RowDelta
from harness.sandbox.workspace import WorkspaceChanges

_ROWS_SHOWN = 1000
"""Rows listed per table in a summary (the change set itself holds all of them)."""


@dataclass(frozen=True)
class ChangeSet:
    """The commits since the base, the row deltas per table and the DDL of one sandbox."""

    trace_id: str
    workspace: WorkspaceChanges
    rows: RowDelta | None
    bundle: Path | None = None
    """A git bundle of HEAD's commits since the base (None when there are none)."""
    secrets: list[str] = field(default_factory=list)
    """Where a credential the episode held (an auth header or secret env_var value, or an
    encoding of it) appears in the change: file paths, `commit message`, table names."""
    attribution: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per table, each changed row with its operation, key, and the action (index and span
    id) that changed it last."""

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
            "rows": self._rows_summary(),
            **({"secrets": self.secrets} if self.secrets else {}),
        }

    def _rows_summary(self) -> dict[str, Any] | None:
        if self.rows is None:
            return None
        summary = self.rows.summary()
        for name, rows in self.attribution.items():
            if name in summary["tables"]:
                summary["tables"][name]["rows"] = rows[:_ROWS_SHOWN]
                if len(rows) > _ROWS_SHOWN:
                    summary["tables"][name]["rows_not_shown"] = len(rows) - _ROWS_SHOWN
        return summary

    def markdown(self) -> str:
        """A readable summary (for a PR comment or a CI job summary)."""
        w = self.workspace
        lines = [f"### Change set `{self.trace_id}`", "",
                 f"- **{self.commit_count}** commit(s), **{len(w.files)}** file(s), "
                 f"+{w.lines_added} -{w.lines_removed} lines"]
        lines += [f"  - `{c.sha[:12]}` {c.message.splitlines()[0] if c.message else ''} "
                  f"({c.author})" for c in w.commits]
        if w.files:
            lines += ["", "| file | + | - |", "|---|---:|---:|"]
            lines += [f"| `{f.path}` | {f.added} | {f.removed} |" for f in w.files]
        if self.rows is not None:
            summary = self.rows.summary()
            lines += ["", f"- **{self.row_count}** row(s) changed in the database"]
            if summary["tables"]:
                lines += ["", "| table | inserted | updated | deleted |", "|---|---:|---:|---:|"]
                lines += [f"| `{name}` | {c['inserted']} | {c['updated']} | {c['deleted']} |"
                          for name, c in summary["tables"].items()]
            if summary["ddl"]:
                lines += ["", "Schema changes:", ""]
                lines += [f"- `{statement}`" for statement in summary["ddl"]]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (diff and row images included)."""
        return {"trace_id": self.trace_id, "workspace": self.workspace.to_dict(),
                "rows": self.rows.to_dict() if self.rows is not None else None,
                "bundle": str(self.bundle) if self.bundle else None,
                "secrets": self.secrets, "attribution": self.attribution,
                "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeSet:
        """The inverse of `to_dict`: a change set saved to promote later."""
        return cls(data["trace_id"], WorkspaceChanges.from_dict(data["workspace"]),
                   RowDelta.from_dict(data["rows"]) if data.get("rows") else None,
                   Path(data["bundle"]) if data.get("bundle") else None,
                   list(data.get("secrets") or []), dict(data.get("attribution") or {}))
