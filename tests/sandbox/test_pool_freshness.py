"""The pool never hands out a sandbox made from an older seed (however the file is named,
whatever its size and time say) or an older revision of a remote repository, and its
filler does not spin when idle (found by a red team)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.fixtures import fixture_repo, fixture_seed
from harness.sandbox import Sandbox, SandboxPool
from harness.sandbox.settings import SandboxSettings

SETTINGS = SandboxSettings(disk_limit=None)
MARKER = ("-- v1 padding\nCREATE TABLE version_marker (v text);\n"
          "INSERT INTO version_marker VALUES ('v1');\n")


def marker(sandbox: Sandbox) -> str:
    assert sandbox.database is not None
    with sandbox.database.connect() as conn:
        return conn.execute("SELECT v FROM version_marker").fetchone()[0]


@pytest.mark.docker
@pytest.mark.parametrize("name,keep_mtime", [("shop.seed", False), ("shop.sql", True)])
def test_a_changed_seed_is_never_handed_out(tmp_path: Path, name: str, keep_mtime: bool
                                            ) -> None:
    """A seed not named *.sql (Source.parse takes any file) is never checked; a .sql one
    changed to the same size within one mtime tick (emulated: mtime restored) neither."""
    repo = str(fixture_repo())
    original = Path(fixture_seed("shop")).read_text()
    seed = tmp_path / name
    seed.write_text(original + MARKER)
    with SandboxPool(1) as pool:
        pool.warm(repo, settings=SETTINGS, database=str(seed), wait=True)
        stat = seed.stat()
        seed.write_text(original + MARKER.replace("v1", "v2"))
        if keep_mtime:
            os.utime(seed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        sandbox = pool.acquire(repo, settings=SETTINGS, database=str(seed))
        try:
            assert marker(sandbox) == "v2", "a sandbox of the old seed was handed out"
        finally:
            sandbox.close()


@pytest.mark.docker
def test_a_moved_branch_of_a_remote_repository_is_never_handed_out(tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(fixture_repo()), str(origin)],
                   check=True)
    branch = subprocess.run(["git", "-C", str(origin), "symbolic-ref", "--short", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    url = f"file://{origin}"
    with SandboxPool(1) as pool:
        pool.warm(url, ref=branch, settings=SETTINGS, wait=True)
        work = tmp_path / "work"
        subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
        subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t",
                        "commit", "-q", "--allow-empty", "-m", "moved"], check=True)
        subprocess.run(["git", "-C", str(work), "push", "-q", "origin", branch], check=True)
        moved = subprocess.run(["git", "-C", str(origin), "rev-parse", branch],
                               capture_output=True, text=True, check=True).stdout.strip()
        sandbox = pool.acquire(url, ref=branch, settings=SETTINGS)
        try:
            assert sandbox.workspace.base == moved, "a sandbox of the old commit was handed out"
        finally:
            sandbox.close()


@pytest.mark.parametrize("expiry", [0, -1])
def test_an_expiry_that_would_make_the_filler_spin_is_refused(expiry: float) -> None:
    with pytest.raises(ValueError, match="idle_expiry_s must be more than 0"):
        SandboxPool(1, idle_expiry_s=expiry)


def test_an_idle_pool_does_not_spin() -> None:
    pool = SandboxPool(1, idle_expiry_s=0.01)
    try:
        cpu = time.process_time()
        time.sleep(1.5)
        assert time.process_time() - cpu < 0.3, "the idle pool's filler spins a CPU"
    finally:
        pool.close()
