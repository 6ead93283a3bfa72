"""The one path to the real systems: check a change set against the limits, then apply
it to the real database and push it to the real repository, all or nothing.

Both systems together: the rows are applied in one transaction that is PREPAREd; the git
push (atomic) goes next; the prepared transaction is committed only if the push
succeeded and rolled back if it failed. A journal records each step, so a crash at any
point is settled by `recover()`: if the pushed refs are on the remote the transaction
is committed, otherwise it is rolled back. Never half-applied.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from harness.changeset import ChangeSet
from harness.config import Config
from harness.errors import HarnessError
from harness.promote import git
from harness.promote.limits import Violation, check_limits
from harness.promote.rows import Applied, Conflict, apply_delta, invert
from harness.sandbox.capture import RowDelta
from harness.sandbox.home import state_dir

Outcome = Literal["promoted", "dry-run", "refused", "conflict", "failed", "reverted"]


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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def _failpoint(step: str) -> None:
    """Crash here when HARNESS_PROMOTE_CRASH names this step (fault-injection tests)."""
    if os.environ.get("HARNESS_PROMOTE_CRASH") == step:
        os._exit(137)


class Journal:
    """The record of one promotion in progress, rewritten atomically at each step."""

    def __init__(self, promotion_id: str) -> None:
        self.path = state_dir("journal") / f"{promotion_id}.json"
        self.data: dict[str, Any] = {}

    def write(self, **changes: Any) -> None:
        """Update and persist (write to a temp file, fsync, rename)."""
        self.data.update(changes)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump(self.data, handle, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)

    def finish(self) -> None:
        """The promotion is settled: remove the journal."""
        self.path.unlink(missing_ok=True)


def promote(changeset: ChangeSet, config: Config, *, dry_run: bool | None = None
            ) -> PromotionResult:
    """Promote `changeset` to `config.target` within `config`'s limits."""
    dry_run = config.orchestrator.blast_radius.dry_run if dry_run is None else dry_run
    violations = check_limits(changeset, config)
    branch = f"{config.promotion.branch_prefix}{changeset.trace_id}"
    target = config.target
    plan = {
        "git": {"target": target.repo, "push": [f"refs/heads/{branch}"] +
                ([f"refs/heads/{target.branch}"] if config.promotion.fast_forward else []),
                "commits": changeset.commit_count} if changeset.bundle else None,
        "database": changeset.rows.summary() if (changeset.rows and changeset.rows.rows)
        or (changeset.rows and changeset.rows.ddl) else None,
    }
    if violations:
        return PromotionResult("refused", changeset.trace_id, violations, plan=plan)
    rows = changeset.rows
    has_rows = rows is not None and (rows.rows > 0 or (rows.ddl and
                                                        config.orchestrator.blast_radius.allow_ddl))
    if has_rows and not target.database:
        return PromotionResult("failed", changeset.trace_id, plan=plan,
                               error="the change set has row changes but target.database is "
                                     "not set")
    if changeset.bundle and not target.repo:
        return PromotionResult("failed", changeset.trace_id, plan=plan,
                               error="target.repo is not set")
    conn = psycopg.connect(target.database) if has_rows and target.database else None
    try:
        conflicts: list[Conflict] = []
        applied = Applied()
        if conn is not None and rows is not None:
            applied, conflicts = apply_delta(conn, rows,
                                             ddl=config.orchestrator.blast_radius.allow_ddl)
            if conflicts or dry_run:
                conn.rollback()
        if conflicts:
            return PromotionResult("conflict", changeset.trace_id, conflicts=conflicts, plan=plan)
        if dry_run:
            return PromotionResult("dry-run", changeset.trace_id, plan=plan)
        return _commit_both(changeset, config, conn, applied, branch, plan)
    finally:
        if conn is not None:
            conn.close()


def _commit_both(changeset: ChangeSet, config: Config, conn: psycopg.Connection[Any] | None,
                 applied: Applied, branch: str, plan: dict[str, Any]) -> PromotionResult:
    promotion_id = f"{changeset.trace_id}-{uuid.uuid4().hex[:8]}"
    journal = Journal(promotion_id)
    target = config.target
    gid = f"harness-{promotion_id}"
    refs = {f"refs/heads/{branch}": changeset.workspace.head}
    if config.promotion.fast_forward:
        refs[f"refs/heads/{target.branch}"] = changeset.workspace.head
    journal.write(id=promotion_id, state="started", gid=gid, database=target.database,
                  repo=target.repo, refs=refs if changeset.bundle else {})
    if conn is not None:
        try:
            conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
            # The session is outside any transaction now; COMMIT/ROLLBACK PREPARED need that.
            conn.autocommit = True
        except psycopg.errors.ObjectNotInPrerequisiteState as exc:
            conn.rollback()
            journal.finish()
            raise HarnessError("the target database does not allow prepared transactions; set "
                               "max_prepared_transactions > 0 on it (the promotion needs them "
                               "to commit rows and commits together)") from exc
        journal.write(state="prepared")
    _failpoint("after-prepare")
    pushed: dict[str, str] = {}
    if changeset.bundle is not None and target.repo:
        try:
            pushed = git.push(changeset.bundle, target=target.repo,
                              base=changeset.workspace.base, refs=[f"refs/heads/{branch}"],
                              fast_forward=target.branch if config.promotion.fast_forward
                              else None)
        except git.PushError as exc:
            if conn is not None:
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
            journal.finish()
            return PromotionResult("failed", changeset.trace_id, plan=plan, error=str(exc))
        journal.write(state="pushed")
    # The receipt is ready before the commit, so a committed promotion always has one.
    pending = write_receipt(changeset, config, promotion_id, pushed, applied)
    _failpoint("after-push")
    if conn is not None:
        conn.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(gid)))
    receipt = pending.with_suffix("")
    pending.replace(receipt)
    journal.write(state="committed")
    journal.finish()
    return PromotionResult("promoted", changeset.trace_id, plan=plan, refs=pushed,
                           receipt=str(receipt))


def recover() -> list[dict[str, Any]]:
    """Settle every promotion a crash left in the journal: commit the prepared transaction
    when the push reached the remote, roll it back otherwise."""
    settled = []
    for path in sorted(state_dir("journal").glob("*.json")):
        data = json.loads(path.read_text())
        refs: dict[str, str] = data.get("refs") or {}
        pushed = bool(refs) and all(git.remote_ref(data["repo"], ref) == sha
                                    for ref, sha in refs.items())
        decision = "commit" if pushed or (not refs and data["state"] in ("prepared", "pushed",
                                                                        "committed")) \
            else "rollback"
        if data.get("database"):
            with psycopg.connect(data["database"], autocommit=True) as conn:
                prepared = conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s",
                                        (data["gid"],)).fetchone()
                if prepared:
                    verb = "COMMIT PREPARED {}" if decision == "commit" else \
                        "ROLLBACK PREPARED {}"
                    conn.execute(sql.SQL(verb).format(sql.Literal(data["gid"])))
                else:
                    decision = "nothing prepared" if data["state"] == "started" else decision
        pending = state_dir("receipts") / f"{data['id']}.json.pending"
        if pending.exists():
            if decision == "commit":
                pending.replace(pending.with_suffix(""))
            else:
                pending.unlink()
        path.unlink()
        settled.append({"id": data["id"], "state": data["state"], "decision": decision})
    return settled


# ------------------------------------------------------------------ receipts


def write_receipt(changeset: ChangeSet, config: Config, promotion_id: str,
                  refs: dict[str, str], applied: Applied) -> Path:
    """A receipt: the change set, who and when, the trace id, and the inverse change."""
    path = state_dir("receipts") / f"{promotion_id}.json.pending"
    rows = changeset.rows
    receipt = {
        "id": promotion_id, "trace_id": changeset.trace_id,
        "who": f"{getpass.getuser()}@{socket.gethostname()}",
        "when": datetime.datetime.now(datetime.UTC).isoformat(),
        "repo": config.target.repo, "database": config.target.database,
        "base": changeset.workspace.base, "refs": refs,
        "restore": ({f"refs/heads/{config.target.branch}": changeset.workspace.base}
                    if config.promotion.fast_forward else {}),
        "applied": asdict(applied), "changeset": changeset.summary(),
        "rows": rows.to_dict() if rows is not None else None,
    }
    with path.open("w") as handle:
        handle.write(json.dumps(receipt, default=str))  # dumps: the C encoder; dump is not
        handle.flush()
        os.fsync(handle.fileno())
    return path


def revert(receipt_path: Path) -> PromotionResult:
    """Undo a promotion: apply the inverse rows with the same conflict checks, and move the
    pushed refs back if they still point where the promotion put them."""
    receipt = json.loads(receipt_path.read_text())
    inverse = invert(RowDelta.from_dict(receipt["rows"])) if receipt.get("rows") else None
    conflicts: list[Conflict] = []
    conn = psycopg.connect(receipt["database"]) if inverse and inverse.rows else None
    try:
        if conn is not None and inverse is not None:
            _, conflicts = apply_delta(conn, inverse, ddl=False)
            if conflicts:
                conn.rollback()
                return PromotionResult("conflict", receipt["trace_id"], conflicts=conflicts)
        if receipt.get("refs"):
            try:
                git.delete_refs(receipt["repo"], receipt["refs"], restore=receipt.get("restore"))
            except git.PushError as exc:
                if conn is not None:
                    conn.rollback()
                return PromotionResult("failed", receipt["trace_id"], error=str(exc))
        if conn is not None:
            conn.commit()
    finally:
        if conn is not None:
            conn.close()
    return PromotionResult("reverted", receipt["trace_id"], refs=receipt.get("refs") or {})
