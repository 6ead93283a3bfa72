"""The episodes of an MCP server, one per MCP session, opened at a session's first call
and closed when it ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from mcp.server.connection import Connection
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from harness.config import Config
from harness.episode import Episode
from harness.errors import HarnessError

_LOG = logging.getLogger("harness.mcp")
PROCESS = "process"
_CLOSE_HOOKED = "harness.close-hooked"
T = TypeVar("T")
def _connection(ctx: Context[Any]) -> Connection:
    # The SDK hands tools no public handle on their connection (whose `state` and
    # `exit_stack` are public); the request's session proxy holds it. The mcp requirement
    # is pinned below the next minor version and tests/test_mcp.py exercises this path.
    connection = getattr(ctx.request_context.session, "_connection", None)
    if not isinstance(connection, Connection):
        raise RuntimeError("this version of the mcp SDK gives tools no connection; "
                           "harness cannot tell MCP sessions apart")
    return connection


class Sessions:
    """The open episodes, one per MCP session: the process's one (stdio), or one per
    HTTP session, closed when the SDK tears that session's connection down."""

    def __init__(self, config: Config, *, per_connection: bool = False,
                 max_sandboxes: int | None = None) -> None:
        self.config = config
        self.per_connection = per_connection
        self.max_sandboxes = max_sandboxes
        self._reserved = 0
        self._episodes: dict[str, Episode] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._ended: set[str] = set()
        self._guard = threading.Lock()

    async def run(self, ctx: Context[Any], work: Callable[[Episode], T]) -> T:
        """`work` on the calling session's episode (opened on first use), one call at a
        time per session, off the event loop."""
        key = self._session(ctx)

        def in_thread() -> T:
            try:
                episode, lock = self._episode(key)
                with lock:
                    return work(episode)
            except HarnessError as error:
                # The agent (and its user) read tool errors: say what went wrong.
                raise ToolError(f"{type(error).__name__}: {error}") from error
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
            if key in self._ended:
                raise ToolError("this MCP session has ended and its sandbox is closed")
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._episodes:
                self._reserve()
                try:
                    self._episodes[key] = Episode(self.config).open()
                except BaseException:
                    self._release()
                    raise
                _LOG.info("MCP session %s: episode %s opened", key, self._episodes[key].trace_id)
                with self._guard:
                    ended_meanwhile = key in self._ended
                if ended_meanwhile:
                    self._episodes.pop(key).close()
                    self._release()
                    raise ToolError("this MCP session has ended and its sandbox is closed")
            return self._episodes[key], lock

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
        """End every session."""
        for key in list(self._episodes):
            self.end(key)

    @property
    def open_keys(self) -> list[str]:
        """Sessions with an open episode."""
        return list(self._episodes)
