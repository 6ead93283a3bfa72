"""The node side of a distributed evaluation: which failures are the node's (retried
elsewhere) and which the agent's (a result), and how a node's identity is compared."""

from __future__ import annotations

import git
import psycopg
import pytest

from harness.errors import ConfigError, EngineUnavailable, HarnessError, WorkspaceError
from harness.eval.node import InfrastructureError, NodeIdentity, infrastructure_failure
from harness.sandbox.engine import EngineError
from harness.sandbox.snapshot import SnapshotError

DRIVER = NodeIdentity("driver", "host-driver", "/home/d", "0.1.0",
                      {"agent": "aaa", "postgres-15": "bbb"}, {"success": "111"})


@pytest.mark.parametrize("failure", [
    EngineUnavailable("no Docker engine answers"), WorkspaceError("clone failed"),
    SnapshotError("baseline failed"), psycopg.OperationalError("server closed the connection"),
    EngineError(500, "Server Error"), git.GitCommandError("clone", 128)])
def test_the_node_s_failures_are_retried(failure: Exception) -> None:
    assert infrastructure_failure(failure)


@pytest.mark.parametrize("failure", [
    HarnessError("cannot start the agent 'nope'"), BrokenPipeError(), ConfigError("no agent"),
    ValueError("the agent's own bug"), TimeoutError("the model did not answer")])
def test_the_agent_s_failures_are_results(failure: Exception) -> None:
    assert not infrastructure_failure(failure)


def test_an_infrastructure_error_keeps_its_node_across_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(InfrastructureError("engine gone", "ab" * 28, "node-a")))
    assert (str(error), error.node_id, error.node) == ("engine gone", "ab" * 28, "node-a")


def test_a_node_is_compared_by_version_images_and_scenarios() -> None:
    same = NodeIdentity("n1", "node-a", "/home/a", "0.1.0", dict(DRIVER.images),
                        dict(DRIVER.scenarios))
    assert DRIVER.differences(same) == [], "name, id and home may differ"
    other = NodeIdentity("n2", "node-b", "/home/b", "0.2.0", {"agent": "zzz"},
                         {"success": "111", "extra": "222"})
    assert DRIVER.differences(other) == [
        "harness 0.2.0 (driver 0.1.0)", "image agent zzz (driver aaa)",
        "image postgres-15 missing (driver bbb)", "scenario extra 222 (driver missing)"]
