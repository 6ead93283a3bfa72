"""The one path to the real systems: check a change set against the limits, then apply
it to the real database and push it to the real repository, all or nothing.

The rows are applied in one transaction that locks every touched row; then one of two
protocols makes rows and commits one change:

- **two-phase** (the target allows prepared transactions): write the pending receipt,
  PREPARE the transaction, push every ref atomically, COMMIT PREPARED. The commit point is the
  push: once it is on the remote, recovery commits the prepared transaction; before, it
  rolls it back.
- **single-phase** (stock PostgreSQL, managed services): write the pending receipt, push
  the harness branch while the open transaction still holds the rows, COMMIT, then
  fast-forward the target branch. The commit point is the COMMIT. Before it, recovery
  deletes the harness branch (compare-and-swap: only if it still points at the pushed
  commit) and the aborted transaction left nothing; after it, recovery finishes the
  push and the fast-forward. The target branch is only ever moved after the commit
  point, so undoing never has to move a branch others may have built on.

A journal records each step before the next starts; `harness promote --recover` settles
whatever a crash left (see `recovery`). The pending receipt is written right after the
journal's first step and before anything can commit (a PREPARE, a push, a COMMIT), so every
promotion recovery commits has a receipt with its rows. A push is started gated: its
process group is journaled before git may run, so recovery can always stop it. Nothing of
the harness is written into the target database: whether a transaction committed is asked
of the server (`txid_status`).
"""

from __future__ import annotations

import datetime
import getpass
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

import harness.limits as limits
from harness.changeset import ChangeSet
from harness.config import Config
from harness.errors import HarnessError
from harness.limits import Violation
from harness.promote import git
from harness.promote.journal import Journal, settle_receipt, write_receipt
from harness.promote.rows import Applied, Conflict, TriggersRefused, apply_delta
from harness.sandbox.capture import RowDelta

Outcome = Literal["promoted", "dry-run", "refused", "conflict", "failed", "reverted",
                  "in-doubt"]
Protocol = Literal["two-phase", "single-phase"]

FAILPOINTS = ("after-start", "after-receipt", "after-prepare", "after-push-start",
              "after-push-record", "after-push", "after-commit", "after-fast-forward",
              "after-settle")
"""The steps at which HARNESS_PROMOTE_CRASH can kill a promotion (fault-injection tests)."""


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion (or its dry run) did or would do."""

    outcome: Outcome
    trace_id: str
    violations: list[Violation] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    receipt: str | None = None
    error: str | None = None
    protocol: str | None = None
    """Which protocol ran: two-phase or single-phase (None when nothing was committed)."""
    applied: dict[str, Any] | None = None
    """Rows written and how (mode plain, replica or fire; in fire mode what the target's
    triggers changed beyond the change set)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)

    @property
    def exit_code(self) -> int:
        """The `harness run` / `harness revert` exit code of this outcome: 3 refused by a
        limit, 4 a conflict with the real database, 2 failed or in doubt, else 0."""
        return {"refused": 3, "conflict": 4, "failed": 2, "in-doubt": 2}.get(self.outcome, 0)


def failpoint(step: str) -> None:
    """Crash here when HARNESS_PROMOTE_CRASH names this step (fault-injection tests)."""
    if os.environ.get("HARNESS_PROMOTE_CRASH") == step:
        os._exit(137)


def promote(changeset: ChangeSet, config: Config, *, dry_run: bool | None = None
            ) -> PromotionResult:
    """Promote `changeset` to `config.target` within `config`'s limits."""
    dry_run = limits.dry_run(config, dry_run)
    blast = config.orchestrator.blast_radius
    target = config.target
    branch = f"{config.promotion.branch_prefix}{changeset.trace_id}"
    rows = changeset.rows
    plan: dict[str, Any] = {
        "git": {"target": target.repo, "push": [f"refs/heads/{branch}"] +
                ([f"refs/heads/{target.branch}"] if config.promotion.fast_forward else []),
                "commits": changeset.commit_count} if changeset.bundle else None,
        "database": rows.summary() if rows is not None and (rows.rows or rows.ddl) else None,
    }
    violations = limits.check(changeset, config)
    if violations:
        return PromotionResult("refused", changeset.trace_id, violations, plan=plan)
    has_rows = rows is not None and (rows.rows > 0 or bool(rows.ddl and blast.allow_ddl))
    if has_rows and not target.database:
        return PromotionResult("failed", changeset.trace_id, plan=plan,
                               error="the change set has row changes but target.database is "
                                     "not set")
    if has_rows and _is_seed(target.database):
        # A seed file is what sandboxes start from, not a system that can take the rows.
        if dry_run:
            plan["database"] = {**(plan["database"] or {}), "checked_against": None,
                                "note": "target.database is a seed file: the rows were checked "
                                        "against the limits only"}
            return PromotionResult("dry-run", changeset.trace_id, plan=plan)
        return PromotionResult("failed", changeset.trace_id, plan=plan,
                               error=f"target.database is a seed file ({target.database}); "
                                     "promoting rows needs a live database (a DSN)")
    if changeset.bundle and not target.repo:
        return PromotionResult("failed", changeset.trace_id, plan=plan,
                               error="target.repo is not set")
    conn = psycopg.connect(target.database) if has_rows and target.database else None
    try:
        applied, actual = Applied(), rows
        if conn is not None and rows is not None:
            try:
                applied, conflicts, actual = apply_delta(conn, rows, ddl=blast.allow_ddl,
                                                         triggers=config.promotion.triggers)
            except TriggersRefused as exc:
                conn.rollback()
                return PromotionResult("refused", changeset.trace_id, [Violation(
                    "promotion.triggers", config.promotion.triggers, "triggers", str(exc))],
                    plan=plan)
            if conflicts or dry_run:
                conn.rollback()
            if conflicts:
                return PromotionResult("conflict", changeset.trace_id, conflicts=conflicts,
                                       plan=plan)
            plan["database"] = {**(plan["database"] or {}), "mode": applied.mode}
        protocol, why = _protocol(conn, config.promotion.atomicity)
        plan["protocol"] = protocol
        notes = [why] if why else []
        if dry_run:
            return PromotionResult("dry-run", changeset.trace_id, plan=plan, notes=notes)
        return _Commit(changeset, config, conn, applied, actual, protocol, plan, notes).run()
    finally:
        if conn is not None:
            conn.close()


def _is_seed(database: str | None) -> bool:
    from harness.sandbox.snapshot import Source

    return database is not None and Source.parse(database).kind == "seed"


def _protocol(conn: psycopg.Connection[Any] | None, wanted: str
              ) -> tuple[Protocol, str | None]:
    """The protocol that runs, and why it is not the one asked for (None when it is, or
    when `auto` chose)."""
    if conn is None:
        # Commits only: there is no transaction to prepare; the pushes are the whole change.
        why = ("promotion.atomicity asks for two-phase, but the change set has no database "
               "rows: there is no transaction to prepare, so single-phase ran (the commits "
               "were pushed, nothing else)") if wanted == "two-phase" else None
        return "single-phase", why
    row = conn.execute("SELECT current_setting('max_prepared_transactions')::int").fetchone()
    allowed = bool(row and row[0] > 0)
    if wanted == "two-phase" and not allowed:
        raise HarnessError("promotion.atomicity is two-phase but the target database does not "
                           "allow prepared transactions (max_prepared_transactions = 0); use "
                           "auto or single-phase, or raise the setting on the target")
    if wanted == "single-phase":
        return "single-phase", None
    return ("two-phase" if allowed else "single-phase"), None


class _Commit:
    """One promotion past its checks: the journaled protocol that makes it one change."""

    def __init__(self, changeset: ChangeSet, config: Config,
                 conn: psycopg.Connection[Any] | None, applied: Applied,
                 actual: RowDelta | None, protocol: Protocol, plan: dict[str, Any],
                 notes: list[str]) -> None:
        self.changeset = changeset
        self.config = config
        self.conn = conn
        self.applied = applied
        self.actual = actual
        self.protocol = protocol
        self.plan = plan
        self.notes = notes
        self.id = f"{changeset.trace_id}-{uuid.uuid4().hex[:8]}"
        self.journal = Journal(self.id)
        target = config.target
        self.branch_ref = f"refs/heads/{config.promotion.branch_prefix}{changeset.trace_id}"
        self.target_ref = f"refs/heads/{target.branch}" if config.promotion.fast_forward \
            else None
        self.pushing = changeset.bundle is not None and bool(target.repo)

    def run(self) -> PromotionResult:
        # Held from before the journal exists until the promotion ends (the kernel drops it
        # if the process dies): while it is held, recovery leaves the promotion alone.
        if not self.journal.lock():
            raise HarnessError(f"the lock of promotion {self.id} is held by another process")
        try:
            return self._run()
        finally:
            self.journal.unlock()

    def _run(self) -> PromotionResult:
        target = self.config.target
        head = self.changeset.workspace.head
        xid = None
        if self.conn is not None:
            row = self.conn.execute("SELECT txid_current()::text").fetchone()
            xid = row[0] if row else None
        self.journal.write(
            id=self.id, trace_id=self.changeset.trace_id, state="started", owner=os.getpid(),
            owner_start=git.leader_start(os.getpid()), locked=True,
            protocol=self.protocol, gid=f"harness-{self.id}", xid=xid,
            database=target.database if self.conn is not None else None,
            repo=target.repo if self.pushing else None, head=head,
            base=self.changeset.workspace.base, branch_ref=self.branch_ref,
            target_ref=self.target_ref,
            bundle=str(self.changeset.bundle) if self.changeset.bundle else None,
            triggers=self.config.promotion.triggers,
            ddl=self.config.orchestrator.blast_radius.allow_ddl)
        failpoint("after-start")
        # Pending before anything can commit (PREPARE, push, COMMIT): recovery never
        # commits a promotion without its receipt.
        write_receipt(self.id, self._receipt())
        self.journal.write(state="receipt")
        failpoint("after-receipt")
        if self.protocol == "two-phase" and self.conn is not None:
            try:
                self.conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(
                    sql.Literal(self.journal.data["gid"])))
            except psycopg.Error as exc:
                self.conn.rollback()
                settle_receipt(self.id, committed=False)
                self.journal.finish()
                return PromotionResult("failed", self.changeset.trace_id, plan=self.plan,
                                       error=f"PREPARE TRANSACTION failed, nothing changed: "
                                             f"{exc}")
            self.conn.autocommit = True  # COMMIT/ROLLBACK PREPARED run outside a transaction
            self.journal.write(state="prepared")
            failpoint("after-prepare")
        try:
            pushed = self._push(first=True)
        except git.PushInterrupted:
            # Someone killed git: the remote says whether it got there.
            pushed = self._landed(self._planned_refs())
            if not pushed:
                self._abort()
                return PromotionResult("failed", self.changeset.trace_id, plan=self.plan,
                                       error="the push was killed before it reached the "
                                             "remote; nothing changed")
        except git.PushError as exc:
            self._abort()
            return PromotionResult("failed", self.changeset.trace_id, plan=self.plan,
                                   error=str(exc))
        self.journal.write(state="pushed", pushed=pushed)
        failpoint("after-push")
        try:
            self._commit_database()
        except psycopg.Error as exc:
            from harness.promote.recovery import settle_one

            # Committed or not, recovery finds out and finishes (or undoes) the push.
            recovery = settle_one(self.journal, promoting=True)
            outcome: Outcome = "promoted" if recovery.decision == "committed" else \
                "in-doubt" if recovery.decision == "in doubt" else "failed"
            return PromotionResult(outcome, self.changeset.trace_id, plan=self.plan,
                                   refs=recovery.refs, receipt=recovery.receipt,
                                   error=f"the commit failed: {exc}", protocol=self.protocol,
                                   notes=self.notes + recovery.detail)
        self.journal.write(state="committed")
        failpoint("after-commit")
        notes = list(self.notes)
        if self.protocol == "single-phase" and self.target_ref and self.pushing:
            try:
                pushed.update(self._push(first=False))
            except git.PushInterrupted:
                pushed.update(self._landed({self.target_ref: self.changeset.workspace.head}))
                if self.target_ref not in pushed:
                    notes.append(f"{self.target_ref} was not fast-forwarded (the push was "
                                 f"killed); the commits are on {self.branch_ref}")
            except git.PushError as exc:
                notes.append(f"{self.target_ref} was not fast-forwarded (it moved since the "
                             f"base); the commits are on {self.branch_ref}: {exc}")
            self.journal.write(state="fast-forwarded", pushed=pushed)
            failpoint("after-fast-forward")
        planned = self._planned_refs()
        # The pending receipt is rewritten only when the refs differ from the plan.
        updates = {} if pushed == planned and notes == self.notes else {
            "refs": pushed, "restore": self._restore(pushed), "notes": notes}
        receipt = settle_receipt(self.id, committed=True, **updates)
        failpoint("after-settle")
        self.journal.finish()
        return PromotionResult("promoted", self.changeset.trace_id, plan=self.plan,
                               refs=pushed, receipt=str(receipt) if receipt else None,
                               protocol=self.protocol, applied=asdict(self.applied),
                               notes=notes)

    def _push(self, *, first: bool) -> dict[str, str]:
        """Two-phase pushes every ref at once; single-phase pushes the harness branch
        before the commit point and fast-forwards the target branch after it."""
        if not self.pushing or self.changeset.bundle is None or not self.config.target.repo:
            return {}
        base = self.changeset.workspace.base
        if first:
            now = git.remote_refs(self.config.target.repo, [self.branch_ref] + (
                [self.target_ref] if self.target_ref else []))
            if self.branch_ref in now:
                # Not the promotion's to move (an older run's, or someone's): undoing would
                # delete it. The push also asks for the ref to be new (compare-and-swap).
                raise git.PushError(f"{self.branch_ref} already exists on the remote (at "
                                    f"{now[self.branch_ref]}); delete it or promote under "
                                    f"another trace id; nothing changed")
            if self.target_ref and self.protocol == "single-phase" and \
                    now.get(self.target_ref) != base:
                # The fast-forward comes after the commit point; refuse now what it would
                # refuse.
                raise git.PushError(f"{self.target_ref} is at {now.get(self.target_ref)}, not "
                                    f"at the base {base}: it cannot be fast-forwarded; "
                                    f"nothing changed")
        fast_forward = self.config.target.branch if self.target_ref and (
            self.protocol == "two-phase" or not first) else None
        return git.push(self.changeset.bundle, target=self.config.target.repo, base=base,
                        started=self._record_push, refs=[self.branch_ref] if first else [],
                        fast_forward=fast_forward)

    def _record_push(self, group: int) -> None:
        """The push is started but gated: journal its process group (so that recovery can
        stop it), then let it run."""
        failpoint("after-push-start")
        self.journal.write(push_group=group, push_start=git.leader_start(group))
        failpoint("after-push-record")

    def _landed(self, planned: dict[str, str]) -> dict[str, str]:
        """After an interrupted push: which of the refs it meant to move (ref -> commit)
        the remote shows moved (all or none: the push is atomic)."""
        if not planned or not self.config.target.repo:
            return {}
        found = git.remote_refs(self.config.target.repo, list(planned))
        return {ref: sha for ref, sha in found.items() if sha == planned[ref]}

    def _commit_database(self) -> None:
        if self.conn is None:
            return
        if self.protocol == "two-phase":
            self.conn.execute(sql.SQL("COMMIT PREPARED {}").format(
                sql.Literal(self.journal.data["gid"])))
        else:
            self.conn.commit()

    def _abort(self) -> None:
        """The push failed, so the remote is unchanged: undo the database side."""
        if self.conn is not None:
            if self.protocol == "two-phase":
                self.conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(
                    sql.Literal(self.journal.data["gid"])))
            else:
                self.conn.rollback()
        settle_receipt(self.id, committed=False)
        self.journal.finish()

    def _restore(self, pushed: dict[str, str]) -> dict[str, str]:
        if self.target_ref and self.target_ref in pushed:
            return {self.target_ref: self.changeset.workspace.base}
        return {}

    def _planned_refs(self) -> dict[str, str]:
        """The refs the push before the commit point moves."""
        planned = {self.branch_ref: self.changeset.workspace.head} if self.pushing else {}
        if self.pushing and self.target_ref and self.protocol == "two-phase":
            planned[self.target_ref] = self.changeset.workspace.head
        return planned

    def _receipt(self) -> dict[str, Any]:
        planned = self._planned_refs()
        document = receipt_document(
            promotion_id=self.id, changeset=self.changeset, config=self.config,
            refs=planned, restore=self._restore(planned), applied=self.applied,
            rows=self.actual, protocol=self.protocol)
        if self.applied.mode == "fire" and self.changeset.rows is not None:
            # What was asked for, before the target's triggers: recovery writes it again
            # (and lets them fire once) when it must apply the rows again and the role may
            # not silence the triggers to write `rows` as they are.
            document["requested"] = self.changeset.rows.to_dict()
        return document


def receipt_document(*, promotion_id: str, changeset: ChangeSet, config: Config,
                     refs: dict[str, str], restore: dict[str, str], applied: Applied,
                     rows: RowDelta | None, protocol: str) -> dict[str, Any]:
    """A receipt: the change set as written, who and when, the trace id, and what undoing
    it needs (the refs to move back, the rows to invert)."""
    return {
        "id": promotion_id, "trace_id": changeset.trace_id,
        "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "when": datetime.datetime.now(datetime.UTC).isoformat(),
        "repo": config.target.repo, "database": config.target.database,
        "base": changeset.workspace.base, "head": changeset.workspace.head,
        "refs": refs, "restore": restore, "protocol": protocol,
        "triggers": config.promotion.triggers, "applied": asdict(applied),
        "changeset": changeset.summary(),
        "rows": rows.to_dict() if rows is not None else None,
    }
