"""Sandboxes made ahead of time: a long-lived process (the MCP server, `harness eval`, a
program using the API) keeps a few ready per (image and settings, repository revision,
database source), so that handing one out only binds it to its episode.

A sandbox is never reused: the one handed out is destroyed when its user closes it, and
a fresh one is made in the background. Ready sandboxes carry their owner's pid like any
other (so `harness gc` reclaims them after a crash); a repository whose ref moved, a seed
file that changed, or an entry idle past `idle_expiry_s` is discarded, never handed out.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.sandbox.sandbox import Sandbox
from harness.sandbox.settings import SandboxSettings

_LOG = logging.getLogger("harness.pool")


@dataclass(frozen=True)
class PoolKey:
    """What makes two sandboxes interchangeable before they are bound."""

    settings: str
    """A digest of the sandbox settings (image, hardening, limits, database settings)."""
    repo: str
    ref: str | None
    revision: str
    """The commit the ref names in the repository now ('' when it cannot be told: such a
    request is never served from the pool)."""
    database: str | None
    database_version: str
    """For a seed file, a digest of its content; for a DSN, empty (the baseline's own
    refresh rules apply when the sandbox is made)."""


@dataclass
class _Ready:
    sandbox: Sandbox
    made: float = field(default_factory=time.monotonic)


@dataclass
class _Spec:
    repo: str
    ref: str | None
    settings: SandboxSettings
    database: str | None
    owner: tuple[int, int] | None


@dataclass
class PoolStats:
    """How the pool has served so far."""

    handed_out: int = 0
    """Ready sandboxes handed out."""
    cold: int = 0
    """Requests no ready sandbox matched: opened on the spot."""
    made: int = 0
    discarded: int = 0
    """Ready sandboxes removed unused (stale, expired, or the pool closed)."""
    failures: int = 0
    """Background fills that failed (the next request opens cold)."""
    last_error: str | None = None


class SandboxPool:
    """`size` ready sandboxes per key (at most `max_total` ready in all), made by one
    background thread. `acquire` hands out a ready sandbox or opens one cold; closing it
    destroys it and makes a fresh one. `with SandboxPool() as pool:` closes the rest."""

    def __init__(self, size: int = 1, *, max_total: int = 8, idle_expiry_s: float = 600.0
                 ) -> None:
        if size < 0 or max_total < 0:
            raise ValueError("pool sizes cannot be negative")
        if idle_expiry_s <= 0:
            raise ValueError("idle_expiry_s must be more than 0")
        self.size = size
        self.max_total = max_total
        self.idle_expiry_s = idle_expiry_s
        self.stats = PoolStats()
        self._ready: dict[PoolKey, deque[_Ready]] = {}
        self._specs: dict[PoolKey, _Spec] = {}
        self._filling: dict[PoolKey, int] = {}
        self._stale: list[_Ready] = []
        """Ready sandboxes taken out of service, for the filler to destroy."""
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._fill_forever, name="harness-pool",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ handing out

    def key(self, repo: str | Path, *, ref: str | None = None,
            settings: SandboxSettings | None = None, database: str | None = None) -> PoolKey:
        """The key a request falls under, as the repository and the seed are now."""
        settings = settings or SandboxSettings()
        digest = hashlib.sha256(settings.fingerprint().encode()).hexdigest()[:16]
        return PoolKey(digest, str(repo), ref, _revision(str(repo), ref), database,
                       _file_version(database))

    def acquire(self, repo: str | Path, *, ref: str | None = None,
                settings: SandboxSettings | None = None, database: str | None = None,
                environment: Mapping[str, str] | None = None,
                owner: tuple[int, int] | None = None) -> Sandbox:
        """An open sandbox for this request, bound to `environment`: a ready one when the
        pool has one for its key, else one opened now. The pool then makes another."""
        settings = settings or SandboxSettings()
        key = self.key(repo, ref=ref, settings=settings, database=database)
        with self._lock:
            if self._closed:
                raise HarnessError("the sandbox pool is closed")
            # A revision that cannot be told is never served from the pool, nor made for.
            if key.revision:
                self._want(key, _Spec(str(repo), ref, settings, database, owner))
            ready = self._ready.get(key) if key.revision else None
            entry = ready.popleft() if ready else None
            if entry is not None:
                self.stats.handed_out += 1
            else:
                self.stats.cold += 1
        if entry is not None:
            entry.sandbox.bind(environment or {})
            return entry.sandbox
        sandbox = Sandbox(repo, ref=ref, settings=settings, database=database,
                          environment=environment, owner=owner)
        return sandbox.open()

    def warm(self, repo: str | Path, *, ref: str | None = None,
             settings: SandboxSettings | None = None, database: str | None = None,
             owner: tuple[int, int] | None = None, wait: bool = False,
             timeout: float = 300.0) -> None:
        """Ask for this key's sandboxes ahead of the first request; with `wait`, return
        once they are ready (raising the fill's error if one failed)."""
        settings = settings or SandboxSettings()
        key = self.key(repo, ref=ref, settings=settings, database=database)
        with self._lock:
            self._want(key, _Spec(str(repo), ref, settings, database, owner))
            failures = self.stats.failures
            deadline = time.monotonic() + timeout
            while wait and len(self._ready.get(key, ())) < self.size:
                if self.stats.failures > failures:
                    raise HarnessError(f"the pool could not make a sandbox: "
                                       f"{self.stats.last_error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"the pool made no sandbox within {timeout:.0f} s")
                self._lock.wait(timeout=min(left, 0.5))

    def ready(self) -> int:
        """Sandboxes ready now, over all keys."""
        with self._lock:
            return sum(len(entries) for entries in self._ready.values())

    def close(self) -> None:
        """Stop making sandboxes and destroy the ready ones (handed-out ones are their
        users' to close)."""
        with self._lock:
            self._closed = True
            entries = [e for ready in self._ready.values() for e in ready]
            self._ready.clear()
            self._lock.notify_all()
        self._thread.join(timeout=600)
        for entry in entries:
            self._destroy(entry.sandbox)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ filling

    def _wanted(self, key: PoolKey) -> int:
        return self.size if key in self._specs else 0

    def _want(self, key: PoolKey, spec: _Spec) -> None:
        """Ask the filler for `key`'s sandboxes, retiring those of the same request made
        from an older revision or seed (lock held)."""
        self._specs[key] = spec
        self._drop_stale(key)
        self._lock.notify_all()

    def _drop_stale(self, current: PoolKey) -> None:
        """Discard ready sandboxes of the same request made from an older revision or
        seed (called with the lock held; the sandboxes are destroyed by the filler)."""
        for key in list(self._ready):
            same_request = (key.repo, key.ref, key.settings, key.database) == (
                current.repo, current.ref, current.settings, current.database)
            if same_request and key != current:
                self._retire(key)

    def _retire(self, key: PoolKey) -> None:
        self._stale.extend(self._ready.pop(key, ()))
        self._specs.pop(key, None)

    def _next_job(self) -> tuple[PoolKey, _Spec] | None:
        """The key most short of sandboxes, when the pool has room (lock held)."""
        total = sum(len(e) for e in self._ready.values()) + sum(self._filling.values())
        if total >= self.max_total:
            return None
        short = [(len(self._ready.get(k, ())) + self._filling.get(k, 0) - self._wanted(k), k)
                 for k in self._specs]
        short = [(gap, k) for gap, k in short if gap < 0]
        if not short:
            return None
        key = min(short, key=lambda item: item[0])[1]
        return key, self._specs[key]

    def _fill_forever(self) -> None:
        while True:
            with self._lock:
                self._expire()
                stale, self._stale = self._stale, []
                job = None if self._closed else self._next_job()
                if job is None and not stale:
                    if self._closed:
                        return
                    self._lock.wait(timeout=max(0.5, min(self.idle_expiry_s, 5.0)))
                    continue
                if job is not None:
                    self._filling[job[0]] = self._filling.get(job[0], 0) + 1
            for entry in stale:
                self._destroy(entry.sandbox)
            if job is not None:
                self._make(*job)

    def _make(self, key: PoolKey, spec: _Spec) -> None:
        sandbox: Sandbox | None = None
        error: str | None = None
        try:
            sandbox = Sandbox(spec.repo, ref=spec.ref, settings=spec.settings,
                              database=spec.database, owner=spec.owner).open()
        except Exception as exc:  # the request that needs it opens cold and sees the error
            error = str(exc)
            _LOG.warning("the sandbox pool could not make a sandbox: %s", exc)
        with self._lock:
            self._filling[key] -= 1
            if sandbox is not None and not self._closed and key in self._specs:
                self._ready.setdefault(key, deque()).append(_Ready(sandbox))
                self.stats.made += 1
                sandbox = None
            elif error is not None:
                self.stats.failures += 1
                self.stats.last_error = error
                self._specs.pop(key, None)  # asked again by the next request
            self._lock.notify_all()
        if sandbox is not None:
            self._destroy(sandbox)

    def _expire(self) -> None:
        """Move ready sandboxes idle past the expiry to the stale list (lock held)."""
        now = time.monotonic()
        for key, ready in list(self._ready.items()):
            expired = 0
            while ready and now - ready[0].made > self.idle_expiry_s:
                self._stale.append(ready.popleft())
                expired += 1
            if expired:
                self._specs.pop(key, None)  # no one asked: made again when someone does
            if not ready:
                del self._ready[key]

    def _destroy(self, sandbox: Sandbox) -> None:
        with contextlib.suppress(Exception):
            sandbox.close()
        with self._lock:
            self.stats.discarded += 1


def _revision(repo: str, ref: str | None) -> str:
    """The commit `ref` names in the repository now, local or remote ('' when it cannot
    be told: the sandbox made for the request will say why)."""
    if Path(repo).expanduser().exists():
        done = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", "-q",
                               f"{ref or 'HEAD'}^{{commit}}"], capture_output=True,
                              text=True, check=False)
        return done.stdout.strip()
    try:
        done = subprocess.run(["git", "ls-remote", "--", repo, ref or "HEAD"],
                              capture_output=True, text=True, check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return ""
    lines = done.stdout.split("\n") if done.returncode == 0 else []
    found = [line.split("\t") for line in lines if "\t" in line]
    exact = [sha for sha, name in found if name in (ref or "HEAD", f"refs/heads/{ref}",
                                                   f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}")]
    if exact:
        return exact[-1]  # a tag's peeled commit is listed after the tag
    if ref and re.fullmatch(r"[0-9a-f]{40}", ref):
        return ref
    return ""


def _file_version(database: str | None) -> str:
    """A seed file's content digest, however its name ends (a DSN: '')."""
    if database is None or not Path(database).is_file():
        return ""
    from harness.sandbox.snapshot import Source

    return Source.parse(database).identity
