"""Undoing a promotion from its receipt: the inverse rows, with the same conflict checks,
and the pushed refs moved back if they still point where the promotion put them. One
database transaction, committed only after the refs moved.

The receipt holds the rows as the target held them after the promotion, with everything
the target's triggers wrote when they fired (`promotion.triggers: fire`), so its inverse
is applied with the target's triggers silent: firing them again would restamp the rows
and write new audit rows. Where the role may not silence them, the revert goes ahead only
if the triggers, firing, would change nothing; otherwise it is refused, saying what they
would change, and nothing is reverted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from harness.promote import git
from harness.promote.promotion import PromotionResult
from harness.promote.rows import (
    Applied,
    Conflict,
    TriggerMode,
    TriggersRefused,
    apply_delta,
    invert,
)
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
                conflicts = _undo_rows(conn, inverse, receipt.get("triggers", "replicate"))
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
    ddl = RowDelta.from_dict(receipt["rows"]).ddl if receipt.get("rows") else []
    notes = [f"the promotion's schema changes were not undone (a revert inverts rows, not "
             f"DDL): {'; '.join(d.query or d.command_tag for d in ddl)}"] if ddl and \
        (receipt.get("applied") or {}).get("ddl") else []
    return PromotionResult("reverted", trace_id, refs=receipt.get("refs") or {}, notes=notes)


def _undo_rows(conn: psycopg.Connection[Any], inverse: RowDelta, triggers: TriggerMode
               ) -> list[Conflict]:
    """Apply the inverse rows in `conn`'s transaction; the conflicts. Raises TriggersRefused
    when the target's triggers would fire and change what the inverse puts back."""
    if triggers != "fire":
        return apply_delta(conn, inverse, ddl=False, triggers=triggers)[1]
    try:
        return apply_delta(conn, inverse, ddl=False, triggers="replicate")[1]
    except TriggersRefused:
        conn.rollback()
    applied, conflicts, _ = apply_delta(conn, inverse, ddl=False, triggers="fire")
    if conflicts or not (applied.rewritten or applied.side_effects):
        return conflicts
    conn.rollback()
    raise TriggersRefused(
        "nothing was reverted: undoing the promotion's rows fires the target's triggers "
        f"again, which would {_effects(applied)}, so the target would not end as it was "
        "before the promotion. Let the revert silence them: run it as a role that may set "
        "session_replication_role (a superuser, or GRANT SET ON PARAMETER "
        f"session_replication_role TO {conn.info.user}), with no trigger of these tables "
        "enabled ALWAYS or REPLICA")


def _effects(applied: Applied) -> str:
    """What fired triggers did, in words: the columns they set and the rows they wrote."""
    said = [f"set {table} {', '.join(columns)}"
            for table, columns in sorted(applied.rewritten.items())]
    for table, effect in sorted(applied.side_effects.items()):
        rows = [f"{effect[what]} {what}" for what in ("inserted", "updated", "deleted")
                if effect[what]]
        if effect["dropped"]:
            rows.append(f"{effect['dropped']} of the revert's own kept from being written")
        said.append(f"leave rows of {table} changed ({', '.join(rows)}; columns "
                    f"{', '.join(effect['columns'])})")
    return "; ".join(said)
