"""Settling the promotions a crash interrupted (`harness promote --recover`): each ends
fully promoted or fully undone, and says what was done.

The decision rests on what the harness owns. The database transaction: still prepared
(two-phase), or committed or aborted (asked of the server with `txid_status`, so nothing of
the harness is written into the target). The commits: whether any ref of the promotion on
the remote still contains the pushed head (a fast-forward someone has since built on
counts as pushed), never whether a shared branch still points at it.

Each journal is settled on its own: one that cannot be (its remote unreachable, its
database down) is reported in doubt with the reason, and the others are settled anyway.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from harness.promote import git
from harness.promote.journal import (
    Journal,
    receipt_path,
    settle_receipt,
    write_atomically,
)
from harness.promote.rows import Conflict, TriggersRefused, apply_delta
from harness.sandbox.capture import RowDelta, dump_images, load_image

Decision = Literal["committed", "rolled back", "in doubt"]
_WAIT_FOR_ABORT_S = 15.0
_LOCK_WAIT_S = 3.0
"""How long recovery waits for a promotion's lock before it reports a live holder."""


@dataclass(frozen=True)
class Recovery:
    """How one interrupted promotion was settled."""

    id: str
    state: str
    """The last step its journal recorded before the crash."""
    protocol: str
    decision: Decision
    detail: list[str] = field(default_factory=list)
    """What recovery found and did, in order."""
    refs: dict[str, str] = field(default_factory=dict)
    """The refs the promotion holds on the remote (when committed)."""
    receipt: str | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    error: str | None = None
    """Why recovery could not settle it (the journal is kept; run --recover again)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def recover() -> list[Recovery]:
    """Settle every promotion a crash left in the journal, oldest first, each on its own:
    one that fails is reported in doubt (with `error`) and does not stop the others. Each
    is settled under its lock: one a live process holds (its promoter, or another
    recovery) is reported in doubt and left to it; one settled meanwhile is skipped."""
    settled = []
    for journal in Journal.pending():
        # A crashed holder's lock can outlive it for a moment: a child it was forking
        # holds a copy of the descriptor until that child closes it to run its program.
        if not journal.lock(wait_s=_LOCK_WAIT_S):
            if journal.path.exists():
                settled.append(_result(journal, "in doubt", [
                    _holder(journal.data), "it holds the promotion's lock: nothing was done; "
                    "run --recover again once it has ended"]))
            continue
        try:
            # Under the lock, as the last holder left it (a recovery killed mid-push
            # journaled that push's process group, a reapplied transaction's id).
            if journal.reload():
                settled.append(settle_one(journal))
        finally:
            journal.unlock()
    return settled


def _holder(data: dict[str, Any]) -> str:
    """Who holds a promotion's lock: its promoter (its process id, started when the journal
    says), or else another recovery."""
    owner = data.get("owner")
    if isinstance(owner, int) and _alive(owner) and git.leader_start(owner) == data.get(
            "owner_start", git.leader_start(owner)):
        return f"process {owner} is still promoting it"
    return "another `harness promote --recover` is settling it"


def settle_one(journal: Journal, *, promoting: bool = False) -> Recovery:
    """`settle`, with any failure reported as this promotion's outcome: in doubt, the
    journal kept, `error` saying what failed. The caller holds the journal's lock;
    `promoting` when it is the promoting process itself (whose pushes have ended)."""
    try:
        return settle(journal, promoting=promoting)
    except Exception as exc:  # one journal's failure must not stop the others' recovery
        reason = f"{type(exc).__name__}: {str(exc).strip()}"
        return _result(journal, "in doubt", [f"recovery failed, nothing more was done: "
                                             f"{reason}; the journal is kept: run --recover "
                                             "again once the cause is fixed"], error=reason)


def settle(journal: Journal, *, promoting: bool = False) -> Recovery:
    """Finish or undo one promotion from what its journal, the target database and the
    remote say; the journal is removed unless the outcome is still in doubt. The caller
    holds the journal's lock, so no live process works on it (`promoting`: but for the
    caller itself, the promoting process)."""
    data = journal.data
    detail: list[str] = []
    if "unreadable" in data:
        detail.append(f"{data['unreadable']}; nothing was done: settle this promotion by "
                      f"hand (its pending receipt says what it meant to change), then remove "
                      f"{journal.path}")
        return _result(journal, "in doubt", detail, error=str(data["unreadable"]))
    owner = data.get("owner")
    if not data.get("locked") and isinstance(owner, int) and owner != os.getpid() \
            and _alive(owner):
        # A journal of a version without the lock: its owner's process id is all there is.
        detail.append(f"process {owner} is still promoting it")
        return _result(journal, "in doubt", detail)
    if isinstance(data.get("push_group"), int) and not promoting:
        # A push a crash left running (or gated) must not land after the decision. (In the
        # promoting process itself, its push has ended: git returned.)
        git.stop_group(data["push_group"], data.get("push_start"))
    database = _database_state(data, detail)
    if database == "prepared":
        if not data.get("repo") or _published(data):
            _finish_prepared(data, "COMMIT PREPARED")
            detail.append("committed the prepared transaction: the push had reached the "
                          "remote")
            database = "committed"
        else:
            _finish_prepared(data, "ROLLBACK PREPARED")
            detail.append("rolled back the prepared transaction: the push never reached the "
                          "remote")
            database = "aborted"
    if database == "in progress":
        detail.append(f"transaction {data.get('xid')} is still open on the target after "
                      f"{_WAIT_FOR_ABORT_S:g} s; run --recover again once it has ended")
        return _result(journal, "in doubt", detail)
    if database == "unknown":
        return _result(journal, "in doubt", detail)
    committed = _published(data) if database is None else database == "committed"
    if committed:
        return _forward(journal, detail)
    return _backward(journal, detail)


# ------------------------------------------------------------------ facts


def _database_state(data: dict[str, Any], detail: list[str]) -> str | None:
    """None (no rows to promote), prepared, committed, aborted, in progress or unknown."""
    if not data.get("database"):
        return None
    with psycopg.connect(data["database"], autocommit=True) as conn:
        if data.get("protocol") == "two-phase" and conn.execute(
                "SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (data["gid"],)).fetchone():
            detail.append(f"transaction {data['gid']} is prepared")
            return "prepared"
        if data.get("xid") is None:
            detail.append("the transaction never got an id: nothing of it was kept")
            return "aborted"
        deadline = time.monotonic() + _WAIT_FOR_ABORT_S
        while True:
            # A killed client's transaction ends as soon as its server process sees the
            # connection gone; until then it is "in progress".
            row = conn.execute("SELECT txid_status(%s::bigint)", (data["xid"],)).fetchone()
            status = row[0] if row else None
            if status != "in progress" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    if status is None:
        detail.append(f"the target no longer knows transaction {data['xid']} (too old)")
        return "unknown"
    detail.append(f"transaction {data['xid']} {status}")
    return str(status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _published(data: dict[str, Any]) -> bool:
    refs = [ref for ref in (data.get("branch_ref"), data.get("target_ref")) if ref]
    return bool(data.get("repo")) and git.contains(data["repo"], refs, data["head"])


def _finish_prepared(data: dict[str, Any], verb: str) -> None:
    with psycopg.connect(data["database"], autocommit=True) as conn:
        conn.execute(sql.SQL(verb + " {}").format(sql.Literal(data["gid"])))


# ------------------------------------------------------------------ outcomes


def _forward(journal: Journal, detail: list[str]) -> Recovery:
    """The commit point was passed: make sure the commits are on the remote and the target
    branch fast-forwarded where it still can be, then settle the receipt."""
    data = journal.data
    pushed: dict[str, str] = {}
    repo, head, base, branch_ref, target_ref = _refs(data)
    if repo:
        refs = [ref for ref in (branch_ref, target_ref) if ref]
        existing = git.remote_refs(repo, refs)
        if existing.get(branch_ref) == head:
            pushed[branch_ref] = head
        elif not git.contains(repo, refs, head):
            again = _push_again(journal, detail)
            if not again:
                # The rows are committed: settling now would leave them without their
                # commits. Kept (journal, pending receipt) until the push gets through.
                detail.append(f"in doubt: the database has the rows but the commits are on no "
                              f"ref of the remote; run --recover again once the remote takes "
                              f"the push (or push {head} to {branch_ref} by hand)")
                return _result(journal, "in doubt", detail)
            pushed.update(again)
        if target_ref:
            now = existing.get(target_ref)
            if now == head:
                pushed[target_ref] = head
            elif now == base:
                try:
                    pushed.update(git.push(Path(data["bundle"]), target=repo, base=base,
                                           refs=[], fast_forward=target_ref.removeprefix(
                                               "refs/heads/"), started=_recorder(journal)))
                    detail.append(f"fast-forwarded {target_ref}")
                except (git.PushError, KeyError, TypeError) as exc:
                    detail.append(f"{target_ref} was not fast-forwarded: {exc}")
            elif git.contains(repo, [target_ref], head):
                detail.append(f"{target_ref} contains the commits and has moved on since")
            else:
                detail.append(f"{target_ref} moved since the base and was not fast-forwarded; "
                              f"the commits are on {branch_ref}")
    restore = {target_ref: base} if target_ref and pushed.get(target_ref) == head else {}
    receipt = settle_receipt(journal.id, committed=True, refs=pushed, restore=restore,
                             recovered=detail)
    if receipt is None:
        # Written before anything can commit, so only a hand can have removed it.
        detail.append(f"no receipt: {receipt_path(journal.id, pending=True)} was removed "
                      "by hand; the promotion stands but `harness revert` cannot undo it")
    detail.append("promotion committed")
    journal.finish()
    return _result(journal, "committed", detail, pushed, str(receipt) if receipt else None)


def _recorder(journal: Journal) -> Callable[[int], None]:
    """Journal the process group of a push recovery starts, as a promotion does: if
    recovery is killed mid-push, the next one stops that push first."""
    return lambda group: journal.write(push_group=group, push_start=git.leader_start(group))


def _refs(data: dict[str, Any]) -> tuple[str | None, str, str, str, str | None]:
    """The remote, pushed head, base, harness branch and target branch of a journal."""
    return (data.get("repo"), str(data.get("head") or ""), str(data.get("base") or ""),
            str(data.get("branch_ref") or ""), data.get("target_ref"))


def _push_again(journal: Journal, detail: list[str]) -> dict[str, str]:
    data = journal.data
    bundle = Path(data.get("bundle") or "")
    if not data.get("bundle") or not bundle.is_file():
        detail.append("the commits are on no ref of the remote and their bundle is gone")
        return {}
    try:
        pushed = git.push(bundle, target=data["repo"], base=data["base"],
                          refs=[data["branch_ref"]], started=_recorder(journal))
    except git.PushError as exc:
        detail.append(f"the commits are on no ref of the remote and pushing them again "
                      f"failed: {exc}")
        return {}
    detail.append(f"pushed {data['branch_ref']} again (the commits were on no ref of the "
                  f"remote)")
    return pushed


def _backward(journal: Journal, detail: list[str]) -> Recovery:
    """The commit point was not passed: the database kept nothing; remove what the push
    put on the remote, compare-and-swap, never over someone else's work."""
    repo, head, base, branch_ref, target_ref = _refs(journal.data)
    if repo:
        refs = [ref for ref in (branch_ref, target_ref) if ref]
        existing = git.remote_refs(repo, refs)
        # What the push before the commit point moved: single-phase moves the target
        # branch only after it, so a target branch at the head was moved there by others.
        pushable = {branch_ref} | ({target_ref} if target_ref and
                                   journal.data.get("protocol") == "two-phase" else set())
        ours = {ref: sha for ref, sha in existing.items() if sha == head and ref in pushable}
        built_on = [ref for ref in existing if ref not in ours and
                    git.contains(repo, [ref], head)]
        if built_on:
            detail.append(f"{', '.join(built_on)} contain(s) the commits, put there or built "
                          "on by others; the rows are applied again instead of undoing the "
                          "commits")
            return _reapply(journal, detail)
        if ours:
            try:
                git.delete_refs(repo, ours, restore={target_ref: base}
                                if target_ref and target_ref in ours else {})
            except git.PushError as exc:
                detail.append(str(exc))
                return _result(journal, "in doubt", detail)
            detail.append("removed from the remote (compare-and-swap): "
                          + ", ".join(sorted(ours)))
    settle_receipt(journal.id, committed=False)
    detail.append("promotion rolled back: nothing of it remains")
    journal.finish()
    return _result(journal, "rolled back", detail)


def _reapply(journal: Journal, detail: list[str]) -> Recovery:
    """Apply the receipt's rows again in one transaction, with the conflict checks."""
    data = journal.data
    pending = receipt_path(journal.id, pending=True)
    if not pending.exists():
        detail.append("the pending receipt is gone, so the rows cannot be applied again")
        return _result(journal, "in doubt", detail)
    receipt = load_image(pending.read_text())
    rows = RowDelta.from_dict(receipt["rows"]) if receipt.get("rows") else None
    if rows is not None and rows.rows:
        with psycopg.connect(data["database"]) as conn:
            try:
                # The first transaction aborted with its DDL (if the limits allowed any).
                # The receipt holds the rows as that transaction wrote them, the effects of
                # the target's triggers included when they fired: they are written again as
                # they are, the triggers silent (firing them again would double their work).
                _, conflicts, _ = apply_delta(conn, rows, ddl=bool(data.get("ddl")),
                                              triggers="replicate")
            except TriggersRefused as exc:
                conn.rollback()
                requested = receipt.get("requested")
                if not requested:
                    detail.append(str(exc))
                    return _result(journal, "in doubt", detail)
                # Fire mode, and the role may not silence the triggers: write the change
                # set as it was asked for and let them fire once, as the promotion did.
                try:
                    applied, conflicts, actual = apply_delta(
                        conn, RowDelta.from_dict(requested), ddl=bool(data.get("ddl")),
                        triggers="fire")
                except TriggersRefused as refused:
                    conn.rollback()
                    detail.append(str(refused))
                    return _result(journal, "in doubt", detail)
                if not conflicts:
                    # Before the commit: the receipt records what this transaction wrote,
                    # so a revert undoes the triggers' work of this time.
                    receipt.update(rows=actual.to_dict(), applied=asdict(applied))
                    write_atomically(pending, dump_images(receipt))
                    detail.append("the role may not silence the target's triggers: the change "
                                  "set was written as asked and they fired once, as at the "
                                  "promotion; the receipt records what they wrote")
            if conflicts:
                conn.rollback()
                detail.append("the rows conflict with changes made on the target since the "
                              "crash; settle them by hand, then run --recover again")
                return _result(journal, "in doubt", detail, conflicts=conflicts)
            # This transaction now decides: a recovery killed before or after its COMMIT
            # is followed by one that asks the server about it, not about the first one.
            row = conn.execute("SELECT txid_current()::text").fetchone()
            journal.write(state="reapplied", xid=row[0] if row else None)
            conn.commit()
        detail.append(f"applied {rows.rows} row(s) again")
    return _forward(journal, detail)


def _result(journal: Journal, decision: Decision, detail: list[str],
            refs: dict[str, str] | None = None, receipt: str | None = None,
            conflicts: list[Conflict] | None = None, error: str | None = None) -> Recovery:
    return Recovery(journal.id, str(journal.data.get("state")),
                    str(journal.data.get("protocol")), decision, detail, refs or {}, receipt,
                    conflicts or [], error)

