"""The driver of an evaluation spread over a Ray cluster: it checks that every node runs
the same harness, images and scenarios, prepares each node once, keeps a bounded number
of runs in flight (one `harness_episode` resource each), retries infrastructure failures
on another node, and records each run exactly once in the output folder."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
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
    prepare,
    run_episode,
)
from harness.eval.runner import RunResult

RESOURCE = "harness_episode"
"""The custom resource a node declares (`ray start --resources '{"harness_episode": N}'`)
for the episodes it can hold at once; each run needs one."""
DEFAULT_MAX_ATTEMPTS = 3

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
    _prepare_nodes(ray, nodes, files, images_tarball)
    ledger = resumed or Ledger.start(out, seed=seed)  # only once the cluster can run it
    jobs: list[RunKey] = [(scenario, agent, run) for scenario in scenario_names
                          for agent in agents for run in range(repeat)]
    scheduler = _Scheduler(ray, ledger, files, seed, max_attempts, max_in_flight, progress)
    scheduler.run([job for job in jobs if job not in ledger.done])
    return ClusterEvaluation(ledger.run_id, [ledger.done[job] for job in jobs], ledger.folder,
                             identities, scheduler.retried, ledger.duplicates)


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
    return prepare(files, images_tarball)


def _run_on_node(request: EpisodeRequest) -> EpisodeOutcome:
    import ray

    return run_episode(request, ray.get_runtime_context().get_node_id())


def _prepare_nodes(ray: Any, nodes: list[ClusterNode], files: tuple[str, ...],
                   images_tarball: str | None) -> None:
    task = ray.remote(num_cpus=0, max_retries=0)(_prepare_node)
    refs = {node.node_id: task.options(scheduling_strategy=_on(ray, node.node_id, soft=False))
            .remote(files, images_tarball) for node in nodes}
    for node_id, ref in refs.items():
        try:
            ray.get(ref)
        except _node_lost(ray) as exc:
            _LOG.warning("node %s left the cluster while being prepared (%s)", node_id[:8],
                         _cause(exc))
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"preparing node {node_id[:8]} failed: {_cause(exc)}") from None


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
                 progress: Callable[[RunResult], None] | None) -> None:
        self.ray, self.ledger, self.files, self.seed = ray, ledger, files, seed
        self.max_attempts, self.max_in_flight, self.progress = \
            max_attempts, max_in_flight, progress
        self.task = ray.remote(num_cpus=0, max_retries=0,
                               resources={RESOURCE: 1})(_run_on_node)
        self.pending: dict[Any, _Attempt] = {}
        self.retried = 0

    def run(self, jobs: list[RunKey]) -> None:
        queue = [_Attempt(key, 1, frozenset()) for key in jobs]
        while queue or self.pending:
            nodes = _episode_nodes(self.ray)
            limit = self.max_in_flight or max(1, int(2 * sum(n.capacity for n in nodes)))
            while queue and len(self.pending) < limit:
                self._submit(queue.pop(0), nodes)
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=2.0)
            for ref in ready:
                attempt = self.pending.pop(ref)
                retry = self._collect(ref, attempt)
                if retry is not None:
                    queue.insert(0, retry)

    def _submit(self, attempt: _Attempt, nodes: list[ClusterNode]) -> None:
        scenario, agent, run = attempt.key
        request = EpisodeRequest(self.ledger.run_id, self.files, scenario, agent, run,
                                 self.seed, attempt.number)
        options: dict[str, Any] = {}
        elsewhere = [n for n in nodes if n.node_id not in attempt.avoid]
        if attempt.avoid and elsewhere:
            target = max(elsewhere, key=lambda n: n.capacity)
            options["scheduling_strategy"] = _on(self.ray, target.node_id, soft=True)
        self.pending[self.task.options(**options).remote(request)] = attempt

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
