"""One plain `harness gc` after processes were SIGKILLed at random points leaves nothing of
them: containers, volumes, sandbox databases and roles, half-built baselines, workspaces,
push scratch folders (of this version and older ones), yet keeps a folder a push orphaned by
a kill still works in."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import pytest

from harness.fixtures import fixture_seed
from harness.home import SCRATCH, scratch_owner, state_dir
from harness.sandbox import labels
from harness.sandbox.postgres import ServerAddress

pytestmark = [pytest.mark.docker, pytest.mark.postgres]


def _start(argv: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=cwd)


def _kill(process: subprocess.Popen[bytes], after: float) -> int:
    time.sleep(after)
    pid = process.pid
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return pid


def test_one_gc_after_random_kills_leaves_nothing_of_the_killed(
        docker_client: docker.DockerClient, pg_server: ServerAddress, shop_repo: Path,
        tmp_path: Path) -> None:
    seed = str(fixture_seed("shop"))
    harness = [sys.executable, "-m", "harness.cli"]
    chance = random.Random(14)
    killed: set[int] = set()
    # Sandboxes with a database, killed while opening, working or closing.
    for _ in range(5):
        process = _start([*harness, "exec", "--repo", str(shop_repo), "--db", seed, "--",
                          "sleep 30"])
        killed.add(_kill(process, chance.uniform(0.4, 3.5)))
    # A baseline build killed half way (its seed sleeps while building).
    slow = tmp_path / "slow.sql"
    slow.write_text("CREATE TABLE t (a int);\nSELECT pg_sleep(30);\n")
    killed.add(_kill(_start([*harness, "db", "snapshot", "--source", str(slow)]), 2.5))
    # A push killed with its scratch repository open.
    code = ("from harness.home import scratch_folder\nimport time\n"
            "with scratch_folder('push') as f:\n    (f / 'x').write_text('x'); time.sleep(60)")
    killed.add(_kill(_start([sys.executable, "-c", code]), 1.5))
    # A seed with a syntax error cleans up after itself.
    broken = tmp_path / "broken.sql"
    broken.write_text("CREATE TABLE t (a int);\nCREATE TABLE oops (;\n")
    failed = subprocess.run([*harness, "db", "snapshot", "--source", str(broken)],
                            capture_output=True, text=True, check=False)
    assert failed.returncode == 2 and "oops" in failed.stderr

    done = subprocess.run([*harness, "gc", "--json"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    left_containers = [c.name for c in docker_client.containers.list(
        all=True, filters={"label": labels.SANDBOX}, ignore_removed=True)
        if c.labels.get(labels.PID, "").isdigit() and int(c.labels[labels.PID]) in killed]
    assert left_containers == []
    with pg_server.connect() as conn:
        databases = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE 'sb\\_%' OR datname LIKE '%\\_building'").fetchall()
        orphan_roles = conn.execute(
            "SELECT rolname FROM pg_roles r WHERE rolname LIKE 'sb\\_%' AND NOT EXISTS "
            "(SELECT 1 FROM pg_database d WHERE d.datname = r.rolname)").fetchall()
    ours = [name for name, comment in databases
            if name.endswith("_building") or json.loads(comment or "{}").get("owner_pid")
            in killed]
    assert ours == [], report
    assert orphan_roles == []
    assert [f.name for f in state_dir(SCRATCH).iterdir()
            if scratch_owner(f).isdigit() and int(scratch_owner(f)) in killed] == []
    assert [f.name for f in state_dir("workspaces").iterdir()
            if (f / "owner.pid").is_file() and (f / "owner.pid").read_text().strip().isdigit()
            and int((f / "owner.pid").read_text()) in killed] == []
    assert report["scratch"], "the killed push's folder was found and removed"
    workspaces = state_dir("workspaces")
    assert [image.name for image in state_dir("disks").glob("*.img")
            if not (workspaces / image.stem).exists()] == [], "no disk image outlives its sandbox"
    assert [line for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(f"{workspaces}/")
            and not (Path(line.split()[1]) / "owner.pid").exists()] == []


def test_gc_drops_an_orphan_role_and_old_push_folders_but_not_one_a_push_still_uses(
        docker_client: docker.DockerClient, pg_server: ServerAddress) -> None:
    harness = [sys.executable, "-m", "harness.cli", "gc", "--json"]
    role = f"sb_gc_orphan_{os.getpid()}"
    with pg_server.connect() as conn:
        # A sandbox's pair of roles, as a kill between dropping its database and its roles
        # leaves them: the undo role's grant on a parameter blocks a plain DROP ROLE.
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'CREATE ROLE "{role}_undo" LOGIN IN ROLE "{role}"')
        conn.execute(f'GRANT SET ON PARAMETER session_replication_role TO "{role}_undo"')
    dead = subprocess.Popen(["true"])
    dead.wait()
    # A promoter killed during its push: the push it started still works in its folder.
    in_use = Path(tempfile.mkdtemp(prefix=f"push-{dead.pid}-", dir=state_dir(SCRATCH)))
    (in_use / "repo.git").mkdir()
    abandoned = Path(tempfile.mkdtemp(prefix=f"push-{dead.pid}-", dir=state_dir(SCRATCH)))
    # Older versions pushed from unowned folders in the temporary folder.
    old = Path(tempfile.mkdtemp(prefix="harness-push-"))
    old_in_use = Path(tempfile.mkdtemp(prefix="harness-push-"))
    an_hour_ago = time.time() - 3600
    for folder in (old, old_in_use):
        os.utime(folder, (an_hour_ago, an_hour_ago))
    pushes = [_start(["sleep", "60"], cwd=in_use / "repo.git"), _start(["sleep", "60"],
                                                                       cwd=old_in_use)]
    try:
        done = subprocess.run(harness, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        with pg_server.connect() as conn:
            left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s",
                                (f"{role}%",)).fetchall()
        assert left == [] and {role, f"{role}_undo"} <= set(report["roles"])
        assert abandoned.name in report["scratch"] and not abandoned.exists()
        assert str(old) in report["scratch"] and not old.exists()
        assert in_use.is_dir() and in_use.name not in report["scratch"], "a push works there"
        assert old_in_use.is_dir() and str(old_in_use) not in report["scratch"]
    finally:
        for push in pushes:
            os.killpg(push.pid, signal.SIGKILL)
            push.wait()
    done = subprocess.run(harness, capture_output=True, text=True, check=False)
    report = json.loads(done.stdout)
    assert in_use.name in report["scratch"] and not in_use.exists(), "its push is gone"
    assert str(old_in_use) in report["scratch"] and not old_in_use.exists()
