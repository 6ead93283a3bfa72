"""Real git repositories made from the sample trees in `fixtures/repos/`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness.errors import WorkspaceError
from harness.home import state_dir

_FIXED_ENV = {
    "GIT_AUTHOR_NAME": "Fixture Author",
    "GIT_AUTHOR_EMAIL": "fixtures@harness.invalid",
    "GIT_COMMITTER_NAME": "Fixture Author",
    "GIT_COMMITTER_EMAIL": "fixtures@harness.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def fixtures_root() -> Path:
    """The `fixtures/` folder beside the package ($HARNESS_FIXTURES overrides)."""
    override = os.environ.get("HARNESS_FIXTURES")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "fixtures"


def fixture_repo(name: str = "shop", *, fresh: bool = False) -> Path:
    """A git repository of `fixtures/repos/NAME`, built once: one commit per top-level
    entry, in name order, with fixed dates so the ids are reproducible."""
    tree = fixtures_root() / "repos" / name
    if not tree.is_dir():
        raise WorkspaceError(f"no fixture repository {name!r} in {tree.parent}")
    digest = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        digest.update(path.relative_to(tree).as_posix().encode() + b"\0" + path.read_bytes())
    # Named by content: a changed sample tree makes a new repository, never a stale one.
    target = state_dir("fixtures") / f"{name}-{digest.hexdigest()[:10]}"
    if target.exists() and not fresh:
        return target
    with _building(target) as scratch:
        shutil.copytree(tree, scratch, dirs_exist_ok=True)
        _git(scratch, "init", "-q", "-b", "main")
        for day, entry in enumerate(sorted(p.name for p in tree.iterdir()), start=1):
            stamp = f"2026-01-{day:02d}T12:00:00Z"
            _git(scratch, "add", "--", entry)
            _git(scratch, "commit", "-q", "-m", f"Add {entry}",
                 env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
    return target


@contextlib.contextmanager
def _building(target: Path) -> Iterator[Path]:
    """A scratch folder that replaces `target` only when the build inside succeeds."""
    scratch = target.with_name(f"{target.name}.building-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True, capture_output=True, env={**os.environ, **_FIXED_ENV, **(env or {})},
    )


def generated_repo(commits: int = 10_000, files: int = 5_000) -> Path:
    """A large synthetic repository (cached): the first commit adds `files` files,
    each later commit changes one of them. Built with `git fast-import` in seconds."""
    target = state_dir("fixtures") / f"generated-{commits}c-{files}f"
    if target.exists():
        return target
    with _building(target) as scratch:
        _fast_import(scratch, commits, files)
    return target


def _fast_import(repo: Path, commits: int, files: int) -> None:
    _git(repo, "init", "-q", "-b", "main")
    stream = bytearray()
    author = b"Fixture Author <fixtures@harness.invalid>"

    def blob_data(text: str) -> bytes:
        data = text.encode()
        return b"data %d\n%s\n" % (len(data), data)

    for number in range(commits):
        stamp = 1_767_268_800 + number * 60
        stream += b"commit refs/heads/main\n"
        stream += b"committer %s %d +0000\n" % (author, stamp)
        stream += blob_data(f"commit {number}")
        # After the first commit, fast-import continues the branch from its last commit.
        changed = [(number - 1) % files] if number else range(files)
        for index in changed:
            body = f"# module {index}\nVALUE = {number}\n" + "x = 1\n" * 20
            stream += b"M 100644 inline src/pkg%03d/mod%05d.py\n" % (index % 100, index)
            stream += blob_data(body)
        stream += b"\n"
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=bytes(stream),
                   check=True, capture_output=True)
    _git(repo, "checkout", "-q", "-f", "main")


def fixture_seed(name: str = "shop") -> Path:
    """The seed SQL file of a sample database, `fixtures/seeds/NAME.sql`."""
    path = fixtures_root() / "seeds" / f"{name}.sql"
    if not path.is_file():
        raise WorkspaceError(f"no fixture seed {name!r} at {path}")
    return path
