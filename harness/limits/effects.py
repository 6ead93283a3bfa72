"""Effect policies: rules over what was done (files, commits and rows as measured), not over
what an action said it would do. The same evaluation judges one action's effects inside an
episode and a whole change set at promotion and in the gate."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from harness.sandbox.paths import matches, resolve
from harness.tables import TableName

if TYPE_CHECKING:
    from harness.config import CommitEffect, EffectPolicy, FileEffect, RowEffect
    from harness.sandbox.capture import RowDelta
    from harness.sandbox.workspace import Commit, FileChange

_STATUS = {"added": "A", "modified": "M", "deleted": "D"}
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}(:?\d{2})?|Z)?)?$")
_EXAMPLES = 5


@dataclass(frozen=True)
class Effects:
    """What was done: by one action, or by a whole change set."""

    files: list[FileChange] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    rows: RowDelta | None = None


@dataclass(frozen=True)
class Breach:
    """An effect policy that what was done breaks: how many things matched (more than the
    policy allows), a few of them, and what to tell the agent or the user."""

    policy: str
    decision: str
    allowed: int
    actual: int
    detail: str
    examples: list[Any] = field(default_factory=list)
    table: str | None = None
    """The table counted, for a policy that counts each table apart."""
    matched: list[Any] = field(default_factory=list, repr=False, compare=False)
    """Everything that matched (examples are the first few)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        found = asdict(self)
        del found["matched"]
        if self.table is None:
            del found["table"]
        return found


def evaluate(policies: list[EffectPolicy], effects: Effects) -> list[Breach]:
    """The policies `effects` break, in the order configured."""
    breaches = []
    for policy in policies:
        if policy.rows is not None:
            groups = _per_table(_rows(policy.rows, effects.rows), policy.rows.each_table)
            allowed, what = policy.rows.more_than, f"row(s) of {policy.rows.table}"
        elif policy.files is not None:
            groups = [(None, _files(policy.files, effects.files))]
            allowed, what = policy.files.more_than, "file(s)"
        elif policy.commits is not None:
            groups = [(None, _commits(policy.commits, effects.commits))]
            allowed, what = policy.commits.more_than, "commit(s)"
        else:
            continue
        for table, found in groups:
            # A dropped table's rows are beyond counting: any number of them is too many.
            dropped = any(entry.get("op") == "drop" for entry in found)
            if len(found) <= allowed and not dropped:
                continue
            counted = what if table is None else f"row(s) of {table}"
            said = policy.message or f"more than {allowed} {counted} matching the policy"
            breaches.append(Breach(
                policy.id, policy.decision, allowed, len(found),
                f"{said} ({len(found)} {counted}: "
                f"{', '.join(_show(e) for e in found[:_EXAMPLES])}"
                f"{', ...' if len(found) > _EXAMPLES else ''})",
                found[:_EXAMPLES], table, found))
    return breaches


def _per_table(found: list[dict[str, Any]], each: bool
               ) -> list[tuple[str | None, list[dict[str, Any]]]]:
    if not each:
        return [(None, found)]
    tables: dict[str, list[dict[str, Any]]] = {}
    for entry in found:
        tables.setdefault(entry["table"], []).append(entry)
    return sorted(tables.items())


def _covers(rule: RowEffect, name: str, aliases: list[str] | None = None) -> bool:
    """Whether the rule's table is `name`, or was (renamed during the episode)."""
    return rule.table == "*" or any(TableName.parse(n).under([rule.table]) is not None
                                    for n in [name, *(aliases or [])])


def _rows(rule: RowEffect, rows: RowDelta | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if rows is None:
        return found
    for name, table in sorted(rows.tables.items()):
        if not _covers(rule, name, table.aliases):
            continue
        key = table.key
        if rule.op in ("insert", "any") and not rule.changes:
            found += [{"table": name, "op": "insert", "key": _key(row, key)}
                      for row in table.inserted
                      if _holds(row, rule.where) and _holds(row, rule.where_after)]
        if rule.op in ("update", "any"):
            found += [{"table": name, "op": "update", "key": update.key,
                       "changed": update.changed}
                      for update in table.updated
                      if _holds(update.before, rule.where)
                      and _holds(update.after, rule.where_after)
                      and (not rule.changes or set(rule.changes) & set(update.changed))]
        if rule.op in ("delete", "any") and not rule.changes and not rule.where_after:
            found += [{"table": name, "op": "delete", "key": _key(row, key)}
                      for row in table.deleted if _holds(row, rule.where)]
        if (rule.op == "update" or rule.changes) and table.deleted and table.inserted:
            found += _rekeyed(rule, name, table.deleted, table.inserted, key)
    if rule.op in ("delete", "any") and not rule.changes and not rule.where_after:
        found += [{"table": name, "op": "drop", "key": None}
                  for name in _dropped(rows) if _covers(rule, name)]
    return found


def _rekeyed(rule: RowEffect, name: str, deleted: list[dict[str, Any]],
             inserted: list[dict[str, Any]], key: list[str]) -> list[dict[str, Any]]:
    """Rows deleted and inserted together may be one row whose key changed (an UPDATE of
    the key, or any UPDATE of a table without one): each insert that some delete could
    have become under the rule counts as an update. Cautious: a delete and an unrelated
    insert in the same table count too."""
    found = []
    for after in inserted:
        if not _holds(after, rule.where_after):
            continue
        if len(deleted) > _PAIRING or any(
                _holds(before, rule.where) and (not rule.changes or any(
                    not _same(before.get(c), after.get(c)) for c in rule.changes))
                for before in deleted):
            found.append({"table": name, "op": "update", "key": _key(after, key),
                          "changed": list(rule.changes), "rekeyed": True})
    return found


_PAIRING = 1000
"""Past this many deletes, every insert beside them counts (no pairing is tried)."""


def _dropped(rows: RowDelta) -> list[str]:
    """The dropped tables, named as change sets name tables."""
    names = []
    for identity in rows.dropped:
        try:
            names.append(TableName.parse(identity).qualified)
        except ValueError:
            names.append(identity)
    return names


def _key(row: dict[str, Any], key: list[str]) -> dict[str, Any]:
    return {column: row.get(column) for column in key} if key else row


def _holds(image: dict[str, Any], conditions: dict[str, Any]) -> bool:
    """Every condition holds: the column's value is the one given, or one of a list."""
    for column, wanted in conditions.items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(_same(image.get(column), option) for option in options):
            return False
    return True


def _same(value: Any, wanted: Any) -> bool:
    """Equal as the database would compare them: numbers by value (10.5 is 10.50), and
    nothing else across types (true is no 1, '1' no number)."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return type(value) is type(wanted) and value == wanted
    numbers = (int, float, Decimal)
    if isinstance(value, numbers) and isinstance(wanted, numbers):
        try:
            return Decimal(str(value)) == Decimal(str(wanted))
        except InvalidOperation:
            return False
    if isinstance(value, str) and isinstance(wanted, str) and value != wanted \
            and _TIMESTAMP.match(value) and _TIMESTAMP.match(wanted):
        # A timestamp as the row's JSON writes it (2026-01-01T00:00:00+00:00) and as
        # people do (2026-01-01 00:00:00+00): the same instant. Naive and aware never match.
        try:
            return datetime.fromisoformat(value) == datetime.fromisoformat(wanted)
        except (ValueError, TypeError):
            return False
    return type(value) is type(wanted) and bool(value == wanted)


def _files(rule: FileEffect, files: list[FileChange]) -> list[dict[str, Any]]:
    globs = [rule.path] if isinstance(rule.path, str) else rule.path
    found = []
    for change in files:
        if not any(matches(resolve(change.path), pattern) for pattern in globs):
            continue
        if rule.change != "any" and change.status != _STATUS[rule.change]:
            continue
        if rule.executable is not None and change.executable != rule.executable:
            continue
        if rule.mode_changed is not None and rule.mode_changed != (
                change.old_mode is not None and change.mode is not None
                and change.old_mode != change.mode):
            continue
        if rule.lines_more_than is not None and \
                change.added + change.removed <= rule.lines_more_than:
            continue
        found.append({"path": change.path, "status": change.status, "mode": change.mode,
                      "lines": change.added + change.removed})
    return found


def _commits(rule: CommitEffect, commits: list[Commit]) -> list[dict[str, Any]]:
    found = []
    for commit in commits:
        if rule.message is not None and not re.search(rule.message, commit.message):
            continue
        if rule.author is not None and not re.search(rule.author,
                                                     f"{commit.author} <{commit.email}>"):
            continue
        if rule.branch is not None and not re.search(rule.branch, commit.ref):
            continue
        found.append({"commit": commit.sha[:12], "message": commit.message.splitlines()[0]
                      if commit.message else "", "branch": commit.ref})
    return found


def _show(example: dict[str, Any]) -> str:
    if example.get("op") == "drop":
        return f"drop {example['table']} (every row)"
    if "table" in example:
        key = ", ".join(f"{k}={v}" for k, v in example["key"].items())
        return f"{example['op']} {example['table']} ({key})"
    if "path" in example:
        return f"{example['path']} ({example['status']})"
    return f"{example['commit']} {example['message']!r}"
