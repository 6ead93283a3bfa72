"""Every limit of an episode and of a change set, in one place: each one named by `Limit`,
each breach reported as one `Violation`, checked before an action (`Budget.before`), while
a database change is weighed (`Budget.weigh`), and on the whole change set at promotion and
in the gate (`check`).

What happens when a shell command crosses a limit (the shell is measured after it ran,
since what a command line will do cannot be known before):

- max_commits: the commits past the budget are reset away (`git reset --soft`: the work
  stays, uncommitted) and the action's output lists them.
- max_database_rows: the rows stay in the sandbox, the output says `rows_over_budget`,
  every further db_mutate is refused, and promotion refuses the change set.
- max_rows_per_table, protected tables and paths, max_files_changed, max_lines_changed,
  allow_ddl, masked columns, credentials: the change set is refused at promotion.
- max_shell_seconds: the command's timeout is cut to what is left; once spent, shell_exec
  is refused.
- max_output_bytes, max_actions, max_wall_seconds: the next action is refused.
- effect policies (`effects`): judged on each action's measured effects (a breach of a
  `block` one undoes the action) and on the whole change set (`check`; a `warn` one is
  no violation, `warnings` lists it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from harness.limits.violation import Limit, Violation

if TYPE_CHECKING:
    from harness.config import Config
    from harness.limits.budget import Budget, Counters
    from harness.limits.changes import check, warnings

# The budget and the change-set check are loaded on first use: tools and guardrails name
# limits without pulling in what checking a change set needs.
_LAZY = {"Budget": "harness.limits.budget", "Counters": "harness.limits.budget",
         "check": "harness.limits.changes", "warnings": "harness.limits.changes"}


def dry_run(config: Config, asked: bool | None = None) -> bool:
    """Whether a promotion only shows its plan: what was asked (a flag, an argument),
    else the config's `orchestrator.blast_radius.dry_run`."""
    return config.orchestrator.blast_radius.dry_run if asked is None else asked



def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.limits' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Budget", "Counters", "Limit", "Violation", "check", "dry_run", "warnings"]
