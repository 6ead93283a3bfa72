"""The promotion protocols (harness/promote/promotion.py) driven directly: a change set made
by hand (commits in a bundle, rows in a delta) promoted to a real bare repository and a real
PostgreSQL, single-phase on a stock server and two-phase where prepared transactions are
allowed; with refusals, conflicts, a moved target branch, a failed push and crashes at the
commit point. No sandbox is opened, so this runs in seconds (and under mutation testing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.changeset import ChangeSet
from harness.config import Config, parse_config
from harness.errors import HarnessError
from harness.home import state_dir
from harness.promote import promote
from harness.promote.journal import Journal
from harness.promote.recovery import recover
from harness.sandbox.capture import RowDelta, RowUpdate, TableDelta
from harness.sandbox.postgres import ServerAddress
from harness.sandbox.workspace import Commit, FileChange, WorkspaceChanges
from tests.fix_git import git

pytestmark = pytest.mark.postgres

SCHEMA = ("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); "
          "INSERT INTO items VALUES (1, 'one'), (2, 'two')")


@pytest.fixture()
def remote(shop_repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(path)], check=True)
    return path


def _commits(remote: Path, tmp_path: Path, count: int = 2) -> tuple[str, str, Path]:
    """`count` commits on the remote's main, bundled: (base, head, bundle)."""
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True)
    base = git(work, "rev-parse", "HEAD")
    for n in range(count):
        (work / f"file{n}.txt").write_text(f"{n}\n")
        git(work, "add", "-A")
        git(work, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", f"c{n}")
    head = git(work, "rev-parse", "HEAD")
    bundle = tmp_path / "change.bundle"
    git(work, "bundle", "create", str(bundle), "HEAD", f"^{base}")
    return base, head, bundle


def changeset(remote: Path, tmp_path: Path, *, commits: int = 2,
              rows: RowDelta | None = None, trace: str = "t0") -> ChangeSet:
    if not commits:
        head = git(remote, "rev-parse", "main")
        return ChangeSet(trace, WorkspaceChanges(head, head), rows, None)
    base, head, bundle = _commits(remote, tmp_path, commits)
    workspace = WorkspaceChanges(base, head, [Commit(head, "a", "a@b", f"c{n}")
                                              for n in range(commits)],
                                 [FileChange(f"file{n}.txt", 1, 0) for n in range(commits)])
    return ChangeSet(trace, workspace, rows, bundle)


def rename(name: str = "uno") -> RowDelta:
    before = {"id": 1, "name": "one"}
    return RowDelta({"public.items": TableDelta("public.items", ["id"], updated=[
        RowUpdate({"id": 1}, before, {**before, "name": name}, ["name"])],
        inserted=[{"id": 3, "name": "three"}])})


def config(remote: Path, dsn: str | None, *, dry_run: bool = False,
           atomicity: str = "auto", fast_forward: bool = True, **blast: Any) -> Config:
    return parse_config(json.dumps({
        "orchestrator": {"blast_radius": {"max_commits": 5, "max_database_rows": 10,
                                          "dry_run": dry_run, **blast}},
        "target": {"repo": str(remote), "database": dsn},
        "promotion": {"fast_forward": fast_forward, "atomicity": atomicity}}))


@pytest.fixture()
def stock_db(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    name = "proto_" + request.node.name[:40].lower().replace("[", "_").replace("]", "")
    return target_server.fresh_database(name.replace("-", "_"), SCHEMA)


@pytest.fixture()
def twophase_db(target_server_2pc: ServerAddress, request: pytest.FixtureRequest) -> str:
    name = "proto2_" + request.node.name[:40].lower().replace("[", "_").replace("]", "")
    return target_server_2pc.fresh_database(name.replace("-", "_"), SCHEMA)


def items(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, name FROM items ORDER BY id").fetchall()


def refs(remote: Path) -> dict[str, str]:
    listed = git(remote, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split() for line in listed.splitlines())


def no_journal_left() -> bool:
    return Journal.pending() == []


@pytest.mark.parametrize("database", ["stock_db", "twophase_db"])
def test_rows_and_commits_land_together_with_a_receipt_that_can_undo_them(
        remote: Path, tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue(database)
    changes = changeset(remote, tmp_path, rows=rename(), trace=f"t-{database}")
    base = changes.workspace.base
    result = promote(changes, config(remote, dsn))
    protocol = "two-phase" if database == "twophase_db" else "single-phase"
    assert (result.outcome, result.protocol) == ("promoted", protocol), result.error
    assert items(dsn) == [(1, "uno"), (2, "two"), (3, "three")]
    head = changes.workspace.head
    branch = f"refs/heads/harness/t-{database}"
    assert refs(remote)[branch] == head and refs(remote)["refs/heads/main"] == head
    assert result.refs == {branch: head, "refs/heads/main": head}
    receipt = json.loads(Path(result.receipt or "").read_text())
    assert receipt["protocol"] == protocol and receipt["refs"] == result.refs
    assert receipt["restore"] == {"refs/heads/main": base}
    assert receipt["rows"]["tables"]["public.items"]["inserted"] == [{"id": 3, "name": "three"}]
    assert receipt["changeset"]["commits"] == 2 and receipt["database"] == dsn
    assert result.applied is not None and result.applied["updated"] == 1
    assert no_journal_left() and not Path(str(result.receipt) + ".pending").exists()


def test_a_dry_run_shows_the_plan_and_touches_nothing(remote: Path, tmp_path: Path,
                                                       stock_db: str) -> None:
    before_refs = refs(remote)
    changes = changeset(remote, tmp_path, rows=rename())
    result = promote(changes, config(remote, stock_db, dry_run=True))
    assert result.outcome == "dry-run" and result.receipt is None
    assert result.plan["protocol"] == "single-phase"
    assert result.plan["database"]["mode"] == "plain"
    assert result.plan["database"]["total"] == {"inserted": 1, "updated": 1, "deleted": 0,
                                                "rows": 2}
    assert result.plan["git"] == {"target": str(remote), "commits": 2,
                                  "push": ["refs/heads/harness/t0", "refs/heads/main"]}
    assert items(stock_db) == [(1, "one"), (2, "two")] and refs(remote) == before_refs
    assert promote(changes, config(remote, stock_db, dry_run=False), dry_run=True
                   ).outcome == "dry-run", "the argument overrides the config"


def test_over_a_limit_or_in_conflict_nothing_is_touched(remote: Path, tmp_path: Path,
                                                         stock_db: str) -> None:
    before_refs = refs(remote)
    changes = changeset(remote, tmp_path, rows=rename())
    refused = promote(changes, config(remote, stock_db, max_commits=1))
    assert refused.outcome == "refused" and [v.limit for v in refused.violations] == [
        "max_commits"]
    assert refused.plan["git"]["commits"] == 2
    with psycopg.connect(stock_db) as conn:
        conn.execute("UPDATE items SET name = 'ONE' WHERE id = 1")
    conflict = promote(changes, config(remote, stock_db))
    assert conflict.outcome == "conflict" and [c.key for c in conflict.conflicts] == [{"id": 1}]
    assert items(stock_db) == [(1, "ONE"), (2, "two")] and refs(remote) == before_refs
    assert no_journal_left()


def test_a_target_branch_that_moved_fails_before_the_commit_point(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    changes = changeset(remote, tmp_path, rows=rename())
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(remote), str(other)], check=True)
    (other / "theirs.txt").write_text("x\n")
    git(other, "add", "-A")
    git(other, "-c", "user.name=b", "-c", "user.email=b@c", "commit", "-qm", "theirs")
    git(other, "push", "-q", "origin", "main")
    before_refs = refs(remote)
    result = promote(changes, config(remote, stock_db))
    assert result.outcome == "failed" and "cannot be fast-forwarded" in (result.error or "")
    assert items(stock_db) == [(1, "one"), (2, "two")] and refs(remote) == before_refs
    assert no_journal_left()
    pending = list(state_dir("receipts").glob("*.pending"))
    assert pending == [], "the pending receipt is settled as not committed"


def test_without_fast_forward_only_the_harness_branch_is_pushed(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    main = refs(remote)["refs/heads/main"]
    changes = changeset(remote, tmp_path, rows=None, trace="t-branch")
    result = promote(changes, config(remote, stock_db, fast_forward=False))
    assert result.outcome == "promoted" and result.protocol == "single-phase"
    assert refs(remote)["refs/heads/main"] == main
    assert result.refs == {"refs/heads/harness/t-branch": changes.workspace.head}
    receipt = json.loads(Path(result.receipt or "").read_text())
    assert receipt["restore"] == {} and receipt["rows"] is None


def test_rows_alone_need_no_repository(remote: Path, tmp_path: Path, stock_db: str) -> None:
    changes = changeset(remote, tmp_path, commits=0, rows=rename())
    cfg = config(remote, stock_db)
    cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"repo": None})})
    result = promote(changes, cfg)
    assert result.outcome == "promoted" and result.refs == {}
    assert items(stock_db)[0] == (1, "uno")


def test_what_the_target_lacks_fails_with_a_reason(remote: Path, tmp_path: Path,
                                                    stock_db: str) -> None:
    rows_only = changeset(remote, tmp_path, commits=0, rows=rename())
    missing = promote(rows_only, config(remote, None))
    assert missing.outcome == "failed"
    assert missing.error == "the change set has row changes but target.database is not set"
    commits_only = changeset(remote, tmp_path, rows=None)
    cfg = config(remote, stock_db)
    cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"repo": None})})
    assert promote(commits_only, cfg).error == "target.repo is not set"
    with pytest.raises(HarnessError, match="max_prepared_transactions = 0"):
        promote(rows_only, config(remote, stock_db, atomicity="two-phase"))
    forced = promote(rows_only, config(remote, stock_db, atomicity="single-phase"))
    assert forced.protocol == "single-phase"


def test_a_push_the_remote_refuses_leaves_the_database_unchanged(
        remote: Path, tmp_path: Path, twophase_db: str) -> None:
    changes = changeset(remote, tmp_path, rows=rename(), trace="t-refused")
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho refused by policy >&2\nexit 1\n")
    hook.chmod(0o755)
    before_refs = refs(remote)
    result = promote(changes, config(remote, twophase_db))
    assert result.outcome == "failed" and "refused by policy" in (result.error or "")
    assert items(twophase_db) == [(1, "one"), (2, "two")] and refs(remote) == before_refs
    with psycopg.connect(twophase_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() == (0,)
    assert no_journal_left()


_CRASH = """
import json, sys
from pathlib import Path
from harness.changeset import ChangeSet
from harness.config import parse_config
from harness.promote import promote
data = json.loads(Path(sys.argv[1]).read_text())
promote(ChangeSet.from_dict(data["changes"]), parse_config(json.dumps(data["config"])))
"""


@pytest.mark.parametrize(("database", "step", "landed"), [
    ("stock_db", "after-receipt", False), ("stock_db", "after-push", False),
    ("stock_db", "after-commit", True), ("twophase_db", "after-prepare", False),
    ("twophase_db", "after-push", True)])
def test_a_crash_at_each_side_of_the_commit_point_is_settled_by_recovery(
        remote: Path, tmp_path: Path, database: str, step: str, landed: bool,
        request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue(database)
    changes = changeset(remote, tmp_path, rows=rename(), trace=f"crash-{step}")
    before_refs = refs(remote)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"changes": changes.to_dict(),
                               "config": config(remote, dsn).model_dump(mode="json")},
                              default=str))
    done = subprocess.run([sys.executable, "-c", _CRASH, str(job)], check=False,
                          env={**os.environ, "HARNESS_PROMOTE_CRASH": step})
    assert done.returncode == 137
    settled = recover()
    assert [r.decision for r in settled] == ["committed" if landed else "rolled back"]
    if landed:
        assert items(dsn) == [(1, "uno"), (2, "two"), (3, "three")]
        assert refs(remote)["refs/heads/main"] == changes.workspace.head
    else:
        assert items(dsn) == [(1, "one"), (2, "two")] and refs(remote) == before_refs
    assert no_journal_left()
