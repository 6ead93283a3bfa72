"""An agent that is any program speaking JSON lines: an observation in on stdin, an action
out on stdout (`{"tool": ..., "parameters": {...}}`, or `{"done": true}` / end of output)."""

from __future__ import annotations

import json
import selectors
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from harness.agents.base import Agent, Briefing, Proposal
from harness.episode import ActionResult
from harness.errors import HarnessError


class SubprocessAgent(Agent):
    """Runs `argv`; each step writes one JSON observation line and reads one action line."""

    def __init__(self, argv: Sequence[str], *, step_timeout: float = 120.0) -> None:
        self.argv = list(argv)
        self.step_timeout = step_timeout
        self._process: subprocess.Popen[str] | None = None
        self._briefing: dict[str, Any] = {}

    def start(self, briefing: Briefing) -> None:
        try:
            self._process = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True, bufsize=1)
        except OSError as exc:
            raise HarnessError(f"cannot start the agent {self.argv[0]!r}: {exc}") from exc
        self._briefing = {"type": "start", "task": briefing.task, "state": briefing.state,
                          "tools": briefing.tools}

    def next(self, last: ActionResult | None) -> Proposal | None:
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            raise HarnessError("the agent process is not running; call start() first")
        message = self._briefing if last is None else {
            "type": "result", "result": last.to_dict(), "observation": last.observation()}
        try:
            process.stdin.write(json.dumps(message, default=str) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            return None
        line = self._read_line(process)
        if not line.strip():
            return None
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            return line  # the episode refuses it as malformed, and the agent goes on
        if isinstance(data, dict) and data.get("done"):
            return None
        return data if isinstance(data, dict) else line

    def _read_line(self, process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.step_timeout
        try:
            while time.monotonic() < deadline:
                if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    return process.stdout.readline()
        finally:
            selector.close()
        raise HarnessError(f"the agent gave no action within {self.step_timeout:g} s")

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
