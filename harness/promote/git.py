"""Pushing a change set's commits to the real repository: from its bundle, through a
scratch repository, with one atomic push (all refs or none) that never forces."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from harness.errors import HarnessError

_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}


class PushError(HarnessError):
    """The push was refused or failed; the remote is unchanged (the push is atomic)."""


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **_ENV},
                          check=False)
    if done.returncode != 0:
        raise PushError(f"git {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def remote_ref(target: str, ref: str) -> str | None:
    """The commit `ref` points at on the remote, or None when it does not exist."""
    out = _git("ls-remote", target, ref)
    return out.split()[0] if out else None


def push(bundle: Path, *, target: str, base: str, refs: list[str],
         fast_forward: str | None = None) -> dict[str, str]:
    """Push the bundle's HEAD to each of `refs` (new refs) and, with `fast_forward`, to that
    branch too if its head is still `base`. Returns ref -> commit pushed."""
    with tempfile.TemporaryDirectory(prefix="harness-push-") as scratch:
        repo = Path(scratch) / "repo.git"
        _git("init", "-q", "--bare", str(repo))
        # The bundle's prerequisite (the base) comes from the target itself.
        _git("fetch", "-q", "--no-tags", target, "+refs/heads/*:refs/remotes/target/*",
             cwd=repo)
        _git("fetch", "-q", str(bundle), "HEAD:refs/heads/harness-promote", cwd=repo)
        head = _git("rev-parse", "refs/heads/harness-promote", cwd=repo)
        specs = [f"{head}:{ref}" for ref in refs]
        options = []
        if fast_forward:
            ref = f"refs/heads/{fast_forward}"
            specs.append(f"{head}:{ref}")
            options.append(f"--force-with-lease={ref}:{base}")  # a guard; the push stays ff-only
        try:
            _git("push", "--atomic", "--porcelain", *options, target, *specs, cwd=repo)
        except PushError as exc:
            raise PushError(f"the push to {target} was refused, nothing changed there: {exc}"
                            ) from exc
        return {spec.split(":", 1)[1]: head for spec in specs}


def delete_refs(target: str, expected: dict[str, str], *, restore: dict[str, str] | None = None
                ) -> None:
    """Undo a push: delete each ref (or move it back to `restore[ref]`) if it still points
    at the commit pushed; otherwise refuse, changing nothing."""
    restore = restore or {}
    with tempfile.TemporaryDirectory(prefix="harness-revert-") as scratch:
        repo = Path(scratch) / "repo.git"
        _git("init", "-q", "--bare", str(repo))
        specs, leases = [], []
        for ref, sha in expected.items():
            if ref in restore:
                _git("fetch", "-q", "--no-tags", target, restore[ref], cwd=repo)
                specs.append(f"+{restore[ref]}:{ref}")
            else:
                specs.append(f":{ref}")
            leases.append(f"--force-with-lease={ref}:{sha}")
        try:
            _git("push", "--atomic", "--porcelain", *leases, target, *specs, cwd=repo)
        except PushError as exc:
            raise PushError(f"the refs moved since the promotion; nothing reverted: {exc}"
                            ) from exc
