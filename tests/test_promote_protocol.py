"""The promotion protocols (harness/promote/promotion.py) driven directly: a change set made
by hand (commits in a bundle, rows in a delta) promoted to a real bare repository and a real
PostgreSQL, single-phase on a stock server and two-phase where prepared transactions are
allowed; with refusals, conflicts, a moved target branch, a failed push, crashes at the
commit point and around the start of a push, a commit that fails, work built on the harness
branch before the commit point, and recovery of several journals at once. No sandbox is
opened, so this runs in seconds (and under mutation testing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.changeset import ChangeSet
from harness.config import Config, parse_config
from harness.errors import HarnessError
from harness.home import state_dir
from harness.promote import git as promote_git
from harness.promote import promote, revert
from harness.promote import promotion as promotion_module
from harness.promote.journal import Journal, receipt_path
from harness.promote.promotion import FAILPOINTS
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
    ours = sorted(ref for ref, sha in refs(remote).items() if sha == changes.workspace.head)
    settled = recover()
    assert [r.decision for r in settled] == ["committed" if landed else "rolled back"]
    if landed:
        assert items(dsn) == [(1, "uno"), (2, "two"), (3, "three")]
        assert refs(remote)["refs/heads/main"] == changes.workspace.head
    else:
        assert items(dsn) == [(1, "one"), (2, "two")] and refs(remote) == before_refs
        removed = [line for line in settled[0].detail if line.startswith("removed from")]
        assert removed == ([f"removed from the remote (compare-and-swap): {', '.join(ours)}"]
                           if ours else []), settled[0].detail
    assert no_journal_left()


def crash_at(step: str, changes: ChangeSet, cfg: Config, tmp_path: Path) -> int:
    """Promote in a child process that kills itself at `step`; its exit code."""
    job = tmp_path / f"job-{step}.json"
    job.write_text(json.dumps({"changes": changes.to_dict(),
                               "config": cfg.model_dump(mode="json")}, default=str))
    return subprocess.run([sys.executable, "-c", _CRASH, str(job)], check=False,
                          env={**os.environ, "HARNESS_PROMOTE_CRASH": step}).returncode


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line names `text` (a push names its remote)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("step", ["after-push-start", "after-push-record"])
def test_a_push_its_promoter_died_before_releasing_never_reaches_the_remote(
        remote: Path, tmp_path: Path, stock_db: str, step: str) -> None:
    changes = changeset(remote, tmp_path, rows=rename(), trace=f"gate-{step}")
    before_refs = refs(remote)
    assert crash_at(step, changes, config(remote, stock_db), tmp_path) == 137
    [journal] = Journal.pending()
    assert ("push_group" in journal.data) == (step == "after-push-record")
    time.sleep(1.5)  # a push let loose lands in a fraction of that
    assert refs(remote) == before_refs, "an orphaned push reached the remote"
    assert processes_naming(str(remote)) == [], "the gated push is still waiting"
    assert [r.decision for r in recover()] == ["rolled back"]
    assert refs(remote) == before_refs and items(stock_db) == [(1, "one"), (2, "two")]
    assert no_journal_left()


def test_a_gated_push_stopped_before_its_release_never_runs(remote: Path,
                                                            tmp_path: Path) -> None:
    """What recovery does to a push group a crash left (its journal names it): killed at
    the gate, git never starts, the remote is unchanged."""
    base, _, bundle = _commits(remote, tmp_path)
    before_refs = refs(remote)
    members: dict[str, list[int]] = {}

    def stop(group: int) -> None:
        members["gated"] = promote_git.live_members(group)
        promote_git.stop_group(group, promote_git.leader_start(group))
        members["stopped"] = promote_git.live_members(group)

    killed = r"git push --atomic was killed \(signal 9\)"
    with pytest.raises(promote_git.PushInterrupted, match=killed):
        promote_git.push(bundle, target=str(remote), base=base,
                         refs=["refs/heads/harness/held"], started=stop)
    assert len(members["gated"]) == 1 and members["stopped"] == []
    assert refs(remote) == before_refs


def test_a_recycled_process_id_is_never_taken_for_a_push() -> None:
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        start = promote_git.leader_start(stranger.pid)
        assert start is not None
        promote_git.stop_group(stranger.pid, str(int(start) + 1))  # a push of another time
        promote_git.stop_group(stranger.pid)  # nor taken for one: it is not git
        assert stranger.poll() is None
        promote_git.stop_group(stranger.pid, start)
        assert stranger.wait(timeout=5) == -9
    finally:
        stranger.kill()
        stranger.wait()


STEPS_AFTER_THE_START = [
    (protocol, step) for protocol, skipped in (("single-phase", "after-prepare"),
                                               ("two-phase", "after-fast-forward"))
    for step in FAILPOINTS if step not in ("after-start", skipped)]


@pytest.mark.parametrize(("protocol", "step"), STEPS_AFTER_THE_START)
def test_from_the_first_step_after_the_start_a_receipt_with_the_rows_exists(
        remote: Path, tmp_path: Path, protocol: str, step: str,
        request: pytest.FixtureRequest) -> None:
    """The pending receipt is written before anything can commit (PREPARE, push, COMMIT):
    whatever recovery later decides, it never has to commit without one."""
    dsn = request.getfixturevalue("twophase_db" if protocol == "two-phase" else "stock_db")
    changes = changeset(remote, tmp_path, rows=rename(), trace=f"order-{protocol}-{step}")
    assert crash_at(step, changes, config(remote, dsn), tmp_path) == 137
    [journal] = Journal.pending()
    pending = receipt_path(journal.id, pending=True)
    written = pending if pending.exists() else receipt_path(journal.id, pending=False)
    receipt = json.loads(written.read_text())
    assert receipt["rows"]["tables"]["public.items"]["inserted"] == [{"id": 3, "name": "three"}]
    settled = recover()
    assert [r.decision for r in settled] in (["committed"], ["rolled back"])
    if settled[0].decision == "committed":
        assert revert(Path(settled[0].receipt or "")).outcome == "reverted"
    assert items(dsn) == [(1, "one"), (2, "two")] and no_journal_left()


def test_rows_alone_committed_by_recovery_have_a_receipt_revert_can_use(
        remote: Path, tmp_path: Path, twophase_db: str) -> None:
    """Two-phase without a repository, killed once prepared: recovery commits (there is no
    push to wait for). The receipt it settles carries the rows, so revert works."""
    changes = changeset(remote, tmp_path, commits=0, rows=rename(), trace="rows-prepared")
    cfg = config(remote, twophase_db)
    cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"repo": None})})
    assert crash_at("after-prepare", changes, cfg, tmp_path) == 137
    [settled] = recover()
    assert settled.decision == "committed" and settled.receipt
    assert items(twophase_db) == [(1, "uno"), (2, "two"), (3, "three")]
    receipt = json.loads(Path(settled.receipt).read_text())
    assert receipt["rows"] is not None and "rebuilt" not in receipt
    assert revert(Path(settled.receipt)).outcome == "reverted"
    assert items(twophase_db) == [(1, "one"), (2, "two")] and no_journal_left()


def _build_on(remote: Path, tmp_path: Path, ref: str) -> str:
    """Someone fetches `ref`, commits on it and pushes it: the new head."""
    work = tmp_path / "someone"
    subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True)
    branch = ref.removeprefix("refs/heads/")
    git(work, "checkout", "-q", branch)
    (work / "theirs.txt").write_text("built on it\n")
    git(work, "add", "-A")
    git(work, "-c", "user.name=b", "-c", "user.email=b@c", "commit", "-qm", "theirs")
    git(work, "push", "-q", "origin", branch)
    return git(work, "rev-parse", "HEAD")


def test_work_built_on_the_harness_branch_before_the_commit_point_keeps_the_promotion(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """Single-phase, killed after pushing harness/<trace> and before COMMIT; someone builds
    on that branch. The commits cannot be taken back, so recovery applies the rows again
    (with the conflict checks) and completes the promotion, never moving their branch."""
    changes = changeset(remote, tmp_path, rows=rename(), trace="built-on")
    base, head = changes.workspace.base, changes.workspace.head
    branch = "refs/heads/harness/built-on"
    assert crash_at("after-push", changes, config(remote, stock_db), tmp_path) == 137
    assert items(stock_db) == [(1, "one"), (2, "two")], "not committed"
    theirs = _build_on(remote, tmp_path, branch)
    [settled] = recover()
    assert settled.decision == "committed", settled.detail
    assert f"{branch} contain(s) the commits, put there or built on by others; the rows are " \
           "applied again instead of undoing the commits" in settled.detail
    assert "applied 2 row(s) again" in settled.detail
    assert items(stock_db) == [(1, "uno"), (2, "two"), (3, "three")]
    assert refs(remote)[branch] == theirs and refs(remote)["refs/heads/main"] == head
    assert no_journal_left() and settled.receipt
    receipt = json.loads(Path(settled.receipt).read_text())
    assert receipt["refs"] == {"refs/heads/main": head}, "their branch is not ours to undo"
    assert revert(Path(settled.receipt)).outcome == "reverted"
    assert items(stock_db) == [(1, "one"), (2, "two")]
    assert refs(remote)["refs/heads/main"] == base and refs(remote)[branch] == theirs


def test_built_on_while_a_row_changed_since_the_crash_stays_in_doubt_until_settled(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    changes = changeset(remote, tmp_path, rows=rename(), trace="built-on-conflict")
    branch = "refs/heads/harness/built-on-conflict"
    assert crash_at("after-push", changes, config(remote, stock_db), tmp_path) == 137
    _build_on(remote, tmp_path, branch)
    with psycopg.connect(stock_db) as conn:
        conn.execute("UPDATE items SET name = 'ONE' WHERE id = 1")
    [settled] = recover()
    assert settled.decision == "in doubt"
    assert [c.key for c in settled.conflicts] == [{"id": 1}]
    assert "the rows conflict with changes made on the target since the crash; settle them " \
           "by hand, then run --recover again" in settled.detail
    assert items(stock_db) == [(1, "ONE"), (2, "two")], "nothing applied in part"
    [journal] = Journal.pending()
    assert receipt_path(journal.id, pending=True).exists(), "kept for the next attempt"
    with psycopg.connect(stock_db) as conn:
        conn.execute("UPDATE items SET name = 'one' WHERE id = 1")  # settled by hand
    assert [r.decision for r in recover()] == ["committed"]
    assert items(stock_db) == [(1, "uno"), (2, "two"), (3, "three")] and no_journal_left()


def test_rows_applied_again_after_a_crash_in_fire_mode_fire_no_trigger_twice(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """With promotion.triggers: fire, the receipt holds what the target's triggers wrote
    too (here an audit row per written row): applying it again after a crash writes those
    rows as they are and keeps the triggers silent, so each audit row exists once."""
    with psycopg.connect(stock_db) as conn:
        conn.execute("""
            CREATE TABLE audit (id serial PRIMARY KEY, what text NOT NULL);
            CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO audit (what) VALUES (NEW.name); RETURN NULL; END $$;
            CREATE TRIGGER noted AFTER INSERT OR UPDATE ON items
                FOR EACH ROW EXECUTE FUNCTION note()""")
    changes = changeset(remote, tmp_path, rows=rename(), trace="built-on-fire")
    branch = "refs/heads/harness/built-on-fire"
    firing = parse_config(json.dumps({
        "orchestrator": {"blast_radius": {"max_commits": 5, "max_database_rows": 10,
                                          "dry_run": False}},
        "target": {"repo": str(remote), "database": stock_db},
        "promotion": {"triggers": "fire"}}))
    assert crash_at("after-push", changes, firing, tmp_path) == 137
    _build_on(remote, tmp_path, branch)
    [settled] = recover()
    assert settled.decision == "committed", settled.detail
    assert items(stock_db) == [(1, "uno"), (2, "two"), (3, "three")]
    with psycopg.connect(stock_db) as conn:
        noted = conn.execute("SELECT what FROM audit ORDER BY what").fetchall()
    assert noted == [("three",), ("uno",)], "one audit row per written row"
    assert revert(Path(settled.receipt or "")).outcome == "reverted"
    assert items(stock_db) == [(1, "one"), (2, "two")]
    with psycopg.connect(stock_db) as conn:
        assert conn.execute("SELECT count(*) FROM audit").fetchone() == (0,)


DEFERRED = ("CREATE TABLE items (id int PRIMARY KEY, "
            "name text NOT NULL UNIQUE DEFERRABLE INITIALLY DEFERRED); "
            "INSERT INTO items VALUES (1, 'one'), (2, 'two')")


def test_a_commit_the_target_refuses_undoes_the_push_and_names_what_it_removed(
        remote: Path, tmp_path: Path, target_server: ServerAddress) -> None:
    """Single-phase: a deferred unique key is only checked at COMMIT, after the harness
    branch is pushed. The promoting process settles it there and then: the transaction
    aborted, so the branch is removed (compare-and-swap) and the result says so."""
    dsn = target_server.fresh_database("proto_commit_refused", DEFERRED)
    clash = RowDelta({"public.items": TableDelta("public.items", ["id"],
                                                 inserted=[{"id": 3, "name": "two"}])})
    changes = changeset(remote, tmp_path, rows=clash, trace="t-commit-refused")
    before_refs = refs(remote)
    result = promote(changes, config(remote, dsn))
    assert result.outcome == "failed" and result.protocol == "single-phase"
    assert (result.error or "").startswith("the commit failed: duplicate key value")
    assert "removed from the remote (compare-and-swap): refs/heads/harness/t-commit-refused" \
        in result.notes
    assert "promotion rolled back: nothing of it remains" in result.notes
    assert refs(remote) == before_refs and items(dsn) == [(1, "one"), (2, "two")]
    assert no_journal_left() and list(state_dir("receipts").glob("t-commit-refused-*")) == []


def test_a_commit_whose_connection_dies_after_the_push_is_completed_in_process(
        remote: Path, tmp_path: Path, twophase_db: str, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """Two-phase: the push (the commit point) is done when the connection to the target is
    cut; COMMIT PREPARED raises, and the promoting process finishes the promotion itself."""
    changes = changeset(remote, tmp_path, rows=rename(), trace="t-commit-cut")

    def cut(step: str) -> None:
        if step == "after-push":
            with psycopg.connect(twophase_db, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    monkeypatch.setattr(promotion_module, "failpoint", cut)
    result = promote(changes, config(remote, twophase_db))
    assert result.outcome == "promoted" and result.protocol == "two-phase"
    assert (result.error or "").startswith("the commit failed:")
    assert "committed the prepared transaction: the push had reached the remote" in result.notes
    assert items(twophase_db) == [(1, "uno"), (2, "two"), (3, "three")]
    assert refs(remote)["refs/heads/main"] == changes.workspace.head
    assert result.receipt and Path(result.receipt).exists() and no_journal_left()


@pytest.mark.parametrize("database", ["stock_db", "twophase_db"])
def test_touched_rows_stay_locked_from_the_push_until_the_commit(
        remote: Path, tmp_path: Path, database: str, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone updates a promoted row while the push runs: the update waits for the
    promotion's commit, then applies on top of it; it never slips in between."""
    dsn = request.getfixturevalue(database)
    changes = changeset(remote, tmp_path, rows=rename(), trace=f"t-locked-{database}")
    finished: list[str] = []

    def write() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE items SET name = name || ' and theirs' WHERE id = 1")
        finished.append("done")

    writer = threading.Thread(target=write)
    waiting: dict[str, bool] = {}

    def observe(step: str) -> None:
        if step not in ("after-push-record", "after-push") or step in waiting:
            return  # single-phase pushes twice: the second push is after the commit
        if step == "after-push-record":  # the push is about to run
            writer.start()
        time.sleep(0.4)
        waiting[step] = writer.is_alive() and not finished

    monkeypatch.setattr(promotion_module, "failpoint", observe)
    result = promote(changes, config(remote, dsn))
    writer.join(timeout=10)
    assert result.outcome == "promoted", result.error
    assert waiting == {"after-push-record": True, "after-push": True}
    assert finished == ["done"]
    assert items(dsn) == [(1, "uno and theirs"), (2, "two"), (3, "three")]


CATALOG = """
SELECT 'schema', nspname FROM pg_namespace
UNION ALL SELECT 'relation ' || c.relkind::text, c.oid::regclass::text FROM pg_class c
UNION ALL SELECT 'function', p.oid::regprocedure::text || md5(p.prosrc) FROM pg_proc p
UNION ALL SELECT 'type', t.oid::regtype::text FROM pg_type t
UNION ALL SELECT 'trigger', tgrelid::regclass::text || '.' || tgname FROM pg_trigger
UNION ALL SELECT 'event trigger', evtname FROM pg_event_trigger
UNION ALL SELECT 'extension', extname FROM pg_extension
UNION ALL SELECT 'role', rolname FROM pg_roles
UNION ALL SELECT 'setting', setdatabase || ' ' || setrole || ' ' || setconfig::text
          FROM pg_db_role_setting
UNION ALL SELECT 'comment', objoid || ' ' || description FROM pg_description
UNION ALL SELECT 'large object', oid::text FROM pg_largeobject_metadata
UNION ALL SELECT 'publication', pubname FROM pg_publication
UNION ALL SELECT 'prepared', gid FROM pg_prepared_xacts
"""
"""What a promotion must leave as it found: schemas, relations, functions, types, triggers,
extensions, roles, settings, comments, large objects, publications, prepared transactions."""


def catalog(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return sorted(conn.execute(CATALOG).fetchall())


@pytest.mark.parametrize("database", ["stock_db", "twophase_db"])
def test_a_promotion_writes_nothing_of_its_own_into_the_target_database(
        remote: Path, tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue(database)
    before = catalog(dsn)
    result = promote(changeset(remote, tmp_path, rows=rename(), trace=f"t-cat-{database}"),
                     config(remote, dsn))
    assert result.outcome == "promoted"
    assert catalog(dsn) == before
    assert items(dsn) == [(1, "uno"), (2, "two"), (3, "three")], "only the rows changed"


def test_two_phase_asked_for_commits_alone_says_what_ran(
        remote: Path, tmp_path: Path, twophase_db: str, shop_repo: Path) -> None:
    changes = changeset(remote, tmp_path, rows=None, trace="t-asked")
    cfg = config(remote, twophase_db, atomicity="two-phase")
    note = ("promotion.atomicity asks for two-phase, but the change set has no database rows: "
            "there is no transaction to prepare, so single-phase ran (the commits were pushed, "
            "nothing else)")
    dry = promote(changes, cfg, dry_run=True)
    assert dry.plan["protocol"] == "single-phase" and dry.notes == [note]
    result = promote(changes, cfg)
    assert (result.outcome, result.protocol) == ("promoted", "single-phase")
    assert result.notes == [note]
    assert json.loads(Path(result.receipt or "").read_text())["protocol"] == "single-phase"
    folder = tmp_path / "rows"
    another = folder / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(another)], check=True)
    with_rows = promote(changeset(another, folder, rows=rename(), trace="t-asked-rows"),
                        config(another, twophase_db, atomicity="two-phase"))
    assert (with_rows.outcome, with_rows.protocol, with_rows.notes) == (
        "promoted", "two-phase", [])


def test_recovery_settles_each_journal_on_its_own_and_says_why_one_failed(
        remote: Path, tmp_path: Path, stock_db: str, target_server: ServerAddress,
        shop_repo: Path) -> None:
    """Three promotions killed after their push: one's remote has gone, one's database is
    unreachable, one is fine. Recovery settles the third, reports each of the others in
    doubt with its reason, keeps their journals, and exits non-zero."""
    lost = tmp_path / "lost.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(lost)], check=True)
    gone = target_server.fresh_database("proto_recover_gone", SCHEMA)
    jobs = [("remote-gone", lost, stock_db), ("db-gone", remote, gone),
            ("fine", remote, stock_db)]
    for trace, repo, dsn in jobs:
        folder = tmp_path / trace
        folder.mkdir()
        changes = changeset(repo, folder, rows=rename(), trace=f"iso-{trace}")
        assert crash_at("after-push", changes, config(repo, dsn), folder) == 137
        time.sleep(0.05)  # journals are taken oldest first
    lost.rename(tmp_path / "elsewhere.git")
    with target_server.connect() as conn:
        conn.execute("ALTER DATABASE proto_recover_gone ALLOW_CONNECTIONS false")
    try:
        done = subprocess.run([sys.executable, "-m", "harness.cli", "promote", "--recover",
                               "--json"], capture_output=True, text=True, check=False)
    finally:
        with target_server.connect() as conn:
            conn.execute("ALTER DATABASE proto_recover_gone ALLOW_CONNECTIONS true")
    assert done.returncode == 1, done.stderr
    settled = {entry["id"].rsplit("-", 1)[0]: entry for entry in json.loads(done.stdout)}
    assert settled["iso-fine"]["decision"] == "rolled back"
    assert settled["iso-fine"]["error"] is None
    assert settled["iso-remote-gone"]["decision"] == "in doubt"
    assert settled["iso-remote-gone"]["error"].startswith(f"PushError: git ls-remote {lost} "
                                                          "failed: ")
    assert settled["iso-db-gone"]["decision"] == "in doubt"
    assert settled["iso-db-gone"]["error"].startswith("OperationalError: ")
    assert "is not currently accepting connections" in settled["iso-db-gone"]["error"]
    for entry in (settled["iso-remote-gone"], settled["iso-db-gone"]):
        assert entry["detail"][0].startswith("recovery failed, nothing more was done: ")
        assert entry["detail"][0].endswith("the journal is kept: run --recover again once "
                                           "the cause is fixed")
    assert sorted(j.data["trace_id"] for j in Journal.pending()) == ["iso-db-gone",
                                                                     "iso-remote-gone"]
    (tmp_path / "elsewhere.git").rename(lost)
    assert sorted(r.decision for r in recover()) == ["rolled back", "rolled back"]
    assert no_journal_left() and items(stock_db) == [(1, "one"), (2, "two")]


@pytest.mark.parametrize("landed", [False, True])
def test_a_push_killed_under_a_living_promoter_is_settled_by_asking_the_remote(
        remote: Path, tmp_path: Path, stock_db: str, landed: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone kills git while the promoter lives: before the release (nothing can have
    landed), or once the remote has taken the refs (its post-receive hook still runs). The
    promotion asks the remote: undone with nothing changed, or completed."""
    hook = remote / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\nwhile read old new ref; do\n"
                    "  case $ref in refs/heads/harness/*) sleep 10;; esac\ndone\n")
    hook.chmod(0o755)
    changes = changeset(remote, tmp_path, rows=rename(), trace=f"t-killed-{landed}")
    branch = f"refs/heads/harness/t-killed-{landed}"
    before_refs = refs(remote)
    killers: list[threading.Thread] = []

    def kill_the_push(step: str) -> None:
        if step != "after-push-record" or killers:
            return
        [journal] = Journal.pending()
        group = journal.data["push_group"]

        def kill() -> None:
            deadline = time.monotonic() + 10
            while landed and branch not in refs(remote) and time.monotonic() < deadline:
                time.sleep(0.02)
            promote_git.stop_group(group, journal.data["push_start"])

        killers.append(threading.Thread(target=kill))
        killers[0].start()
        if not landed:
            killers[0].join()

    monkeypatch.setattr(promotion_module, "failpoint", kill_the_push)
    started = time.monotonic()
    result = promote(changes, config(remote, stock_db))
    killers[0].join()
    assert time.monotonic() - started < 8, "killed (the hook alone holds a push 10 s)"
    if landed:
        assert result.outcome == "promoted", result.error
        assert items(stock_db) == [(1, "uno"), (2, "two"), (3, "three")]
        assert refs(remote)[branch] == changes.workspace.head
        assert refs(remote)["refs/heads/main"] == changes.workspace.head
    else:
        assert result.outcome == "failed"
        assert result.error == "the push was killed before it reached the remote; nothing " \
                               "changed"
        assert items(stock_db) == [(1, "one"), (2, "two")] and refs(remote) == before_refs
    assert no_journal_left()
