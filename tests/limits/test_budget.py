"""The episode budget at its boundaries: every limit allows exactly its value and refuses
one more, for the tools it applies to and no others."""

from __future__ import annotations

import pytest

from harness.config import BlastRadius, EpisodeLimits
from harness.limits import Budget
from harness.tools import TOOLS

NAMES = list(TOOLS)


def budget(**settings: object) -> Budget:
    blast = {k: v for k, v in settings.items() if k in BlastRadius.model_fields}
    limits = {k: v for k, v in settings.items() if k in EpisodeLimits.model_fields}
    return Budget(BlastRadius(**blast), EpisodeLimits(**limits))


@pytest.mark.parametrize("setting", ["max_actions", "max_tool_calls"])
def test_the_last_allowed_action_runs_and_the_next_is_refused(setting: str) -> None:
    b = budget(**{setting: 3})
    b.counters.actions = 2
    assert b.before(TOOLS["read_file"].needs) is None, "one under the limit"
    b.counters.actions = 3
    overrun = b.before(TOOLS["read_file"].needs)
    assert overrun is not None and overrun.limit == "max_actions" and "3 actions" in overrun.reason


def test_the_smaller_of_max_actions_and_max_tool_calls_applies() -> None:
    b = budget(max_actions=10, max_tool_calls=4)
    b.counters.actions = 3
    assert b.before(TOOLS["shell_exec"].needs) is None
    b.counters.actions = 4
    assert b.before(TOOLS["shell_exec"].needs) is not None
    b = budget(max_actions=None, max_tool_calls=None)
    b.counters.actions = 10**9
    assert b.before(TOOLS["shell_exec"].needs) is None, "no limit at all"


def test_wall_time_refuses_at_its_limit_not_before() -> None:
    b = budget(max_wall_seconds=60)
    b.counters.started -= 59.5
    assert b.before(TOOLS["read_file"].needs) is None
    b.counters.started -= 0.5
    overrun = b.before(TOOLS["read_file"].needs)
    assert overrun is not None and overrun.limit == "max_wall_seconds"


def test_shell_time_limits_shell_commands_only() -> None:
    b = budget(max_shell_seconds=10)
    b.counters.shell_seconds = 9.999
    assert b.before(TOOLS["shell_exec"].needs) is None
    assert b.remaining_shell_seconds() == pytest.approx(0.001)
    b.counters.shell_seconds = 10
    overrun = b.before(TOOLS["shell_exec"].needs)
    assert overrun is not None and overrun.limit == "max_shell_seconds"
    assert all(b.before(TOOLS[tool].needs) is None for tool in NAMES
               if tool not in ("shell_exec", "exec"))
    assert b.before(TOOLS["exec"].needs) is not None, "a program runs on shell time too"
    assert b.remaining_shell_seconds() == 0
    b.counters.shell_seconds = 12
    assert b.remaining_shell_seconds() == 0, "never negative"
    assert budget().remaining_shell_seconds() is None


def test_output_bytes_refuse_every_tool_once_used_up() -> None:
    b = budget(max_output_bytes=2048)
    b.counters.output_bytes = 2047
    assert all(b.before(TOOLS[tool].needs) is None for tool in NAMES)
    b.counters.output_bytes = 2048
    assert {b.before(TOOLS[tool].needs).limit for tool in NAMES} == {  # type: ignore[union-attr]
        "max_output_bytes"}


def test_commits_limit_git_commit_only() -> None:
    b = budget(max_commits=2)
    b.counters.commits = 1
    assert b.before(TOOLS["git_commit"].needs) is None
    b.counters.commits = 2
    overrun = b.before(TOOLS["git_commit"].needs)
    assert overrun is not None and overrun.limit == "max_commits"
    assert b.before(TOOLS["shell_exec"].needs) is None, "shell commits are measured after, not refused"


def test_rows_limit_db_mutate_before_and_weighs_a_change_exactly() -> None:
    b = budget(max_database_rows=5)
    b.counters.rows = 4
    assert b.before(TOOLS["db_mutate"].needs) is None
    assert b.weigh(5) is None, "exactly at the limit is allowed"
    overrun = b.weigh(6)
    assert overrun is not None and overrun.limit == "max_database_rows"
    assert "6 changed rows (2 by this action)" in overrun.reason
    b.counters.rows = 5
    assert b.before(TOOLS["db_mutate"].needs) is not None
    assert b.before(TOOLS["db_query"].needs) is None and b.before(TOOLS["shell_exec"].needs) is None


def test_a_zero_budget_allows_nothing_it_limits() -> None:
    b = budget(max_commits=0, max_database_rows=0)
    assert b.before(TOOLS["git_commit"].needs) is not None and b.before(TOOLS["db_mutate"].needs) is not None
    assert b.weigh(0) is None and b.weigh(1) is not None


def test_counters_serialise_rounded_without_the_clock() -> None:
    b = budget()
    b.counters.shell_seconds = 1.23456
    data = b.counters.to_dict()
    assert "started" not in data and data["shell_seconds"] == 1.235
    assert data["wall_seconds"] >= 0


@pytest.mark.parametrize(("settings", "counter", "value", "tool", "expected"), [
    ({"max_actions": 7}, "actions", 7, "read_file",
     ("max_actions", "the episode has used its 7 actions")),
    ({"max_wall_seconds": 2.5}, "started", 3, "read_file",
     ("max_wall_seconds", "the episode has run for its 2.5 s")),
    ({"max_shell_seconds": 1.5}, "shell_seconds", 1.5, "shell_exec",
     ("max_shell_seconds", "shell commands have used their 1.5 s")),
    ({"max_output_bytes": 4096}, "output_bytes", 4096, "db_query",
     ("max_output_bytes", "actions have returned their 4096 bytes")),
    ({"max_commits": 3}, "commits", 3, "git_commit",
     ("max_commits", "the episode has made its 3 commits (blast radius)")),
    ({"max_database_rows": 9}, "rows", 9, "db_mutate",
     ("max_database_rows", "the episode has changed its 9 rows (blast radius)")),
])
def test_each_overrun_names_its_limit_and_the_amount(
        settings: dict[str, object], counter: str, value: float, tool: str,
        expected: tuple[str, str]) -> None:
    b = budget(**settings)
    if counter == "started":
        b.counters.started -= value
    else:
        setattr(b.counters, counter, value)
    overrun = b.before(TOOLS[tool].needs)
    assert overrun is not None and (overrun.limit, overrun.reason) == expected
    assert overrun.kind == expected[0] and overrun.detail == expected[1]
    assert overrun.allowed == next(iter(settings.values()))
    assert overrun.actual == pytest.approx(value, abs=0.01)


def test_a_database_change_is_weighed_with_what_it_brings_the_episode_to() -> None:
    b = budget(max_database_rows=5)
    b.counters.rows = 2
    overrun = b.weigh(9)
    assert overrun is not None
    assert (overrun.limit, overrun.allowed, overrun.actual) == ("max_database_rows", 5, 9)
    assert overrun.to_dict() == {"limit": "max_database_rows", "allowed": 5, "actual": 9,
                                 "detail": "it would bring the episode to 9 changed rows (7 "
                                           "by this action); the blast radius allows 5"}


def test_each_limit_is_checked_only_for_the_tools_that_need_it() -> None:
    from harness.limits import Limit

    b = budget(max_commits=0, max_database_rows=0, max_shell_seconds=1)
    b.counters.shell_seconds = 1
    assert b.before() is None, "an action needing none of them"
    assert b.before([Limit.MAX_COMMITS]).limit == "max_commits"  # type: ignore[union-attr]
    assert b.before([Limit.MAX_DATABASE_ROWS]).limit == "max_database_rows"  # type: ignore[union-attr]
    assert b.before([Limit.MAX_SHELL_SECONDS]).limit == "max_shell_seconds"  # type: ignore[union-attr]


def test_the_wall_time_is_reported_to_the_millisecond() -> None:
    b = budget()
    b.counters.started -= 1.23456
    seconds = b.counters.to_dict()["wall_seconds"]
    assert seconds == pytest.approx(1.2346, abs=0.001) and round(seconds, 3) == seconds
    assert isinstance(seconds, float)


def test_an_overrun_reports_seconds_to_the_millisecond() -> None:
    b = budget(max_shell_seconds=1.0, max_wall_seconds=0.5)
    b.counters.shell_seconds = 1.23456
    b.counters.started -= 0.7123456
    wall = b.before()
    assert wall is not None and wall.limit == "max_wall_seconds"
    assert wall.actual == round(wall.actual, 3) and 0.7 <= wall.actual < 5
    b = budget(max_shell_seconds=1.0)
    b.counters.shell_seconds = 1.23456
    shell = b.before(TOOLS["shell_exec"].needs)
    assert shell is not None and shell.actual == 1.235
