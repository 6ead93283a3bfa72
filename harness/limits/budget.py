"""The budget of an episode: its counters, what may not start (`before`), and whether a
database change may commit (`weigh`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.config import BlastRadius, EpisodeLimits
from harness.limits.violation import Limit, Violation


@dataclass
class Counters:
    """What an episode has used so far."""

    actions: int = 0
    commits: int = 0
    rows: int = 0
    shell_seconds: float = 0.0
    output_bytes: int = 0
    refused: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def wall_seconds(self) -> float:
        """Seconds since the episode opened."""
        return time.monotonic() - self.started

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (rounded)."""
        data = asdict(self)
        data.pop("started")
        data["shell_seconds"] = round(self.shell_seconds, 3)
        data["wall_seconds"] = round(self.wall_seconds, 3)
        return data


class Budget:
    """Limits and counters; `before` refuses an action that may not start."""

    def __init__(self, blast_radius: BlastRadius, limits: EpisodeLimits) -> None:
        self.blast_radius = blast_radius
        self.limits = limits
        self.counters = Counters()

    def before(self, needs: Iterable[Limit] = ()) -> Violation | None:
        """Why an action may not start now, if it may not: the limits every action needs,
        then `needs`, the budgets its tool uses (`Tool.needs`)."""
        c, limits, blast = self.counters, self.limits, self.blast_radius
        needs = set(needs)
        max_actions = min(v for v in (limits.max_actions, blast.max_tool_calls, 10**12)
                          if v is not None)
        if c.actions >= max_actions:
            return Violation(Limit.MAX_ACTIONS, max_actions, c.actions,
                             f"the episode has used its {max_actions} actions")
        if limits.max_wall_seconds is not None and c.wall_seconds >= limits.max_wall_seconds:
            return Violation(Limit.MAX_WALL_SECONDS, limits.max_wall_seconds,
                             round(c.wall_seconds, 3),
                             f"the episode has run for its {limits.max_wall_seconds:g} s")
        if Limit.MAX_SHELL_SECONDS in needs and limits.max_shell_seconds is not None and \
                c.shell_seconds >= limits.max_shell_seconds:
            return Violation(Limit.MAX_SHELL_SECONDS, limits.max_shell_seconds,
                             round(c.shell_seconds, 3),
                             f"shell commands have used their {limits.max_shell_seconds:g} s")
        if limits.max_output_bytes is not None and c.output_bytes >= limits.max_output_bytes:
            return Violation(Limit.MAX_OUTPUT_BYTES, limits.max_output_bytes, c.output_bytes,
                             f"actions have returned their {limits.max_output_bytes} bytes")
        if Limit.MAX_COMMITS in needs and c.commits >= blast.max_commits:
            return Violation(Limit.MAX_COMMITS, blast.max_commits, c.commits,
                             f"the episode has made its {blast.max_commits} commits "
                             "(blast radius)")
        if Limit.MAX_DATABASE_ROWS in needs and c.rows >= blast.max_database_rows:
            return Violation(Limit.MAX_DATABASE_ROWS, blast.max_database_rows, c.rows,
                             f"the episode has changed its {blast.max_database_rows} rows "
                             "(blast radius)")
        return None

    def weigh(self, projected_rows: int) -> Violation | None:
        """Whether a database change bringing the episode to `projected_rows` is too much."""
        limit = self.blast_radius.max_database_rows
        if projected_rows > limit:
            return Violation(Limit.MAX_DATABASE_ROWS, limit, projected_rows,
                             f"it would bring the episode to {projected_rows} changed rows "
                             f"({projected_rows - self.counters.rows} by this action); the "
                             f"blast radius allows {limit}")
        return None

    def remaining_shell_seconds(self) -> float | None:
        """Shell time left, to cap a command's timeout."""
        if self.limits.max_shell_seconds is None:
            return None
        return max(0.0, self.limits.max_shell_seconds - self.counters.shell_seconds)
