"""Pushing a change set's commits to the real repository: from its bundle, through a
scratch repository, with atomic pushes (all refs or none) that never force, and the
compare-and-swap removal that undoes a push without touching anyone else's work."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.errors import HarnessError
from harness.home import scratch_folder

_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}


class PushError(HarnessError):
    """The push was refused or failed; the remote is unchanged (the push is atomic)."""


class PushInterrupted(PushError):
    """Git was killed before it finished: whether its atomic push reached the remote is
    unknown until the remote is asked."""


_GATE = 'IFS= read -r go && [ "$go" = go ] && exec "$@"; exit 125'
"""A push's first process waits here for the word `go` before it becomes git: on EOF (the
promoting process died before releasing it) it exits without pushing."""


def _git(*args: str, cwd: Path | None = None,
         started: Callable[[int], None] | None = None) -> str:
    """Run git; with `started`, gated in a process group of its own: `started` gets the
    group's id (the journal records it, and recovery kills that group) before git may
    start, so no push runs that recovery cannot find. If the caller dies or `started`
    raises before the release, the gate reads EOF and exits without pushing."""
    argv = ["git", "-c", "core.hooksPath=/dev/null", *args]
    if started is not None:
        argv = ["sh", "-c", _GATE, "harness-push-gate", *argv]
    process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE if started else None,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **_ENV}, start_new_session=started is not None)
    release = None
    if started is not None:
        try:
            started(process.pid)
        except BaseException:
            process.communicate("")  # EOF at the gate: git never starts
            raise
        release = "go\n"
    stdout, stderr = process.communicate(release)
    if process.returncode < 0:
        raise PushInterrupted(f"git {' '.join(args[:2])} was killed (signal "
                              f"{-process.returncode}) before it finished")
    if process.returncode != 0:
        raise PushError(f"git {' '.join(args[:2])} failed: {(stderr or stdout).strip()}")
    return stdout.strip()


def leader_start(group: int) -> str | None:
    """When the process `group` started (clock ticks since boot, from /proc), or None when
    it is gone: with its id, it names a push's group so that a recycled id is never taken
    for it."""
    try:
        stat = Path(f"/proc/{group}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, counted after the command name


def stop_group(group: int, start: str | None = None) -> None:
    """Kill what is left of a push's process group (after a crash), gated or running, and
    wait until it is gone. A leader whose start time is not `start` (its id was recycled)
    is left alone; so, without `start`, is one that is not git or its gate."""
    now = leader_start(group)
    if now is not None and start is not None and now != start:
        return
    if now is not None and start is None:
        try:
            if b"git" not in Path(f"/proc/{group}/cmdline").read_bytes():
                return
        except OSError:
            pass
    # With its leader gone, an id still names the group while any member lives (Linux does
    # not hand out an id a group still uses).
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    for _ in range(100):
        if not live_members(group):
            return
        time.sleep(0.05)


def live_members(group: int) -> list[int]:
    """The processes of `group` that can still act (a zombie, dead but not yet reaped by
    its parent, cannot)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[2] == str(group) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@contextlib.contextmanager
def scratch_repository(purpose: str) -> Iterator[Path]:
    """An empty bare repository in a scratch folder (which `harness gc` removes if a kill
    leaves it), removed afterwards."""
    with scratch_folder(purpose) as folder:
        repo = folder / "repo.git"
        _git("init", "-q", "--bare", str(repo))
        yield repo


def remote_refs(target: str, refs: list[str]) -> dict[str, str]:
    """Which of `refs` exist on the remote, and the commit each points at."""
    if not refs:
        return {}
    found = {}
    for line in _git("ls-remote", target, *refs).splitlines():
        sha, _, name = line.partition("\t")
        if name in refs:
            found[name] = sha
    return found


def contains(target: str, refs: list[str], commit: str) -> bool:
    """Whether `commit` is reachable on the remote from any of `refs` (a fast-forwarded
    branch that someone has since built on still contains it)."""
    existing = remote_refs(target, refs)
    if commit in existing.values():
        return True
    if not existing:
        return False
    with scratch_repository("check") as repo:
        specs = [f"+{ref}:refs/check/{i}" for i, ref in enumerate(existing)]
        _git("fetch", "-q", "--no-tags", target, *specs, cwd=repo)
        return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo,
                              capture_output=True, check=False).returncode == 0


def push(bundle: Path, *, target: str, base: str, refs: list[str],
         fast_forward: str | None = None, started: Callable[[int], None] | None = None
         ) -> dict[str, str]:
    """Push the bundle's HEAD to each of `refs` (new refs: the push fails, changing nothing,
    if one exists) and, with `fast_forward`, to that branch too if its head is still
    `base`. Returns ref -> commit pushed."""
    with scratch_repository("push") as repo:
        # The bundle's prerequisite (the base) comes from the target itself.
        _git("fetch", "-q", "--no-tags", target, "+refs/heads/*:refs/remotes/target/*",
             cwd=repo)
        _git("fetch", "-q", str(bundle), "HEAD:refs/heads/harness-promote", cwd=repo)
        head = _git("rev-parse", "refs/heads/harness-promote", cwd=repo)
        specs = [f"{head}:{ref}" for ref in refs]
        # `refs` are new: each must not exist (an empty lease), or nothing is pushed.
        options = [f"--force-with-lease={ref}:" for ref in refs]
        if fast_forward:
            ref = f"refs/heads/{fast_forward}"
            specs.append(f"{head}:{ref}")
            options.append(f"--force-with-lease={ref}:{base}")  # a guard; the push stays ff-only
        try:
            _git("push", "--atomic", "--porcelain", *options, target, *specs, cwd=repo,
                 started=started)
        except PushInterrupted:
            raise
        except PushError as exc:
            raise PushError(f"the push to {target} was refused, nothing changed there: {exc}"
                            ) from exc
        return {spec.split(":", 1)[1]: head for spec in specs}


def bundle_head(bundle: Path) -> str:
    """The commit a bundle's HEAD names."""
    for line in _git("bundle", "list-heads", str(bundle)).splitlines():
        sha, _, name = line.partition(" ")
        if name == "HEAD":
            return sha
    raise PushError(f"the bundle {bundle} has no HEAD")


def move_refs(target: str, moves: dict[str, tuple[str | None, str | None]]) -> None:
    """Move refs by compare-and-swap, all or none: each ref from the commit it must point at
    now (None: it must not exist) to a new commit (None: delete it). Never over anyone
    else's work: if a ref is not where it is expected, nothing moves."""
    if not moves:
        return
    with scratch_repository("move") as repo:
        specs, leases = [], []
        for ref, (expected, new) in moves.items():
            if new is not None:
                _git("fetch", "-q", "--no-tags", target, new, cwd=repo)
                specs.append(f"+{new}:{ref}")
            else:
                specs.append(f":{ref}")
            leases.append(f"--force-with-lease={ref}:{expected or ''}")
        try:
            _git("push", "--atomic", "--porcelain", *leases, target, *specs, cwd=repo)
        except PushError as exc:
            raise PushError(f"the refs moved since the promotion; nothing changed: {exc}"
                            ) from exc


def delete_refs(target: str, expected: dict[str, str], *, restore: dict[str, str] | None = None
                ) -> None:
    """Undo a push: delete each ref (or move it back to `restore[ref]`) if it still points
    at the commit pushed; otherwise refuse, changing nothing."""
    restore = restore or {}
    move_refs(target, {ref: (sha, restore.get(ref)) for ref, sha in expected.items()})
