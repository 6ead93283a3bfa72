"""Undoing a promotion from its receipt: the inverse rows, with the same conflict checks
and the same trigger handling, and the pushed refs moved back if they still point where
the promotion put them. One database transaction, committed only after the refs moved."""

from __future__ import annotations

from pathlib import Path

import psycopg

from harness.promote import git
from harness.promote.promotion import PromotionResult
from harness.promote.rows import Conflict, TriggersRefused, apply_delta, invert
from harness.sandbox.capture import RowDelta, load_image


def revert(receipt_path: Path) -> PromotionResult:
    """Undo the promotion `receipt_path` records."""
    receipt = load_image(receipt_path.read_text())
    trace_id = str(receipt.get("trace_id"))
    if receipt_path.name.endswith(".pending"):
        return PromotionResult("failed", trace_id, error="this receipt is pending: its "
                               "promotion was interrupted; run `harness promote --recover`")
    if receipt.get("rows") is None and receipt.get("rebuilt"):
        return PromotionResult("failed", trace_id, error="this receipt was rebuilt without "
                               "its rows; the database side cannot be reverted from it")
    inverse = invert(RowDelta.from_dict(receipt["rows"])) if receipt.get("rows") else None
    conflicts: list[Conflict] = []
    conn = psycopg.connect(receipt["database"]) if inverse and inverse.rows else None
    try:
        if conn is not None and inverse is not None:
            try:
                _, conflicts, _ = apply_delta(conn, inverse, ddl=False,
                                              triggers=receipt.get("triggers", "replicate"))
            except TriggersRefused as exc:
                conn.rollback()
                return PromotionResult("failed", trace_id, error=str(exc))
            if conflicts:
                conn.rollback()
                return PromotionResult("conflict", trace_id, conflicts=conflicts)
        moves: dict[str, tuple[str | None, str | None]] = {}
        refs = dict(receipt.get("refs") or {})
        if refs and receipt.get("repo"):
            # A ref someone else deleted since is nothing to move back.
            present = git.remote_refs(receipt["repo"], list(refs))
            restore = receipt.get("restore") or {}
            moves = {ref: (sha, restore.get(ref)) for ref, sha in refs.items()
                     if ref in present}
            try:
                git.move_refs(receipt["repo"], moves)
            except git.PushError as exc:
                if conn is not None:
                    conn.rollback()
                return PromotionResult("failed", trace_id, error=str(exc))
        if conn is not None:
            try:
                conn.commit()
            except psycopg.Error as exc:
                # The refs moved but the rows did not: put the refs back where they were.
                git.move_refs(receipt["repo"], {ref: (new, old) for ref, (old, new)
                                                in moves.items()})
                return PromotionResult("failed", trace_id, error=(
                    f"the database refused the revert ({exc}); the refs were put back, "
                    "nothing is reverted"))
    finally:
        if conn is not None:
            conn.close()
    return PromotionResult("reverted", trace_id, refs=receipt.get("refs") or {})
