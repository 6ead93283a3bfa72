"""Promotion survives every crash: a kill at each step of both protocols, then whatever the
world does meanwhile (someone advances the target branch, deletes the harness branch,
touches a promoted row), then `--recover`. Afterwards the repository and the database are
both fully promoted or both untouched, a receipt exists exactly when promoted, and
nothing prepared or journaled is left. Then the same with SIGKILLs at random moments drawn
from the time a promotion is in flight."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from harness.changeset import ChangeSet
from harness.config import load_config
from harness.episode import Episode
from harness.fixtures import fixture_seed
from harness.home import state_dir
from harness.promote import recover, revert
from harness.promote.promotion import FAILPOINTS
from harness.sandbox.postgres import ServerAddress
from tests.fix_git import git
from tests.fix_pg import application_role

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

WORK = [
    {"tool": "shell_exec", "parameters": {"command": "echo 'RATE = 2' >> shop/orders.py"}},
    {"tool": "git_commit", "parameters": {"message": "Raise the rate"}},
    {"tool": "db_mutate", "parameters": {"sql": "UPDATE orders SET status = 'void' "
                                                "WHERE id IN (3, 4)"}},
    {"tool": "db_mutate", "parameters": {"sql": "INSERT INTO users (email) "
                                                "VALUES ('crash@example.com')"}},
    {"tool": "db_mutate", "parameters": {"sql": "DELETE FROM order_lines "
                                                "WHERE order_id = 7 AND line = 3"}},
]

STEPS = {
    "single-phase": [s for s in FAILPOINTS if s != "after-prepare"],
    "two-phase": [s for s in FAILPOINTS if s != "after-fast-forward"],
}
WORLD = ["unchanged", "target-advanced", "harness-branch-deleted"]

PROMOTE = """
import json, sys
from harness.changeset import ChangeSet
from harness.config import load_config
from harness.promote import promote
result = promote(ChangeSet.from_dict(json.load(open(sys.argv[1]))), load_config(sys.argv[2]))
print(json.dumps(result.to_dict(), default=str))
"""


@pytest.fixture(scope="module")
def templates(target_server: ServerAddress, target_server_2pc: ServerAddress
              ) -> dict[str, tuple[ServerAddress, str]]:
    """The shop database on each target server, to copy per case."""
    for server in (target_server, target_server_2pc):
        server.fresh_database("crash_template")
        server.run_script(fixture_seed("shop"), "crash_template")
    return {"single-phase": (target_server, "crash_template"),
            "two-phase": (target_server_2pc, "crash_template")}


@pytest.fixture(scope="module")
def saved_changeset(templates: dict[str, tuple[ServerAddress, str]], shop_repo: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One change set (a commit and rows), made once and saved as JSON."""
    server, template = templates["single-phase"]
    remote = tmp_path_factory.mktemp("crash") / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(remote)], check=True)
    config = load_config({"target": {"repo": str(remote),
                                     "database": server.conninfo(template)},
                          "orchestrator": {"blast_radius": {"dry_run": False}}})
    with Episode(config) as episode:
        for action in WORK:
            assert episode.act(action).status == "ok"
    changeset = episode.close()
    path = tmp_path_factory.mktemp("crash") / "changeset.json"
    path.write_text(json.dumps(changeset.to_dict(), default=str))
    return path


class Case:
    """One target database and one bare remote, fresh, for one crash."""

    def __init__(self, server: ServerAddress, template: str, shop_repo: Path, tmp_path: Path,
                 name: str) -> None:
        self.server = server
        self.dbname = "crash_" + hashlib.sha256(name.encode()).hexdigest()[:12]
        with server.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.dbname}" TEMPLATE "{template}"')
        self.superuser = server.conninfo(self.dbname)
        self.dsn = application_role(server, self.dbname)  # DML only
        self.remote = tmp_path / "remote.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(self.remote)],
                       check=True)
        self.base = git(self.remote, "rev-parse", "main")
        self.config = tmp_path / "harness.yaml"
        self.config.write_text(yaml.safe_dump({
            "orchestrator": {"blast_radius": {"dry_run": False, "max_database_rows": 10}},
            "target": {"repo": str(self.remote), "database": self.dsn},
            "promotion": {"fast_forward": True}}))

    def promote(self, changeset: Path, crash: str | None = None, *, kill_after: float | None = None
                ) -> subprocess.CompletedProcess[str] | None:
        env = {**os.environ, **({"HARNESS_PROMOTE_CRASH": crash} if crash else {})}
        argv = [sys.executable, "-c", PROMOTE, str(changeset), str(self.config)]
        if kill_after is None:
            return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(kill_after)
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None

    def database_promoted(self) -> bool:
        with psycopg.connect(self.superuser) as conn:
            user = conn.execute("SELECT 1 FROM users WHERE email = 'crash@example.com'"
                                ).fetchone()
            line = conn.execute("SELECT 1 FROM order_lines WHERE order_id = 7 AND line = 3"
                                ).fetchone()
        assert (user is None) == (line is not None), "the rows were applied in part"
        return user is not None

    def repo_promoted(self, head: str) -> bool:
        refs = git(self.remote, "for-each-ref", "--format=%(objectname)").split()
        return any(subprocess.run(["git", "-C", str(self.remote), "merge-base",
                                   "--is-ancestor", head, ref], check=False).returncode == 0
                   for ref in refs)

    def prepared(self) -> int:
        with psycopg.connect(self.superuser) as conn:
            row = conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()
        return int(row[0]) if row else 0

    def change_the_world(self, world: str, tmp_path: Path, trace_id: str) -> None:
        if world == "target-advanced":
            other = tmp_path / "other"
            subprocess.run(["git", "clone", "-q", str(self.remote), str(other)], check=True)
            git(other, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q",
                "--allow-empty", "-m", "someone else")
            git(other, "push", "-q", "origin", "main")
        elif world == "harness-branch-deleted":
            branch = f"refs/heads/harness/{trace_id}"
            if git(self.remote, "for-each-ref", branch):
                git(self.remote, "update-ref", "-d", branch)

    def touch_a_row(self) -> None:
        """Someone changes a row the promotion touches (a prepared transaction may still
        hold it: then the change waits, times out and is not made)."""
        with psycopg.connect(self.superuser) as conn:
            conn.execute("SET lock_timeout = '300ms'")
            try:
                conn.execute("UPDATE orders SET total = total + 1 WHERE id = 3")
            except psycopg.errors.LockNotAvailable:
                conn.rollback()


def journals() -> list[Path]:
    return sorted(state_dir("journal").glob("*.json"))


def receipts_for(trace_id: str) -> list[Path]:
    return [p for p in state_dir("receipts").glob(f"{trace_id}-*.json")]


def pending_for(trace_id: str) -> list[Path]:
    return [p for p in state_dir("receipts").glob(f"{trace_id}-*.json.pending")]


@pytest.fixture()
def clean_receipts(saved_changeset: Path) -> Iterator[str]:
    trace_id = json.loads(saved_changeset.read_text())["trace_id"]
    for path in receipts_for(trace_id) + pending_for(trace_id):
        path.unlink()
    yield trace_id


CASES = [(protocol, step, world, touched) for protocol, steps in STEPS.items()
         for step in steps for world in WORLD for touched in (False, True)]


@pytest.mark.parametrize(("protocol", "step", "world", "touched"), CASES,
                         ids=[f"{p}-{s}-{w}-{'touched' if t else 'quiet'}"
                              for p, s, w, t in CASES])
def test_a_crash_at_every_step_is_settled_all_or_nothing(
        protocol: str, step: str, world: str, touched: bool, saved_changeset: Path,
        templates: dict[str, tuple[ServerAddress, str]], shop_repo: Path, tmp_path: Path,
        clean_receipts: str) -> None:
    server, template = templates[protocol]
    case = Case(server, template, shop_repo, tmp_path, f"{protocol}-{step}-{world}-{touched}")
    head = json.loads(saved_changeset.read_text())["workspace"]["head"]
    done = case.promote(saved_changeset, step)
    assert done is not None and done.returncode == 137, done.stderr if done else ""
    case.change_the_world(world, tmp_path, clean_receipts)
    if touched:
        case.touch_a_row()
    ours = sorted(ref for ref in git(case.remote, "for-each-ref", "--format=%(refname)",
                                     "--points-at", head).split())
    settled = recover()
    assert [r.decision for r in settled] in (["committed"], ["rolled back"]), settled
    if settled[0].decision == "rolled back":
        # Undoing says what it took off the remote: exactly the refs at the pushed head.
        assert [line for line in settled[0].detail if line.startswith("removed from")] == (
            [f"removed from the remote (compare-and-swap): {', '.join(ours)}"] if ours
            else []), settled[0].detail
    assert [r.protocol for r in settled] == [protocol]
    promoted = case.database_promoted()
    assert case.repo_promoted(head) == promoted, (settled, world)
    assert settled[0].decision == ("committed" if promoted else "rolled back")
    assert len(receipts_for(clean_receipts)) == (1 if promoted else 0)
    assert pending_for(clean_receipts) == []
    assert journals() == [] and case.prepared() == 0
    if promoted and world == "unchanged" and not touched:
        # A promotion recovery committed can be reverted like any other.
        [receipt] = receipts_for(clean_receipts)
        assert revert(receipt).outcome == "reverted"
        assert not case.database_promoted() and not case.repo_promoted(head)


def _in_flight(case: Case, changeset: Path, *, kill_after: float | None = None
               ) -> tuple[float, bool]:
    """Promote in a child process; from the moment its journal appears (the protocol has
    begun), kill it `kill_after` seconds later, or time how long the journal lives. Returns
    (that time, whether a journal was left behind)."""
    argv = [sys.executable, "-c", PROMOTE, str(changeset), str(case.config)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = state_dir("journal")
    try:
        while not any(folder.glob("*.json")):
            assert process.poll() is None, "the promotion ended before it began"
            time.sleep(0.0005)
        began = time.monotonic()
        if kill_after is not None:
            time.sleep(kill_after)
            process.send_signal(signal.SIGKILL)
        else:
            while any(folder.glob("*.json")):
                time.sleep(0.0005)
        lived = time.monotonic() - began
    finally:
        process.wait()
    if kill_after is None:
        assert process.returncode == 0
    return lived, bool(journals())


KILLS = 10
"""Kills per protocol: one drawn uniformly in each tenth of the time a promotion is in
flight, so that every part of it (push, commit, fast-forward) is hit, in random order."""


@pytest.mark.parametrize("protocol", ["single-phase", "two-phase"])
def test_a_kill_at_a_random_moment_in_flight_is_settled_all_or_nothing(
        protocol: str, saved_changeset: Path, templates: dict[str, tuple[ServerAddress, str]],
        shop_repo: Path, tmp_path: Path, clean_receipts: str) -> None:
    """SIGKILL at moments drawn uniformly from the time a promotion is in flight (its
    journal's life, measured here on uninterrupted runs first), one in each tenth of it, so
    that kills land inside every step: the push, its gate, the commit, the fast-forward."""
    server, template = templates[protocol]
    head = json.loads(saved_changeset.read_text())["workspace"]["head"]
    assert journals() == []
    windows = []
    for run in range(2):
        folder = tmp_path / f"measure-{run}"
        folder.mkdir()
        case = Case(server, template, shop_repo, folder, f"{protocol}-measure-{run}")
        windows.append(_in_flight(case, saved_changeset)[0])
        assert case.database_promoted() and case.repo_promoted(head)
        for path in receipts_for(clean_receipts):
            path.unlink()
    window = min(windows)
    chance = random.Random(protocol)
    tenths = list(range(KILLS))
    chance.shuffle(tenths)
    interrupted, decisions = 0, []
    for attempt, tenth in enumerate(tenths):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        case = Case(server, template, shop_repo, folder, f"{protocol}-random-{attempt}")
        delay = chance.uniform(tenth, tenth + 1) * window / KILLS
        _, left = _in_flight(case, saved_changeset, kill_after=delay)
        interrupted += left
        settled = recover()
        decisions += [r.decision for r in settled]
        assert len(settled) == (1 if left else 0), settled
        promoted = case.database_promoted()
        assert case.repo_promoted(head) == promoted, settled
        assert [r.decision for r in settled] in ([], ["committed" if promoted
                                                      else "rolled back"]), settled
        receipts = receipts_for(clean_receipts)
        assert len(receipts) == (1 if promoted else 0)
        if receipts:
            assert json.loads(receipts[0].read_text())["rows"] is not None, "revertible"
        assert pending_for(clean_receipts) == [] and journals() == []
        assert case.prepared() == 0
        for path in receipts:
            path.unlink()
    seen = f"{interrupted} of {KILLS} kills in a {window:.3f} s promotion: {decisions}"
    assert interrupted >= KILLS - 2, seen  # the last tenth may find a quicker run ended
    assert "rolled back" in decisions, f"no kill landed before the commit point; {seen}"
    if protocol == "single-phase":  # two-phase is past its commit point for a few ms only
        assert "committed" in decisions, f"no kill landed after the commit point; {seen}"


def test_without_a_crash_both_protocols_promote_and_say_which_ran(
        saved_changeset: Path, templates: dict[str, tuple[ServerAddress, str]],
        shop_repo: Path, tmp_path: Path, clean_receipts: str) -> None:
    head = json.loads(saved_changeset.read_text())["workspace"]["head"]
    for protocol, (server, template) in templates.items():
        folder = tmp_path / protocol
        folder.mkdir()
        case = Case(server, template, shop_repo, folder, f"{protocol}-clean")
        done = case.promote(saved_changeset)
        assert done is not None and done.returncode == 0, done.stderr if done else ""
        result: dict[str, Any] = json.loads(done.stdout)
        assert (result["outcome"], result["protocol"]) == ("promoted", protocol)
        assert case.database_promoted() and case.repo_promoted(head)
        assert git(case.remote, "rev-parse", "main") == head, "fast-forwarded"


def test_a_saved_change_set_round_trips(saved_changeset: Path) -> None:
    data = json.loads(saved_changeset.read_text())
    again = ChangeSet.from_dict(data)
    assert json.loads(json.dumps(again.to_dict(), default=str)) == data
