"""What this host can mount, found by mounting something once and remembered until the
next boot: a probe costs a handful of processes, which every `harness exec` would pay.
Only what worked is remembered (what did not may be fixed meanwhile, and is cheap to
find again); a mount that fails later forgets it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from harness.home import state_dir


def remembered(name: str, probe: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    """`probe()`'s answer, from this boot's record when it worked before."""
    path = _record(name)
    boot = _boot_id()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(path.read_text())
        if data["boot"] == boot and data["uid"] == os.geteuid() and data["works"]:
            return True, str(data["detail"])
    works, detail = probe()
    if works and boot:
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps({"boot": boot, "uid": os.geteuid(),
                                             "works": True, "detail": detail}))
            temporary.replace(path)
    return works, detail


def forget(name: str) -> None:
    """Probe again next time (a mount the record promised has failed)."""
    _record(name).unlink(missing_ok=True)


def _record(name: str) -> Path:
    return state_dir("probes") / f"{name}.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # nothing to key a record on: probe every time
