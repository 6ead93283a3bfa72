"""The warm pool with a real engine, real clones and a real database server: a handout is
a sandbox made ahead and bound to its user; nothing is ever handed out twice, stale or
expired; and nothing outlives the pool, or its process killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import docker
import pytest

from harness.config import parse_config
from harness.episode import EpisodePool
from harness.fixtures import fixture_seed
from harness.sandbox import SandboxPool, labels
from harness.sandbox.settings import SandboxSettings
from tests.fix_git import git
from tests.fix_pg import ServerAddress

pytestmark = [pytest.mark.docker]

SETTINGS = SandboxSettings(disk_limit=None)


def exists(client: docker.DockerClient, sandbox_id: str) -> bool:
    return bool(client.containers.list(all=True, ignore_removed=True, filters={
        "label": f"{labels.SANDBOX}={sandbox_id}"}))


def containers_of(client: docker.DockerClient, sandbox_ids: list[str]) -> list[str]:
    return [i for i in sandbox_ids if exists(client, i)]


def databases(pg: ServerAddress, names: list[str]) -> list[str]:
    with pg.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname = "
                                           "ANY(%s)", (names,))]


def wait_until(condition: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def fresh_repo(tmp_path: Path, shop_repo: Path) -> Path:
    repo = tmp_path / "origin"
    subprocess.run(["git", "clone", "-q", str(shop_repo), str(repo)], check=True)
    return repo


def test_a_handout_is_made_ahead_bound_to_its_user_and_never_reused(
        docker_client: docker.DockerClient, shop_repo: Path, tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path, shop_repo)
    with SandboxPool(size=1) as pool:
        pool.warm(repo, settings=SETTINGS, wait=True)
        assert pool.ready() == 1
        ready_id = next(iter(pool._ready.values()))[0].sandbox.id
        started = time.monotonic()
        first = pool.acquire(repo, settings=SETTINGS, environment={"WHO": "first"})
        handout_s = time.monotonic() - started
        assert first.id == ready_id and pool.stats.handed_out == 1 and pool.stats.cold == 0
        assert handout_s < 1.0, "a handout binds, it does not open"
        assert first.exec("echo $WHO").stdout == "first\n"
        first.exec("echo scratch > left-behind.txt")
        # The pool makes another; the first is never handed out again.
        assert wait_until(lambda: pool.ready() == 1)
        second = pool.acquire(repo, settings=SETTINGS, environment={"WHO": "second"})
        assert second.id != first.id
        assert second.exec("echo $WHO; ls left-behind.txt").stdout == "second\n"
        first_id = first.id
        first.close()
        assert not exists(docker_client, first_id), "returning a sandbox destroys it"
        second.close()
    assert pool.stats.made >= 2
    left = [c.name for c in docker_client.containers.list(all=True, filters={
        "label": f"{labels.KIND}=sandbox"}) if c.labels.get(labels.PID) == str(os.getpid())]
    assert left == [], "closing the pool removed the ready ones"


def test_a_moved_branch_or_a_changed_seed_is_never_handed_out(
        docker_client: docker.DockerClient, pg_server: ServerAddress, shop_repo: Path,
        tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path, shop_repo)
    seed = tmp_path / "seed.sql"
    seed.write_text(fixture_seed("shop").read_text())
    with SandboxPool(size=1) as pool:
        pool.warm(repo, settings=SETTINGS, database=str(seed), wait=True)
        stale = next(iter(pool._ready.values()))[0].sandbox
        stale_db = stale.database.name if stale.database else ""
        (repo / "MOVED.md").write_text("moved\n")
        git(repo, "add", "MOVED.md")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "move")
        moved = pool.acquire(repo, settings=SETTINGS, database=str(seed))
        assert moved.id != stale.id and pool.stats.cold == 1
        assert moved.exec("cat MOVED.md").stdout == "moved\n"
        assert wait_until(lambda: not exists(docker_client, stale.id)), "the stale one is gone"
        assert wait_until(lambda: databases(pg_server, [stale_db]) == [])
        moved.close()
        assert wait_until(lambda: pool.ready() == 1)
        seed.write_text(seed.read_text() + "\nINSERT INTO audit_log (message) VALUES ('new');\n")
        changed = pool.acquire(repo, settings=SETTINGS, database=str(seed))
        assert pool.stats.cold == 2, "a changed seed is a new key"
        with changed.database.connect() as conn:  # type: ignore[union-attr]
            assert conn.execute("SELECT count(*) FROM audit_log WHERE message = 'new'"
                                ).fetchone() == (1,)
        changed.close()


def test_ready_sandboxes_expire_when_idle(docker_client: docker.DockerClient, shop_repo: Path,
                                          tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path, shop_repo)
    with SandboxPool(size=1, idle_expiry_s=1.0) as pool:
        pool.warm(repo, settings=SETTINGS, wait=True)
        made = next(iter(pool._ready.values()))[0].sandbox.id
        assert wait_until(lambda: not exists(docker_client, made), timeout=30)
        assert wait_until(lambda: pool.stats.discarded >= 1) and pool.ready() == 0
        cold = pool.acquire(repo, settings=SETTINGS)
        assert cold.id != made and pool.stats.cold == 1
        cold.close()


def test_episodes_from_a_pool_see_their_own_state_and_trace(shop_repo: Path, tmp_path: Path
                                                            ) -> None:
    config = parse_config(f"""
sandbox: {{disk_limit: null}}
state_injection:
  sources:
    - {{type: env_var, prefix: APP_, values: {{APP_MODE: pooled}}}}
target: {{repo: {shop_repo}, database: {fixture_seed('shop')}}}
""")
    with EpisodePool(config, size=1) as pool:
        pool.warm(wait=True)
        for _ in range(2):
            with pool.episode(trace_path=tmp_path / "t.jsonl") as episode:
                result = episode.act({"tool": "shell_exec", "parameters": {
                    "command": "echo $APP_MODE $HARNESS_TRACE_ID; psql -tAc 'SELECT 1'"}})
                assert result.output["stdout"].split() == ["pooled", episode.trace_id, "1"]
                listed = subprocess.run([sys.executable, "-m", "harness.cli", "ps", "--json"],
                                        capture_output=True, text=True, check=True)
                assert [s["trace_id"] for s in json.loads(listed.stdout)
                        if s["sandbox"] == episode.sandbox.id] == [episode.trace_id]
                mutated = episode.act({"tool": "db_mutate", "parameters": {
                    "sql": "UPDATE orders SET status = 'void' WHERE id = 1"}})
                assert mutated.status == "ok"
                changes = episode.changes()
                assert changes.rows is not None and changes.rows.rows == 1, \
                    "each episode starts from the baseline, not the last one's rows"
        assert pool.sandboxes.stats.handed_out >= 1


CRASHING_OWNER = textwrap.dedent("""
    import json, os, sys, time
    from harness.sandbox.settings import SandboxSettings
    from harness.sandbox import SandboxPool, labels
    pool = SandboxPool(size=2)
    pool.warm(sys.argv[1], settings=SandboxSettings(disk_limit=None), database=sys.argv[2],
              wait=True)
    print(json.dumps([[e.sandbox.id, e.sandbox.database.name] for r in pool._ready.values()
                      for e in r]), flush=True)
    time.sleep(600)
""")


def test_gc_reclaims_a_killed_pools_sandboxes(docker_client: docker.DockerClient,
                                              pg_server: ServerAddress, shop_repo: Path,
                                              tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", CRASHING_OWNER, str(shop_repo),
                              str(fixture_seed("shop"))], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    with owner.stdout:
        made = json.loads(owner.stdout.readline())
    assert len(made) == 2 and containers_of(docker_client, [m[0] for m in made]) == [
        m[0] for m in made]
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "gc", "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert containers_of(docker_client, [m[0] for m in made]) == []
    assert databases(pg_server, [m[1] for m in made]) == []
    with pg_server.connect() as conn:
        roles = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                             ([m[1] for m in made] + [m[1] + "_undo" for m in made],)
                             ).fetchall()
    assert roles == []


def test_a_closed_pool_refuses_and_a_failing_fill_is_reported(shop_repo: Path,
                                                              tmp_path: Path) -> None:
    pool = SandboxPool(size=1)
    with pytest.raises(Exception, match="does not exist"):
        pool.warm(tmp_path / "absent", settings=SETTINGS, wait=True, timeout=60)
    assert pool.stats.failures == 1 and "does not exist" in (pool.stats.last_error or "")
    pool.close()
    with pytest.raises(Exception, match="pool is closed"):
        pool.acquire(shop_repo, settings=SETTINGS)
