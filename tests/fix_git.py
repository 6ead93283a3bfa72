"""Real git repositories: the bundled fixture and generated ones."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from harness.fixtures import fixture_repo


@pytest.fixture(scope="session", autouse=True)
def harness_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private HARNESS_HOME for the session so tests never touch the user's (the one
    given, when HARNESS_TEST_KEEP_SERVERS says sessions share it)."""
    if os.environ.get("HARNESS_TEST_KEEP_SERVERS") and os.environ.get("HARNESS_HOME"):
        return Path(os.environ["HARNESS_HOME"])
    home = tmp_path_factory.mktemp("harness-home")
    os.environ["HARNESS_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def shop_repo(harness_home: Path) -> Path:
    """The bundled fixture repository `shop` as a real git repository."""
    return fixture_repo("shop", fresh=True)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` and return its stdout."""
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def fingerprint(repo: Path) -> str:
    """A digest of every file under the repo's .git (names, modes and bytes) and of its
    work tree: equal fingerprints mean the repository is byte-for-byte unchanged."""
    digest = hashlib.sha256()
    for path in sorted(repo.rglob("*")):
        stat = path.lstat()
        digest.update(f"{path.relative_to(repo)}\0{stat.st_mode}\0{stat.st_uid}\0".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()
