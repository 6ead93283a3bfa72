"""The pytest plugin (registered through the `pytest11` entry point): a team tests its
agent scaffold, or rehearses a change, as ordinary pytest tests.

    def test_the_agent_voids_open_orders_only(harness_episode):
        harness_episode.act({"tool": "db_mutate", "parameters": {"sql": "..."}})
        change = harness_changes(harness_episode)
        assert change.rows["public.orders"].deleted == 0

Fixtures: `harness_config` (the loaded configuration), `harness_episode` (an open episode
on the configured target: guardrails, budgets, trace; closed after the test) and
`harness_sandbox` (a bare sandbox on the same target: no guardrails). The configuration
comes from `--harness-config`, the `harness_config` ini option, `$HARNESS_CONFIG`, or
`harness.yaml` in the folder pytest runs from, in that order. After each test that used
an episode, its change set summary and trace id are attached to the test's report (and
so to a JUnit file) as user properties.

Only this module loads with pytest; harness's heavy parts load when a fixture is used."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.config import Config
    from harness.episode import Episode
    from harness.sandbox import Sandbox


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "harness: agent sandboxes as fixtures")
    group.addoption("--harness-config", default=None, metavar="PATH",
                    help="harness.yaml for the harness_* fixtures (default: the harness_config "
                         "ini option, $HARNESS_CONFIG, else ./harness.yaml).")
    parser.addini("harness_config", "harness.yaml for the harness_* fixtures", default="")


def config_path(config: pytest.Config) -> Path:
    """Where the fixtures' configuration is, by the precedence the module describes: the
    option, the variable and ./harness.yaml from where pytest runs, the ini option from
    the ini file's folder."""
    here = Path(config.invocation_params.dir)
    option, ini = config.getoption("harness_config"), config.getini("harness_config")
    if option:
        return here / str(option)
    if ini:
        return (config.inipath.parent if config.inipath else here) / str(ini)
    if os.environ.get("HARNESS_CONFIG"):
        return here / os.environ["HARNESS_CONFIG"]
    return here / "harness.yaml"


@pytest.fixture(scope="session")
def harness_config(pytestconfig: pytest.Config) -> Config:
    """The harness configuration the fixtures use (a missing or invalid one fails the
    tests that need it, naming the file and key; it is never a skip)."""
    from harness.config import load_config
    from harness.errors import HarnessError

    path = config_path(pytestconfig)
    if not path.exists():
        pytest.fail(f"harness: no configuration at {path}: pass --harness-config, set the "
                    "harness_config ini option or HARNESS_CONFIG, or add a harness.yaml",
                    pytrace=False)
    try:
        return load_config(path)
    except HarnessError as exc:
        pytest.fail(f"harness: {exc}", pytrace=False)


@pytest.fixture()
def harness_episode(harness_config: Config, request: pytest.FixtureRequest) -> Iterator[Episode]:
    """An open episode on the configured target; closed (trace written, sandbox removed)
    after the test, its change set summary attached to the test's report."""
    from harness.episode import Episode
    from harness.testing import changes

    with Episode(harness_config) as episode:
        yield episode
        request.node.user_properties.append(("harness_trace_id", episode.trace_id))
        try:
            summary = json.dumps(changes(episode).summary(), default=str)
        except Exception as exc:  # the test's own outcome matters more than this note
            summary = json.dumps({"error": str(exc)})
        request.node.user_properties.append(("harness_changes", summary))


@pytest.fixture()
def harness_sandbox(harness_config: Config) -> Iterator[Sandbox]:
    """A bare sandbox on the configured target (repository clone, database copy), no
    guardrails or budgets; removed after the test."""
    from harness.sandbox import Sandbox

    if not harness_config.target.repo:
        pytest.fail("harness: the configuration names no target.repo", pytrace=False)
    with Sandbox(harness_config.target.repo, ref=harness_config.target.branch,
                 settings=harness_config.sandbox, database=harness_config.target.database
                 ) as sandbox:
        yield sandbox


@pytest.fixture()
def harness_changes() -> object:
    """`harness.testing.changes`: the change of an episode, a sandbox or a change set."""
    from harness.testing import changes

    return changes
