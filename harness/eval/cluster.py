"""The driver of an evaluation spread over a Ray cluster: it checks that every node runs
the same harness, images and scenarios, prepares each node once, keeps a bounded number
of runs in flight (one `harness_episode` resource each), retries infrastructure failures
on another node, and records each run exactly once in the output folder."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError
from harness.eval.ledger import INFRASTRUCTURE, Ledger, RunKey
from harness.eval.node import (
    EpisodeOutcome,
    EpisodeRequest,
    InfrastructureError,
    NodeIdentity,
    identity,
    infrastructure_failure,
    prepare,
    run_episode,
)
from harness.eval.runner import RunResult

RESOURCE = "harness_episode"
"""The custom resource a node declares (`ray start --resources '{"harness_episode": N}'`)
for the episodes it can hold at once; each run needs one."""
DEFAULT_MAX_ATTEMPTS = 3
LEAVE_OUT_AFTER = 2
"""Infrastructure failures in a row after which a node gets no more runs: a node whose
engine is gone fails fast, and would otherwise take (and fail) a first attempt of every
run."""

_LOG = logging.getLogger("harness.eval")
_NODE_ID = re.compile(r"node ID: ([0-9a-f]{20,})", re.IGNORECASE)


class ClusterError(HarnessError):
    """The cluster cannot run the evaluation: Ray is missing, no node offers the
    resource, or a node differs from the driver (named in the message)."""


@dataclass(frozen=True)
class ClusterNode:
    """An alive node offering the episode resource."""

    node_id: str
    capacity: float


@dataclass
class ClusterEvaluation:
    """What `evaluate_on_ray` did: the runs (one per key, in job order), the evaluation's
    id (for --resume), the nodes and how their preparation went."""

    run_id: str
    runs: list[RunResult]
    folder: Path
    nodes: list[NodeIdentity]
    retried: int = 0
    duplicates: int = 0
    left_out: dict[str, str] = field(default_factory=dict)
    """Nodes (by name) given no more runs, and why: preparation or runs failed there for
    the node's sake."""


def require_ray() -> Any:
    """The `ray` module, or a ClusterError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError("harness eval --ray needs Ray, an optional extra: "
                           "pip install 'harness[ray]'") from None
    return ray


def evaluate_on_ray(
    scenario_files: list[Path],
    scenario_names: list[str],
    agents: list[str],
    *,
    address: str,
    out: Path,
    repeat: int = 1,
    seed: int = 0,
    resume: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_in_flight: int | None = None,
    images_tarball: str | None = None,
    progress: Callable[[RunResult], None] | None = None,
) -> ClusterEvaluation:
    """Run each scenario `repeat` times with each agent on the Ray cluster at `address`.
    Raises ClusterError before any run when a node differs from the driver."""
    ray = require_ray()
    if max_attempts < 1:
        raise ConfigError("max_attempts must be at least 1")
    resumed = Ledger.resume(out, resume, seed=seed) if resume else None
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    files = tuple(str(path.resolve()) for path in scenario_files)
    nodes = _episode_nodes(ray)
    identities = check_nodes(ray, nodes, files)
    names = {node.node_id: node.name for node in identities}
    left_out = _prepare_nodes(ray, nodes, files, images_tarball)
    if {node.node_id for node in nodes} <= set(left_out):
        raise ClusterError("no node could be prepared, so no run was started:\n  " + "\n  ".join(
            f"node {names.get(node_id, node_id[:8])}: {why}" for node_id, why in left_out.items()))
    ledger = resumed or Ledger.start(out, seed=seed)  # only once the cluster can run it
    jobs: list[RunKey] = [(scenario, agent, run) for scenario in scenario_names
                          for agent in agents for run in range(repeat)]
    scheduler = _Scheduler(ray, ledger, files, seed, max_attempts, max_in_flight, progress,
                           names)
    for node_id, why in left_out.items():
        scheduler.leave_out(node_id, why)
    scheduler.run([job for job in jobs if job not in ledger.done])
    return ClusterEvaluation(ledger.run_id, [ledger.done[job] for job in jobs], ledger.folder,
                             identities, scheduler.retried, ledger.duplicates,
                             {names.get(n, n[:8]): why for n, why in scheduler.left_out.items()})


def check_nodes(ray: Any, nodes: list[ClusterNode], files: tuple[str, ...]
                ) -> list[NodeIdentity]:
    """Every node's identity, after checking it against the driver's; a ClusterError
    naming each node that differs, before anything runs."""
    here = identity("driver", files)
    describe = ray.remote(num_cpus=0, max_retries=0)(_describe_node)
    refs = {node.node_id: describe.options(scheduling_strategy=_on(ray, node.node_id,
                                                                    soft=False)).remote(files)
            for node in nodes}
    identities: list[NodeIdentity] = []
    refused: list[str] = []
    for node_id, ref in refs.items():
        try:
            found: NodeIdentity = ray.get(ref)
        except _node_lost(ray) as exc:
            _LOG.warning("node %s left the cluster while being checked (%s): no runs go there",
                         node_id[:8], _cause(exc))
            continue
        except ray.exceptions.RayError as exc:
            refused.append(f"node {node_id[:8]} could not say what it runs: {_cause(exc)}")
            continue
        identities.append(found)
        if differences := here.differences(found):
            refused.append(f"node {found.name} ({node_id[:8]}): {'; '.join(differences)}")
    if refused:
        raise ClusterError("nodes differ from the driver, so no run was started:\n  "
                           + "\n  ".join(refused)
                           + "\ninstall the same harness, image definitions and scenarios "
                             "on every node")
    return identities


def _describe_node(files: tuple[str, ...]) -> NodeIdentity:
    import ray

    return identity(ray.get_runtime_context().get_node_id(), files)


def _prepare_node(files: tuple[str, ...], images_tarball: str | None) -> float:
    import ray

    try:
        return prepare(files, images_tarball)
    except Exception as exc:
        if infrastructure_failure(exc):
            node_id = ray.get_runtime_context().get_node_id()
            raise InfrastructureError(f"{type(exc).__name__}: {exc}", node_id) from None
        raise


def _run_on_node(request: EpisodeRequest) -> EpisodeOutcome:
    import ray

    return run_episode(request, ray.get_runtime_context().get_node_id())


def _prepare_nodes(ray: Any, nodes: list[ClusterNode], files: tuple[str, ...],
                   images_tarball: str | None) -> dict[str, str]:
    """Prepare every node at once; the nodes left out (by id), with why: those whose
    preparation failed for the node's sake, or that died meanwhile. Any other failure
    (a scenario that does not load) is a ClusterError."""
    task = ray.remote(num_cpus=0, max_retries=0)(_prepare_node)
    refs = {node.node_id: task.options(scheduling_strategy=_on(ray, node.node_id, soft=False))
            .remote(files, images_tarball) for node in nodes}
    left_out: dict[str, str] = {}
    for node_id, ref in refs.items():
        try:
            ray.get(ref)
        except _node_lost(ray) as exc:
            left_out[node_id] = f"it left the cluster while being prepared ({_cause(exc)})"
        except ray.exceptions.RayTaskError as exc:
            if not isinstance(getattr(exc, "cause", None), InfrastructureError):
                raise ClusterError(f"preparing node {node_id[:8]} failed: {_cause(exc)}"
                                   ) from None
            left_out[node_id] = f"its preparation failed: {exc.cause}"
    return left_out


def _node_lost(ray: Any) -> tuple[type[BaseException], ...]:
    """What Ray raises for a task whose node or worker died (or was gone when it came)."""
    exceptions = ray.exceptions
    return (exceptions.NodeDiedError, exceptions.WorkerCrashedError,
            exceptions.ObjectLostError, exceptions.LocalRayletDiedError,
            exceptions.RaySystemError, exceptions.TaskUnschedulableError)


def _episode_nodes(ray: Any) -> list[ClusterNode]:
    nodes = [ClusterNode(node["NodeID"], float(node["Resources"].get(RESOURCE, 0)))
             for node in ray.nodes() if node["Alive"] and node["Resources"].get(RESOURCE)]
    if not nodes:
        raise ClusterError(f"no alive node of the cluster offers the {RESOURCE} resource: "
                           f"start nodes with ray start --resources '{{\"{RESOURCE}\": N}}'")
    return nodes


def _on(ray: Any, node_id: str, *, soft: bool) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=soft)


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else \
        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@dataclass
class _Attempt:
    key: RunKey
    number: int
    avoid: frozenset[str]


class _Scheduler:
    """Keeps at most `max_in_flight` runs submitted; records each result once; resubmits
    a run whose node failed it (up to `max_attempts`), away from the nodes that did."""

    def __init__(self, ray: Any, ledger: Ledger, files: tuple[str, ...], seed: int,
                 max_attempts: int, max_in_flight: int | None,
                 progress: Callable[[RunResult], None] | None, names: dict[str, str]
                 ) -> None:
        self.ray, self.ledger, self.files, self.seed = ray, ledger, files, seed
        self.max_attempts, self.max_in_flight, self.progress = \
            max_attempts, max_in_flight, progress
        self.task = ray.remote(num_cpus=0, max_retries=0,
                               resources={RESOURCE: 1})(_run_on_node)
        self.pending: dict[Any, tuple[_Attempt, str]] = {}
        """In flight: the attempt and the node it was pinned to ('' for Ray's choice)."""
        self.retried = 0
        self.names = names
        """Node id -> name."""
        self.left_out: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        """Infrastructure failures in a row, by node: at LEAVE_OUT_AFTER it gets no more."""

    def leave_out(self, node_id: str, why: str) -> None:
        """Give the node no more runs (runs then go, pinned, to the others)."""
        if node_id not in self.left_out:
            _LOG.warning("node %s gets no more runs: %s", self.names.get(node_id, node_id[:8]),
                         why)
            self.left_out[node_id] = why

    def run(self, jobs: list[RunKey]) -> None:
        queue = [_Attempt(key, 1, frozenset()) for key in jobs]
        while queue or self.pending:
            nodes = _episode_nodes(self.ray)
            capacity = sum(n.capacity for n in nodes if n.node_id not in self.left_out)
            limit = self.max_in_flight or max(1, int(2 * capacity))
            while queue and len(self.pending) < limit:
                self._submit(queue.pop(0), nodes)
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=2.0)
            for ref in ready:
                attempt, _node = self.pending.pop(ref)
                retry = self._collect(ref, attempt)
                if retry is not None:
                    queue.insert(0, retry)

    def _submit(self, attempt: _Attempt, nodes: list[ClusterNode]) -> None:
        scenario, agent, run = attempt.key
        request = EpisodeRequest(self.ledger.run_id, self.files, scenario, agent, run,
                                 self.seed, attempt.number)
        options: dict[str, Any] = {}
        target = ""
        if attempt.avoid or self.left_out:
            # Pinned (softly: a node that dies meanwhile passes it on) to the least loaded
            # node that has not failed it and is not left out.
            allowed = [n for n in nodes if n.node_id not in self.left_out]
            if not allowed:
                raise ClusterError("every node is left out: " + "; ".join(
                    f"{self.names.get(n, n[:8])}: {why}" for n, why in self.left_out.items()))
            candidates = [n for n in allowed if n.node_id not in attempt.avoid] or allowed
            pinned = [node for _, node in self.pending.values()]
            chosen = min(candidates, key=lambda n: pinned.count(n.node_id) / n.capacity)
            target = chosen.node_id
            options["scheduling_strategy"] = _on(self.ray, target, soft=True)
        self.pending[self.task.options(**options).remote(request)] = (attempt, target)

    def _collect(self, ref: Any, attempt: _Attempt) -> _Attempt | None:
        """Record the outcome of `ref`; the attempt to make next when it must be retried."""
        exceptions = self.ray.exceptions
        try:
            outcome: EpisodeOutcome = self.ray.get(ref)
        except (exceptions.RayTaskError, *_node_lost(self.ray)) as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(exc, exceptions.RayTaskError) and \
                    not isinstance(cause, InfrastructureError):
                self._keep(_failed(attempt, self.seed, f"the task failed: {_cause(exc)}"))
                return None
            failed_on = cause.node_id if isinstance(cause, InfrastructureError) else \
                _node_of(exc)
            message = _cause(exc)
            if failed_on:
                self.failures[failed_on] = self.failures.get(failed_on, 0) + 1
                if self.failures[failed_on] >= LEAVE_OUT_AFTER:
                    self.leave_out(failed_on, f"{self.failures[failed_on]} runs in a row failed "
                                              f"there for its sake, the last: {message}")
            if attempt.number >= self.max_attempts:
                self._keep(_failed(attempt, self.seed, f"{INFRASTRUCTURE}, {attempt.number} "
                                                       f"attempt(s): {message}"))
                return None
            self.retried += 1
            _LOG.warning(
                "run %s attempt %d failed (%s); retrying on another node", attempt.key,
                attempt.number, message)
            return _Attempt(attempt.key, attempt.number + 1,
                            attempt.avoid | ({failed_on} if failed_on else set()))
        self.failures.pop(outcome.node_id, None)
        if outcome.leftovers_cleared:
            _LOG.info("node %s removed what killed tasks left there: %s", outcome.node,
                      ", ".join(outcome.leftovers_cleared))
        self._keep(RunResult(**outcome.result), outcome.trace, outcome.changeset)
        return None

    def _keep(self, result: RunResult, trace: bytes = b"", changeset: str | None = None
              ) -> None:
        kept = self.ledger.record(result, trace, changeset)
        if kept is not None and self.progress is not None:
            self.progress(kept)


def _failed(attempt: _Attempt, seed: int, error: str) -> RunResult:
    scenario, agent, run = attempt.key
    return RunResult(scenario, agent, run, seed, False, {}, [], 0, 0, 0, 0, 0.0, "",
                     error=error, node="", attempt=attempt.number)


def _node_of(exc: BaseException) -> str:
    found = _NODE_ID.search(str(exc))
    return found.group(1) if found else ""
