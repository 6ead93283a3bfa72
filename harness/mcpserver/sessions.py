"""The episodes of an MCP server, one per MCP session, opened at a session's first call
and closed when it ends."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from mcp.server.connection import Connection
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from harness.config import Config
from harness.episode import Episode, EpisodePool
from harness.errors import HarnessError
from harness.progress import listening

_LOG = logging.getLogger("harness.mcp")
PROCESS = "process"
_CLOSE_HOOKED = "harness.close-hooked"
T = TypeVar("T")
def _progress_to(ctx: Context[Any]) -> Callable[[str], None]:
    """Long work a call waits for, told to its client as progress notifications (when the
    call asked for them with a progress token; otherwise nothing is sent)."""
    count = 0

    def tell(message: str) -> None:
        nonlocal count
        count += 1
        # From a thread outside the server's event loop it cannot be sent: the log has it.
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run(ctx.report_progress, count, None, message)
    return tell


def _connection(ctx: Context[Any]) -> Connection:
    # The SDK hands tools no public handle on their connection (whose `state` and
    # `exit_stack` are public); the request's session proxy holds it. The mcp requirement
    # is pinned below the next minor version and tests/test_mcp.py exercises this path.
    connection = getattr(ctx.request_context.session, "_connection", None)
    if not isinstance(connection, Connection):
        raise RuntimeError("this version of the mcp SDK gives tools no connection; "
                           "harness cannot tell MCP sessions apart")
    return connection


def _credential(ctx: Context[Any]) -> str:
    """Which client credential a call came with, as a label that does not reveal it."""
    request = getattr(ctx.request_context, "request", None)
    headers = getattr(request, "headers", None)
    value = headers.get("authorization", "") if headers is not None else ""
    if not value:
        return "no credential"
    return "token sha256:" + hashlib.sha256(value.encode()).hexdigest()[:8]


class Sessions:
    """The open episodes, one per MCP session: the process's one (stdio), or one per
    HTTP session, closed when the SDK tears that session's connection down. Over HTTP, a
    session that makes no call for `idle_timeout` seconds has its sandbox reclaimed (even
    while its client keeps a stream open), and one client credential may hold at most
    `max_idle_per_token` idle sandboxes: no client can hold the server's sandboxes."""

    def __init__(self, config: Config, *, per_connection: bool = False,
                 max_sandboxes: int | None = None, idle_timeout: float | None = None,
                 max_idle_per_token: int | None = None, pool: int = 0) -> None:
        self.config = config
        self.pool = EpisodePool(config, size=pool).warm() if pool > 0 else None
        """Sandboxes made ahead, so that a session's first call does not wait for one."""
        self.per_connection = per_connection
        self.max_sandboxes = max_sandboxes
        self.idle_timeout = idle_timeout
        self.max_idle_per_token = max_idle_per_token
        self._reserved = 0
        self._episodes: dict[str, Episode] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._ended: set[str] = set()
        self._reclaimed: dict[str, str] = {}
        """Sessions whose sandbox was reclaimed, and what their next call is told."""
        self._owners: dict[str, str] = {}
        self._last_call: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self._opening: set[str] = set()
        """Sessions whose sandbox is being opened now (they count towards the idle cap)."""
        self._guard = threading.Lock()
        self._stop = threading.Event()
        if idle_timeout is not None:
            threading.Thread(target=self._reap, name="harness-mcp-reaper", daemon=True).start()

    async def run(self, ctx: Context[Any], work: Callable[[Episode], T]) -> T:
        """`work` on the calling session's episode (opened on first use), one call at a
        time per session, off the event loop."""
        key = self._session(ctx)
        with self._guard:
            if key in self._reclaimed:
                raise ToolError(self._reclaimed[key])
            self._owners.setdefault(key, _credential(ctx))
            self._busy[key] = self._busy.get(key, 0) + 1
            self._last_call[key] = time.monotonic()

        def in_thread() -> T:
            try:
                with listening(_progress_to(ctx)):  # an image or a baseline built now
                    episode, lock = self._episode(key)
                with lock:
                    return work(episode)
            except HarnessError as error:
                # The agent (and its user) read tool errors: say what went wrong.
                raise ToolError(f"{type(error).__name__}: {error}") from error
            finally:
                with self._guard:
                    self._busy[key] -= 1
                    self._last_call[key] = time.monotonic()
        try:
            return await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            # The client cancelled the call: stop its command or query, or the session
            # would wait for it (up to its timeout) before its next call could run.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._interrupt, key)
            raise

    def _interrupt(self, key: str) -> None:
        episode = self._episodes.get(key)
        if episode is not None:
            episode.interrupt()

    def _session(self, ctx: Context[Any]) -> str:
        if not self.per_connection:
            return PROCESS
        connection = _connection(ctx)
        key = connection.session_id
        if key is None:
            raise ToolError("this request belongs to no MCP session; harness keeps one sandbox "
                            "per session: connect with the initialize handshake")
        if not connection.state.get(_CLOSE_HOOKED):
            connection.state[_CLOSE_HOOKED] = True

            async def session_ended() -> None:
                await anyio.to_thread.run_sync(self.end, key)
            connection.exit_stack.push_async_callback(session_ended)
        return key

    async def restart(self, ctx: Context[Any]) -> None:
        """Close the calling session's episode; its next call opens a fresh one."""
        key = self._session(ctx)
        await anyio.to_thread.run_sync(self.close, key)

    def _episode(self, key: str) -> tuple[Episode, threading.Lock]:
        with self._guard:
            if key in self._reclaimed:
                raise ToolError(self._reclaimed[key])
            if key in self._ended:
                raise ToolError("this MCP session has ended and its sandbox is closed")
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._episodes:
                self._check_idle_cap(key)
                try:
                    self._reserve()
                    try:
                        self._episodes[key] = (self.pool.episode() if self.pool is not None
                                               else Episode(self.config)).open()
                    except BaseException:
                        self._release()
                        raise
                finally:
                    with self._guard:
                        self._opening.discard(key)
                _LOG.info("MCP session %s: episode %s opened", key, self._episodes[key].trace_id)
                with self._guard:
                    ended_meanwhile = key in self._ended
                if ended_meanwhile:
                    self._episodes.pop(key).close()
                    self._release()
                    raise ToolError("this MCP session has ended and its sandbox is closed")
            return self._episodes[key], lock

    def _check_idle_cap(self, key: str) -> None:
        """Refuse a new sandbox to a credential that already holds its share of idle ones."""
        if self.max_idle_per_token is None:
            return
        now = time.monotonic()
        with self._guard:
            owner = self._owners.get(key, "")
            idle = sorted(now - self._last_call.get(k, now) for k in self._episodes
                          if k != key and self._owners.get(k) == owner
                          and not self._busy.get(k))
            # Sandboxes being opened for the same credential will be idle in a moment:
            # first calls racing each other must not all get through.
            opening = sum(1 for k in self._opening if self._owners.get(k) == owner)
            if len(idle) + opening < self.max_idle_per_token:
                self._opening.add(key)
                return
        reclaim = (f"; the oldest is reclaimed in {max(self.idle_timeout - idle[-1], 0):.0f} s"
                   if self.idle_timeout is not None and idle else "")
        waiting = f" (idle for {', '.join(f'{s:.0f} s' for s in idle)})" if idle else ""
        raise ToolError(
            f"this client's credential ({owner}) already holds {len(idle)} idle sandboxes"
            f"{waiting}{f' and is opening {opening} more' if opening else ''}, as many as one "
            f"credential may (--max-idle-per-token {self.max_idle_per_token}): end a session "
            f"you no longer use (DELETE it) or use one of them{reclaim}")

    def _reap(self) -> None:
        """Reclaim the sandboxes of sessions idle past the timeout, until `close_all`."""
        assert self.idle_timeout is not None
        period = min(5.0, self.idle_timeout / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._guard:
                stale = [k for k in self._episodes if not self._busy.get(k)
                         and now - self._last_call.get(k, now) > self.idle_timeout]
                for key in stale:
                    trace = self._episodes[key].trace_id
                    self._reclaimed[key] = (
                        f"this session made no call for {self.idle_timeout:g} s, so its sandbox "
                        f"was reclaimed (--idle-timeout); what it changed is recorded in trace "
                        f"{trace}. Start a new session (initialize again) to go on")
                    self._ended.add(key)
            for key in stale:
                _LOG.info("MCP session %s: idle for %g s, sandbox reclaimed", key,
                          self.idle_timeout)
                self.close(key)

    def _reserve(self) -> None:
        with self._guard:
            if self.max_sandboxes is not None and self._reserved >= self.max_sandboxes:
                raise ToolError(f"{self.max_sandboxes} sandboxes are open, as many as this "
                                "server keeps at once (--max-sandboxes): try again when a "
                                "session has ended")
            self._reserved += 1

    def _release(self) -> None:
        with self._guard:
            self._reserved -= 1

    def close(self, key: str) -> None:
        """Close the session's episode (the sandbox goes, the trace stays) once its
        running call, if any, is done; a later call opens a fresh one."""
        with self._guard:
            episode = self._episodes.pop(key, None)
            lock = self._locks.pop(key, None)
        if episode is not None and lock is not None:
            try:
                with lock:
                    episode.close()
            finally:
                self._release()
            _LOG.info("MCP session %s: episode %s closed", key, episode.trace_id)

    def end(self, key: str) -> None:
        """The session is over: close its episode and open none for it again."""
        with self._guard:
            self._ended.add(key)
        self.close(key)

    def close_all(self) -> None:
        """End every session (and stop reclaiming): running commands are stopped first, so
        the server does not wait for them to finish."""
        self._stop.set()
        for episode in list(self._episodes.values()):
            episode.interrupt()
        for key in list(self._episodes):
            self.end(key)
        if self.pool is not None:
            self.pool.close()

    @property
    def open_keys(self) -> list[str]:
        """Sessions with an open episode."""
        return list(self._episodes)
