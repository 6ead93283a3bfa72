"""Real git repositories made from the sample trees in `fixtures/repos/`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness.errors import WorkspaceError
from harness.sandbox.home import state_dir

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
    target = state_dir("fixtures") / name
    if target.exists() and not fresh and (target / ".git").is_dir():
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(tree, target)
    _git(target, "init", "-q", "-b", "main")
    for day, entry in enumerate(sorted(p.name for p in tree.iterdir()), start=1):
        stamp = f"2026-01-{day:02d}T12:00:00Z"
        _git(target, "add", "--", entry)
        _git(target, "commit", "-q", "-m", f"Add {entry}",
             env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
    return target


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True, capture_output=True, env={**os.environ, **_FIXED_ENV, **(env or {})},
    )
