"""Waiting in tests for something another process does."""

from __future__ import annotations

import time
from typing import Any


def wait_for(condition: Any, what: str, timeout: float = 120, every: float = 0.05) -> Any:
    """The first truthy value `condition()` returns, asked every `every` seconds; a failed
    test saying what it waited for after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")
