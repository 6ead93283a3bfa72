"""Recovery under a hostile world: recoveries killed and run again, two at once, a process id
reused, journals that vanish or cannot be read, a remote that will not take the push
again, a target branch others moved, a harness branch that already exists, fire mode
without the privilege to silence triggers, schema changes, and a revert killed midway.
Each case ends as the promise says: the repository and the database both promoted or both
untouched, a receipt exactly when promoted, nothing prepared or journaled left, nothing
forced over anyone's work."""

from __future__ import annotations

import importlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.config import parse_config
from harness.home import state_dir
from harness.promote import git as promote_git
from harness.promote import promote, revert
from harness.promote.journal import Journal, receipt_path
from harness.promote.promotion import FAILPOINTS
from harness.promote.recovery import recover
from harness.sandbox.capture import DdlStatement, RowDelta, TableDelta
from harness.sandbox.postgres import ServerAddress
from tests.fix_git import git
from tests.fix_pg import application_role
from tests.test_promote_protocol import (
    SCHEMA,
    _build_on,
    _commits,
    changeset,
    config,
    crash_at,
    items,
    no_journal_left,
    refs,
    rename,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres


@pytest.fixture()
def remote(shop_repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(path)], check=True)
    return path


def _database_name(prefix: str, request: pytest.FixtureRequest) -> str:
    name = prefix + str(request.node.name)[:40].lower().replace("[", "_").replace("]", "")
    return name.replace("-", "_")


@pytest.fixture()
def stock_db(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    return str(target_server.fresh_database(_database_name("rcv_", request), SCHEMA))


@pytest.fixture()
def twophase_db(target_server_2pc: ServerAddress, request: pytest.FixtureRequest) -> str:
    return str(target_server_2pc.fresh_database(_database_name("rcv2_", request), SCHEMA))

RECOVER = [sys.executable, "-m", "harness.cli", "promote", "--recover", "--json"]
BEFORE = [(1, "one"), (2, "two")]
AFTER = [(1, "uno"), (2, "two"), (3, "three")]


def receipts_of(trace: str) -> list[Path]:
    return sorted(state_dir("receipts").glob(f"{trace}-*"))


def hold_pushes(remote: Path, release: Path) -> None:
    """The remote's pre-receive hook waits until `release` exists: a push stays in flight."""
    hook = remote / "hooks" / "pre-receive"
    # At most a minute: a test that fails before releasing leaves no hook running for ever.
    hook.write_text(f"#!/bin/sh\nn=0\nwhile [ ! -e '{release}' ] && [ $n -lt 1200 ]; do "
                    f"sleep 0.05; n=$((n + 1)); done\n")
    hook.chmod(0o755)


def recovery_pushing(journal: Journal) -> int:
    """Wait until a recovery has journaled a push of its own (the promoter's is there from
    before the crash); that push's process group."""
    crashed = journal.data.get("push_group")

    def pushing() -> int | None:
        journal.reload()
        group = journal.data.get("push_group")
        return group if group != crashed else None
    return int(wait_for(pushing, "a recovery to start its push", timeout=30))


def test_single_phase_undo_keeps_a_target_branch_others_fast_forwarded(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """Single-phase moves the target branch only after its commit point. Killed before it,
    with someone having fast-forwarded main to the pushed head meanwhile: main is theirs
    (published), so recovery applies the rows again instead of moving main back."""
    changes = changeset(remote, tmp_path, rows=rename(), trace="ff-by-them")
    head, base = changes.workspace.head, changes.workspace.base
    assert crash_at("after-push", changes, config(remote, stock_db), tmp_path) == 137
    git(remote, "update-ref", "refs/heads/main", head)  # someone else's fast-forward
    [settled] = recover()
    assert settled.decision == "committed", settled.detail
    assert "refs/heads/main contain(s) the commits, put there or built on by others; the " \
           "rows are applied again instead of undoing the commits" in settled.detail
    assert refs(remote)["refs/heads/main"] == head and items(stock_db) == AFTER
    assert no_journal_left() and settled.receipt
    assert revert(Path(settled.receipt)).outcome == "reverted"
    assert refs(remote)["refs/heads/main"] == base and items(stock_db) == BEFORE


def test_committed_rows_whose_commits_cannot_be_pushed_again_stay_in_doubt(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """Killed after the COMMIT; someone deletes the harness branch; the remote refuses
    pushes for a while. Settling then would leave the rows without their commits: recovery
    keeps the journal and the pending receipt, and completes once the remote takes it."""
    changes = changeset(remote, tmp_path, rows=rename(), trace="again-refused")
    head, branch = changes.workspace.head, "refs/heads/harness/again-refused"
    assert crash_at("after-commit", changes, config(remote, stock_db), tmp_path) == 137
    git(remote, "update-ref", "-d", branch)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho closed for maintenance >&2\nexit 1\n")
    hook.chmod(0o755)
    [doubt] = recover()
    assert doubt.decision == "in doubt", doubt.detail
    assert any("closed for maintenance" in line for line in doubt.detail)
    assert doubt.detail[-1] == (
        "in doubt: the database has the rows but the commits are on no ref of the remote; "
        f"run --recover again once the remote takes the push (or push {head} to {branch} "
        "by hand)")
    [journal] = Journal.pending()
    assert receipt_path(journal.id, pending=True).exists() and receipts_of("again-refused") \
        == [receipt_path(journal.id, pending=True)]
    hook.unlink()
    [settled] = recover()
    assert settled.decision == "committed", settled.detail
    assert refs(remote)[branch] == head and refs(remote)["refs/heads/main"] == head
    assert no_journal_left() and items(stock_db) == AFTER
    assert revert(Path(settled.receipt or "")).outcome == "reverted"
    assert items(stock_db) == BEFORE and branch not in refs(remote)


def test_a_reused_process_id_does_not_hold_recovery_back(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """The dead promoter's process id now names another process: the promotion's lock, which
    died with its promoter, says nobody works on it."""
    changes = changeset(remote, tmp_path, rows=rename(), trace="pid-reused")
    assert crash_at("after-push", changes, config(remote, stock_db), tmp_path) == 137
    [journal] = Journal.pending()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        journal.write(owner=stranger.pid)
        assert [r.decision for r in recover()] == ["rolled back"]
    finally:
        stranger.kill()
        stranger.wait()
    assert no_journal_left() and items(stock_db) == BEFORE
    assert "refs/heads/harness/pid-reused" not in refs(remote)


def committed_with_its_branch_deleted(remote: Path, tmp_path: Path, dsn: str, trace: str
                                      ) -> tuple[str, str, Path, Journal]:
    """A promotion killed after its COMMIT whose harness branch someone then deleted, with
    the remote holding pushes until `release` exists: recovery must push the branch again.
    The head, the branch, the release file and the promotion's journal."""
    changes = changeset(remote, tmp_path, rows=rename(), trace=trace)
    branch = f"refs/heads/harness/{trace}"
    assert crash_at("after-commit", changes, config(remote, dsn), tmp_path) == 137
    git(remote, "update-ref", "-d", branch)
    release = tmp_path / "release"
    hold_pushes(remote, release)
    [journal] = Journal.pending()
    return changes.workspace.head, branch, release, journal


def test_two_recoveries_at_once_settle_a_promotion_once_and_record_every_ref(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """Killed after the COMMIT, its harness branch deleted: recovery pushes it again (held by
    the remote's hook). A second recovery started meanwhile must neither kill that push
    (the journal names its process group) nor settle the promotion itself: it reports the
    promotion in doubt, held by the other. The receipt names every ref at the head, so a
    revert removes them all."""
    head, branch, release, journal = committed_with_its_branch_deleted(
        remote, tmp_path, stock_db, "two-recoveries")
    first = subprocess.Popen(RECOVER, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        recovery_pushing(journal)
        second = subprocess.run(RECOVER, capture_output=True, text=True, check=False)
        assert second.returncode == 1, second.stderr
        [entry] = json.loads(second.stdout)
        assert entry["decision"] == "in doubt"
        assert entry["detail"] == [
            "another `harness promote --recover` is settling it",
            "it holds the promotion's lock: nothing was done; run --recover again once it "
            "has ended"]
        release.touch()
        stdout, stderr = first.communicate(timeout=60)
    finally:
        release.touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    [settled] = json.loads(stdout)
    assert settled["decision"] == "committed", settled["detail"]
    assert refs(remote)[branch] == head and refs(remote)["refs/heads/main"] == head
    [receipt] = receipts_of("two-recoveries")
    assert json.loads(receipt.read_text())["refs"] == {branch: head, "refs/heads/main": head}
    assert no_journal_left() and list(state_dir("journal").glob("two-recoveries-*")) == []
    assert revert(receipt).outcome == "reverted"
    assert items(stock_db) == BEFORE and branch not in refs(remote)


def test_a_recovery_killed_mid_push_is_finished_by_the_next_one(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """Recovery pushes the deleted harness branch again and is killed while the push is in
    flight. The next recovery stops that push's process group (journaled by the killed one)
    before it decides, then pushes again itself."""
    head, branch, release, journal = committed_with_its_branch_deleted(
        remote, tmp_path, stock_db, "killed-recovery")
    killed = subprocess.Popen(RECOVER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        group = recovery_pushing(journal)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert promote_git.live_members(group), "the killed recovery's push is still held"
        (remote / "hooks" / "pre-receive").unlink()
        [settled] = recover()
    finally:
        release.touch()
        if killed.poll() is None:
            killed.kill()
            killed.wait()
    assert settled.decision == "committed", settled.detail
    assert promote_git.live_members(group) == []
    assert refs(remote)[branch] == head and no_journal_left()
    assert revert(Path(settled.receipt or "")).outcome == "reverted"
    assert items(stock_db) == BEFORE


def test_a_lock_its_holder_lets_go_of_within_moments_is_waited_for(
        remote: Path, tmp_path: Path, stock_db: str) -> None:
    """A crashed process's lock can outlive it for a moment (a child it was forking holds
    the descriptor until it runs its program): recovery waits for it a little, rather
    than report the promotion in doubt, and still reports a holder that stays."""
    changes = changeset(remote, tmp_path, rows=rename(), trace="brief-holder")
    assert crash_at("after-commit", changes, config(remote, stock_db), tmp_path) == 137
    [journal] = Journal.pending()
    hold = ("import fcntl, os, sys, time; d = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(d, fcntl.LOCK_EX); print('held', flush=True); "
            "time.sleep(float(sys.argv[2]))")
    for seconds, expected in ((30.0, ["in doubt"]), (1.0, ["committed"])):
        with subprocess.Popen([sys.executable, "-c", hold, str(journal.lock_path),
                               str(seconds)], stdout=subprocess.PIPE, text=True) as holder:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            try:
                assert [r.decision for r in recover()] == expected
            finally:
                holder.kill()
    assert no_journal_left()


SCENARIOS = [("stock_db", "after-commit", "branch-deleted"),
             ("stock_db", "after-push", "built-on"),
             ("stock_db", "after-push", "unchanged"),
             ("twophase_db", "after-push", "branch-deleted")]


@pytest.mark.parametrize(("database", "step", "world"), SCENARIOS,
                         ids=["-".join(s) for s in SCENARIOS])
def test_recovery_killed_at_a_random_moment_then_run_again_settles_all_or_nothing(
        shop_repo: Path, tmp_path: Path, database: str, step: str, world: str,
        request: pytest.FixtureRequest) -> None:
    server: ServerAddress = request.getfixturevalue(
        "target_server_2pc" if database == "twophase_db" else "target_server")
    chance = random.Random(f"{database}-{step}-{world}")
    for attempt in range(4):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        repo = folder / "remote.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(repo)], check=True)
        dsn = server.fresh_database(f"rk_{database[:5]}_{step[6:]}_{world[:5]}_{attempt}"
                                    .replace("-", "_"), SCHEMA)
        trace = f"rk{attempt}-{database[:5]}-{step}-{world}"
        changes = changeset(repo, folder, rows=rename(), trace=trace)
        head, branch = changes.workspace.head, f"refs/heads/harness/{trace}"
        assert crash_at(step, changes, config(repo, dsn), folder) == 137
        if world == "branch-deleted" and branch in refs(repo):
            git(repo, "update-ref", "-d", branch)
        elif world == "built-on":
            _build_on(repo, folder, branch)
        killed = subprocess.Popen(RECOVER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chance.uniform(0.05, 0.4))
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        settled = recover()
        assert [r.decision for r in settled] in ([], ["committed"], ["rolled back"]), settled
        promoted = items(dsn) == AFTER
        assert promoted or items(dsn) == BEFORE
        assert any(subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor",
                                   head, sha], check=False).returncode == 0
                   for sha in refs(repo).values()) == promoted
        receipts = receipts_of(trace)
        assert [p.name.endswith(".json") for p in receipts] == ([True] if promoted else [])
        assert no_journal_left()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() == (0,)
        if promoted:
            at_head = {ref for ref, sha in refs(repo).items() if sha == head}
            assert set(json.loads(receipts[0].read_text())["refs"]) == at_head
            assert revert(receipts[0]).outcome == "reverted"
            assert items(dsn) == BEFORE


def test_a_journal_settled_while_recovery_lists_them_is_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = state_dir("journal")
    ghost = folder / "ghost-00000000.json"
    ghost.write_text("{}")
    real_stat = Path.stat

    def settled_meanwhile(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == ghost.name:
            ghost.unlink(missing_ok=True)  # its promoter (or a recovery) finished it
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", settled_meanwhile)
    try:
        # Only the ghost is this test's: a journal another test left is not its business.
        assert ghost.stem not in [r.id for r in recover()]
    finally:
        ghost.unlink(missing_ok=True)


def test_a_journal_that_cannot_be_read_is_reported_not_skipped() -> None:
    bad = state_dir("journal") / "torn-00000000.json"
    bad.write_text('{"id": "torn-00000000", "state": "prepa')
    try:
        [settled] = recover()
        assert settled.decision == "in doubt" and settled.error
        assert settled.error.startswith(f"{bad} cannot be read as a journal: ")
        assert bad.exists(), "kept for a hand to settle"
    finally:
        bad.unlink(missing_ok=True)
        bad.with_suffix(".lock").unlink(missing_ok=True)


@pytest.mark.parametrize("database", ["stock_db", "twophase_db"])
def test_a_harness_branch_that_already_exists_is_refused_and_left_alone(
        remote: Path, tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    """harness/<trace id> exists already (an older run's, or someone's) at an ancestor of the
    head: a plain push would fast-forward it, and undoing would then delete it. The
    promotion is refused, nothing changed, the branch where it was."""
    dsn = request.getfixturevalue(database)
    changes = changeset(remote, tmp_path, rows=rename(), trace=f"stale-{database}")
    branch = f"refs/heads/harness/stale-{database}"
    git(remote, "update-ref", branch, changes.workspace.base)
    before = refs(remote)
    result = promote(changes, config(remote, dsn))
    assert result.outcome == "failed"
    assert result.error == (f"{branch} already exists on the remote (at "
                            f"{changes.workspace.base}); delete it or promote under another "
                            "trace id; nothing changed")
    assert refs(remote) == before and items(dsn) == BEFORE and no_journal_left()
    assert receipts_of(f"stale-{database}") == []


def test_a_push_of_a_new_ref_that_appeared_meanwhile_changes_nothing(
        remote: Path, tmp_path: Path) -> None:
    """The check before the push and the push itself are apart: the push asks for the ref
    to be new (compare-and-swap), so one created in between is not moved."""
    base, _, bundle = _commits(remote, tmp_path)
    git(remote, "update-ref", "refs/heads/harness/appeared", base)
    with pytest.raises(promote_git.PushError, match="atomic push failed for ref refs/heads/harness/appeared"):
        promote_git.push(bundle, target=str(remote), base=base,
                         refs=["refs/heads/harness/appeared"])
    assert refs(remote)["refs/heads/harness/appeared"] == base


AUDITED = """
CREATE TABLE audit (id serial PRIMARY KEY, what text NOT NULL);
CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (what) VALUES (NEW.name); RETURN NULL; END $$;
CREATE TRIGGER noted AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION note()
"""


def test_fire_mode_applied_again_by_a_role_that_may_not_silence_triggers_fires_them_once(
        remote: Path, tmp_path: Path, target_server: ServerAddress) -> None:
    """Fire mode, a role with DML only (the usual reason for fire mode), killed after the
    push with work built on the harness branch: the receipt's rows (triggers' effects
    included) cannot be written with the triggers silent, so recovery writes the change set
    as it was asked for and lets the triggers fire once, and the receipt records that."""
    owner = target_server.fresh_database("recovery_fire_dml", SCHEMA)
    with psycopg.connect(owner) as conn:
        conn.execute(AUDITED)
    dsn = application_role(target_server, "recovery_fire_dml")
    changes = changeset(remote, tmp_path, rows=rename(), trace="fire-dml")
    firing = parse_config(json.dumps({
        "orchestrator": {"blast_radius": {"max_commits": 5, "max_database_rows": 10,
                                          "dry_run": False}},
        "target": {"repo": str(remote), "database": dsn},
        "promotion": {"triggers": "fire"}}))
    assert crash_at("after-push", changes, firing, tmp_path) == 137
    _build_on(remote, tmp_path, "refs/heads/harness/fire-dml")
    [settled] = recover()
    assert settled.decision == "committed", settled.detail
    assert "the role may not silence the target's triggers: the change set was written as " \
           "asked and they fired once, as at the promotion; the receipt records what they " \
           "wrote" in settled.detail
    assert items(owner) == AFTER
    with psycopg.connect(owner) as conn:
        audit = conn.execute("SELECT id, what FROM audit ORDER BY id").fetchall()
    assert sorted(what for _, what in audit) == ["three", "uno"], "one audit row per write"
    receipt = json.loads(Path(settled.receipt or "").read_text())
    recorded = receipt["rows"]["tables"]["public.audit"]["inserted"]
    assert sorted((row["id"], row["what"]) for row in recorded) == audit
    assert no_journal_left()


DDL_ROWS = RowDelta({"public.items": TableDelta("public.items", ["id"], inserted=[
    {"id": 3, "name": "three", "note": "n"}])},
    [DdlStatement("ALTER TABLE", "table", "public.items",
                  "ALTER TABLE items ADD COLUMN note text")])


def _has_note(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name = "
                            "'items' AND column_name = 'note'").fetchone() is not None


@pytest.mark.parametrize("database", ["stock_db", "twophase_db"])
def test_schema_changes_crashed_at_every_step_land_with_the_rows_and_commits_or_not_at_all(
        shop_repo: Path, tmp_path: Path, database: str, request: pytest.FixtureRequest
        ) -> None:
    """allow_ddl: the DDL rides in the promotion's transaction, so it is committed or
    aborted with the rows. A revert inverts the rows and says the DDL stays."""
    server: ServerAddress = request.getfixturevalue(
        "target_server_2pc" if database == "twophase_db" else "target_server")
    for step in FAILPOINTS:
        folder = tmp_path / step
        folder.mkdir()
        repo = folder / "remote.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(repo)], check=True)
        dsn = server.fresh_database(f"ddl_{database[:5]}_{step[6:]}".replace("-", "_"), SCHEMA)
        changes = changeset(repo, folder, rows=DDL_ROWS, trace=f"ddl-{database[:5]}-{step}")
        crashed = crash_at(step, changes, config(repo, dsn, allow_ddl=True), folder)
        settled = recover()
        assert [r.decision for r in settled] in ([], ["committed"], ["rolled back"])
        assert (crashed == 137) == bool(settled), step  # a step the protocol has not: no crash
        promoted = _has_note(dsn)
        assert len(items(dsn)) == (3 if promoted else 2), step
        assert (changes.workspace.head in refs(repo).values()) == promoted, step
        assert no_journal_left()
        receipts = receipts_of(f"ddl-{database[:5]}-{step}")
        assert len(receipts) == (1 if promoted else 0)
        if promoted:
            undone = revert(receipts[0])
            assert undone.outcome == "reverted" and items(dsn) == BEFORE
            assert undone.notes == ["the promotion's schema changes were not undone (a revert "
                                    "inverts rows, not DDL): ALTER TABLE items ADD COLUMN "
                                    "note text"]


def test_a_revert_killed_after_moving_the_refs_completes_when_run_again(
        remote: Path, tmp_path: Path, stock_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Revert moves the refs, then commits the inverse rows; killed in between, the rows are
    still promoted and the refs are back. Run again, it finds each ref already where it is
    to go back to and completes."""
    changes = changeset(remote, tmp_path, rows=rename(), trace="revert-killed")
    result = promote(changes, config(remote, stock_db))
    assert result.outcome == "promoted" and result.receipt
    module = importlib.import_module("harness.promote.revert")
    moving = module.git.move_refs

    def moved_then_killed(target: str, moves: dict[str, Any]) -> None:
        moving(target, moves)
        raise SystemExit("killed")  # its connection closes: the inverse rows roll back

    monkeypatch.setattr(module.git, "move_refs", moved_then_killed)
    with pytest.raises(SystemExit):
        revert(Path(result.receipt))
    monkeypatch.setattr(module.git, "move_refs", moving)
    assert items(stock_db) == AFTER
    assert refs(remote)["refs/heads/main"] == changes.workspace.base
    assert revert(Path(result.receipt)).outcome == "reverted"
    assert items(stock_db) == BEFORE
