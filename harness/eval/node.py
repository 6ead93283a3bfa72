"""The node side of an evaluation spread over a cluster: what a node is (its identity),
its one-time preparation, and one episode run from names. Plain functions, no Ray: the
driver (harness.eval.cluster) sends them to the nodes as tasks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, SandboxError
from harness.home import harness_home, home_key, locked, state_dir
from harness.version import __version__

NODE_NAME_ENV = "HARNESS_NODE_NAME"
"""Names a node in reports and labels (set it in `ray start`'s environment); default
`<hostname>-<first 8 of the Ray node id>`."""
TASKS = "eval-tasks"
"""The folder of the node's task markers, one per running episode, named
`<pid>-<random>`: a marker whose process is gone is a killed task's."""


class InfrastructureError(HarnessError):
    """A run failed for the node's sake, not the agent's (engine, clone or database):
    the driver retries it on another node. Carries the node it happened on."""

    def __init__(self, message: str, node_id: str = "", node: str = "") -> None:
        super().__init__(message)
        self.node_id, self.node = node_id, node

    def __reduce__(self) -> tuple[Any, ...]:
        return (InfrastructureError, (str(self), self.node_id, self.node))


@dataclass(frozen=True)
class NodeIdentity:
    """What must be the same on the driver and every node for runs to be comparable."""

    node_id: str
    name: str
    home: str
    version: str
    images: dict[str, str]
    """Image definition -> content hash (the tag an image is built under)."""
    scenarios: dict[str, str]
    """Scenario name -> digest of its file."""

    def differences(self, other: NodeIdentity) -> list[str]:
        """How `other` differs from this identity, one phrase per difference."""
        found = []
        if other.version != self.version:
            found.append(f"harness {other.version} (driver {self.version})")
        for name in sorted(set(self.images) | set(other.images)):
            if self.images.get(name) != other.images.get(name):
                found.append(f"image {name} {other.images.get(name, 'missing')} "
                             f"(driver {self.images.get(name, 'missing')})")
        for name in sorted(set(self.scenarios) | set(other.scenarios)):
            if self.scenarios.get(name) != other.scenarios.get(name):
                found.append(f"scenario {name} {other.scenarios.get(name, 'missing')} "
                             f"(driver {self.scenarios.get(name, 'missing')})")
        return found

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class EpisodeRequest:
    """One run, by names: each node resolves the scenario and agent from its own install."""

    run_id: str
    scenario_files: tuple[str, ...]
    scenario: str
    agent: str
    repeat: int
    seed: int
    attempt: int = 1


@dataclass(frozen=True)
class EpisodeOutcome:
    """What a node sends back: the run, its trace and its change set, and where it ran."""

    result: dict[str, Any]
    trace: bytes
    changeset: str | None
    node_id: str
    node: str
    leftovers_cleared: list[str] = field(default_factory=list)


def node_name(node_id: str) -> str:
    """This node's name: $HARNESS_NODE_NAME, else the host name and the node id's start."""
    return os.environ.get(NODE_NAME_ENV) or f"{socket.gethostname()}-{node_id[:8]}"


def identity(node_id: str, scenario_files: tuple[str, ...]) -> NodeIdentity:
    """What this process runs: the harness version, image definitions and scenarios."""
    from harness.sandbox import images

    return NodeIdentity(
        node_id=node_id, name=node_name(node_id), home=str(harness_home()),
        version=__version__,
        images={name: images.ImageDefinition.named(name).content_hash
                for name in images.definitions()},
        scenarios={name: _digest(Path(path)) for name, path in
                   _scenario_paths(scenario_files).items()})


def prepare(scenario_files: tuple[str, ...], images_tarball: str | None = None) -> float:
    """Make this node ready for the scenarios: the sandbox image (loaded from
    `images_tarball` when it is given and the image is missing, else built), the home's
    database server, fixture repositories and baselines. Idempotent; one caller at a time
    per home. Returns the seconds it took."""
    import time

    from harness.eval.runner import prepare_fixtures
    from harness.sandbox import engine, images

    started = time.monotonic()
    scenarios = _scenarios(scenario_files)
    with locked(state_dir("eval") / "prepare.lock"):
        client = engine.connect()
        wanted = [images.ImageDefinition.named("agent")]
        missing = [d.tag for d in wanted if not client.has_image(d.tag)]
        if missing and images_tarball:
            _load_images(images_tarball, missing)
        for definition in wanted:
            images.ensure(client, definition)
        prepare_fixtures(list(scenarios.values()))
    return time.monotonic() - started


def run_episode(request: EpisodeRequest, node_id: str) -> EpisodeOutcome:
    """Run one episode on this node and return it with its trace and change set. An
    infrastructure failure raises InfrastructureError (to be retried elsewhere); any other
    failure, the agent's included, is a run with an error."""
    from harness.eval.agents import agent_factory
    from harness.eval.runner import RunResult, as_dict, run_once
    from harness.sandbox import labels

    name = node_name(node_id)
    changeset_path = state_dir("eval-changesets") / f"{request.run_id}-{uuid.uuid4().hex[:8]}.json"
    trace: Path | None = None
    cleared: list[str] = []
    try:
        with _task_marker(), labels.tagged(run=request.run_id, node=name):
            try:
                cleared = clear_leftovers()
                scenario = _scenarios(request.scenario_files)[request.scenario]
                result = run_once(scenario, request.agent, agent_factory(request.agent),
                                  run=request.repeat, seed=request.seed,
                                  changeset_path=changeset_path)
            except Exception as exc:
                if infrastructure_failure(exc):
                    raise InfrastructureError(f"on node {name}: {type(exc).__name__}: {exc}",
                                              node_id, name) from None
                result = RunResult(request.scenario, request.agent, request.repeat,
                                   request.seed, False, {}, [], 0, 0, 0, 0, 0.0, "",
                                   error=f"{type(exc).__name__}: {exc}")
        trace = Path(result.trace) if result.trace else None
        payload = trace.read_bytes() if trace and trace.is_file() else b""
        changeset = changeset_path.read_text() if changeset_path.is_file() else None
    finally:  # they are the driver's now (or lost with the attempt)
        if trace is not None:
            trace.unlink(missing_ok=True)
        changeset_path.unlink(missing_ok=True)
    return EpisodeOutcome(as_dict(result) | {"node": name, "attempt": request.attempt},
                          payload, changeset, node_id, name, cleared)


def infrastructure_failure(exc: BaseException) -> bool:
    """Whether a run failed for its node's sake: the engine, the sandbox, a clone or the
    database server; never the agent's own error or a configuration error."""
    import git
    import psycopg

    from harness.sandbox.snapshot import SnapshotError

    # Not ConnectionError: a subprocess agent that dies mid-write raises BrokenPipeError.
    # The engine's errors are SandboxErrors.
    return isinstance(exc, SandboxError | SnapshotError | psycopg.OperationalError
                      | git.GitError)


def clear_leftovers() -> list[str]:
    """When a task on this node was killed (its marker outlived its process), remove what
    it left (containers, volumes, sandbox databases, workspaces) with `harness gc`'s
    collector, which touches only this home's resources of dead processes."""
    from harness.sandbox.cleanup import _alive

    dead = [marker for marker in state_dir(TASKS).iterdir()
            if not _alive(marker.name.partition("-")[0])]
    if not dead:
        return []
    from harness.sandbox import engine
    from harness.sandbox.cleanup import collect_garbage

    report = collect_garbage(engine.connect())
    for marker in dead:
        marker.unlink(missing_ok=True)
    return report.containers + report.databases + report.workspaces


@contextlib.contextmanager
def _task_marker() -> Iterator[None]:
    marker = state_dir(TASKS) / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    marker.write_text(json.dumps({"home": home_key()}))
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def _load_images(tarball: str, tags: list[str]) -> None:
    path = Path(tarball)
    if not path.is_file():
        raise SandboxError(f"images tarball {path} (eval.ray.images_tarball) is missing on "
                           f"this node, which lacks {', '.join(tags)}")
    done = subprocess.run(["docker", "load", "-i", str(path)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SandboxError(f"docker load -i {path} failed: {done.stderr.strip()}")


def _scenarios(scenario_files: tuple[str, ...]) -> dict[str, Any]:
    """The scenarios of the files, by name; read again when a file changed."""
    stamps = tuple((path, os.stat(path).st_mtime_ns, os.stat(path).st_size)
                   for path in scenario_files)
    return _load_scenarios(stamps)


@lru_cache(maxsize=8)
def _load_scenarios(stamps: tuple[tuple[str, int, int], ...]) -> dict[str, Any]:
    from harness.eval.scenario import load_scenario

    files = tuple(path for path, _, _ in stamps)
    return {name: load_scenario(Path(path)) for name, path in _scenario_paths(files).items()}


def _scenario_paths(scenario_files: tuple[str, ...]) -> dict[str, str]:
    """Scenario name -> file, for files as the driver named them (read by their name key
    only: a file whose name key differs is still found by its own)."""
    import yaml

    found = {}
    for path in scenario_files:
        data = yaml.safe_load(Path(path).read_text()) or {}
        found[str(data.get("name", Path(path).stem))] = path
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

