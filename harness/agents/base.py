"""The small interface every agent adapter implements, and the loop that drives one
through an episode."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.episode import ActionResult, Episode
from harness.tools import ToolAction


@dataclass(frozen=True)
class Briefing:
    """What an agent is given before its first action."""

    task: str
    state: str
    """The injected runtime state, as text for a prompt."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    """The tools in the Chat Completions `tools` format."""


Proposal = ToolAction | dict[str, Any] | str
"""What an agent proposes: a ToolAction, a tool-call object, or a JSON line."""


class Agent(abc.ABC):
    """An agent: briefed once, then asked for one action at a time."""

    @abc.abstractmethod
    def start(self, briefing: Briefing) -> None:
        """Receive the task, the injected state and the tools."""

    @abc.abstractmethod
    def next(self, last: ActionResult | None) -> Proposal | None:
        """The next action, given the outcome of the previous one; None when done."""

    def close(self) -> None:  # noqa: B027 (optional for adapters with nothing to release)
        """Release what the agent holds (a process, a connection)."""


def drive(episode: Episode, agent: Agent, task: str, *, max_steps: int = 50,
          act: Callable[[Proposal], ActionResult] | None = None) -> list[ActionResult]:
    """Run `agent` in `episode` until it is done or has taken `max_steps` actions (through
    `act` when given: an evaluation's perturbations sit there)."""
    act = act or episode.act
    agent.start(Briefing(task, episode.state.prompt_text(), Episode.tool_schemas()))
    results: list[ActionResult] = []
    last: ActionResult | None = None
    try:
        for _ in range(max_steps):
            proposal = agent.next(last)
            if proposal is None:
                break
            last = act(proposal)
            results.append(last)
    finally:
        agent.close()
    return results
