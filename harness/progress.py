"""Progress of long work the user did not ask for by name (an image built, a database
snapshotted on first use): told to whoever listens (the CLI prints it on stderr) and logged.
A bottom module: anything may import it, it imports nothing of harness."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

Listener = Callable[[str], None]

_LOG = logging.getLogger("harness.progress")
_LISTENERS: list[Listener] = []
_LOCK = threading.Lock()


def report(message: str) -> None:
    """Tell every listener (from any thread) what is going on now."""
    _LOG.info("%s", message)
    with _LOCK:
        listeners = list(_LISTENERS)
    for listener in listeners:
        listener(message)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Within the block, `listener` hears every report."""
    with _LOCK:
        _LISTENERS.append(listener)
    try:
        yield
    finally:
        with _LOCK:
            _LISTENERS.remove(listener)


def listen(listener: Listener) -> None:
    """`listener` hears every report from now until the process ends (the CLI's stderr)."""
    with _LOCK:
        _LISTENERS.append(listener)
