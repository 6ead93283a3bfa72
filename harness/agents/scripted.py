"""A scripted agent: a fixed list of actions, or a Python callable (tests, regressions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from harness.agents.base import Agent, Briefing, Proposal
from harness.episode import ActionResult

Policy = Callable[[Briefing, ActionResult | None], Proposal | None]


class ScriptedAgent(Agent):
    """Plays `script`: either the actions in order, or what a callable returns each step."""

    def __init__(self, script: Iterable[Proposal] | Policy) -> None:
        self._policy = script if callable(script) else None
        self._queue = [] if callable(script) else list(script)
        self._briefing: Briefing | None = None

    def start(self, briefing: Briefing) -> None:
        self._briefing = briefing

    def next(self, last: ActionResult | None) -> Proposal | None:
        if self._policy is not None:
            assert self._briefing is not None
            return self._policy(self._briefing, last)
        return self._queue.pop(0) if self._queue else None
