"""Which captured statements fell within each action, so that every changed row names the
action that made it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from harness.sandbox.capture import dump_images

if TYPE_CHECKING:
    from harness.sandbox.capture import RowDelta


@dataclass(frozen=True)
class ActionWindow:
    """The captured statements one action ran: numbered after `before`, up to `after`."""

    index: int
    span_id: str
    before: int
    after: int


def attribute(rows: RowDelta | None, windows: list[ActionWindow]
              ) -> dict[str, list[dict[str, Any]]]:
    """Per table, each changed row: its operation, key, and the action that changed it last
    (None for a change no action made, such as a process left running between actions)."""
    if rows is None:
        return {}
    found: dict[str, list[dict[str, Any]]] = {}

    def who(statements: list[int]) -> ActionWindow | None:
        owners = [w for w in windows if any(w.before < s <= w.after for s in statements)]
        return max(owners, key=lambda w: w.index) if owners else None

    for name, table in sorted(rows.tables.items()):
        entries = []
        for op, image, key in (
                *(("insert", row, row) for row in table.inserted),
                *(("update", update.before, update.key) for update in table.updated),
                *(("delete", row, row) for row in table.deleted)):
            window = who(table.sources.get(table.row_id(image), []))
            shown = {k: key.get(k) for k in table.key} if table.key else key
            entries.append({"op": op, "key": shown,
                            "action": window.index if window else None,
                            "span_id": window.span_id if window else None})
        # In a stable order: the row's operation, then its key.
        found[name] = sorted(entries, key=lambda e: (_OPS.index(e["op"]), _order(e["key"])))
    return found


_OPS = ["insert", "update", "delete"]


def _order(key: dict[str, Any]) -> tuple[tuple[int, Any], ...]:
    """Numbers by value, before anything else by its text."""
    return tuple((0, value) if isinstance(value, int | float | Decimal)
                 and not isinstance(value, bool) else (1, dump_images(value))
                 for value in key.values())
