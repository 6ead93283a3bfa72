"""Scenarios: a fixture, a task, the state given and the state hidden, perturbations,
limits, and the checks that judge a run. Validated with errors naming key and line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.config import (
    _UNION_TAGS,
    BlastRadius,
    EffectPolicy,
    Guardrails,
    StateSource,
    _describe,
    _record_lines,
    unique_policy_ids,
)
from harness.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolFailure(_Strict):
    """A tool that fails (without running) with a given probability."""

    type: Literal["tool_failure"]
    tool: str
    probability: float = Field(ge=0, le=1)
    message: str = "the tool is temporarily unavailable"


class SlowTool(_Strict):
    """A tool that answers late with a given probability."""

    type: Literal["slow_tool"]
    tool: str
    probability: float = Field(ge=0, le=1)
    seconds: float = Field(gt=0, le=30)


class PlantedFile(_Strict):
    """A file written into the workspace before the agent starts (a stale README, a
    poisoned config, a flaky test)."""

    type: Literal["file"]
    path: str
    content: str


Perturbation = Annotated[ToolFailure | SlowTool | PlantedFile, Field(discriminator="type")]


class ShellCheck(_Strict):
    """Passes when the command exits 0 in the sandbox at the end of the run."""

    name: str
    shell: str


class SqlCheck(_Strict):
    """Passes when the query's first column of its first row is true."""

    name: str
    sql: str


SafetyCheck = Literal["no_blast_radius_breach", "no_protected_block", "no_guardrail_block",
                      "no_protected_path_write"]
SAFETY: list[SafetyCheck] = ["no_blast_radius_breach", "no_protected_block",
                             "no_guardrail_block", "no_protected_path_write"]


class Checks(_Strict):
    """How a run is judged."""

    success: list[ShellCheck | SqlCheck] = []
    safety: list[SafetyCheck] = SAFETY


class Hidden(_Strict):
    """State that exists in the sandbox but is not told to the agent."""

    env: dict[str, str] = {}


class Scenario(_Strict):
    """One scenario of the live-harness evaluation."""

    name: str
    failure_mode: Literal["benchmark_mirage", "environmental_overtrust", "guardrail_bypass",
                          "hidden_runtime_state", "unbounded_tool_execution",
                          "non_deterministic_traces", "model_tool_swap", "success"]
    description: str = ""
    repo: str = "shop"
    seed: str | None = "shop"
    task: str
    state: list[StateSource] = []
    hidden: Hidden = Hidden()
    perturbations: list[Perturbation] = []
    limits: BlastRadius = BlastRadius(dry_run=True)
    guardrails: Guardrails = Guardrails()
    checks: Checks = Checks()
    effects: list[EffectPolicy] = []
    """Safety checks written as effect policies: judged after every action (a `block` one
    undoes the action) and over the whole run; each one broken is a safety violation
    named `effects[<id>]`."""
    max_steps: int = Field(30, ge=1)
    targets: list[str] = []
    """The checks a reckless agent is expected to fail here."""

    @field_validator("effects")
    @classmethod
    def _unique_ids(cls, value: list[EffectPolicy]) -> list[EffectPolicy]:
        return unique_policy_ids(value)
    agents: dict[str, list[dict[str, Any]]] = {}
    """Reference scripted agents (`good`, `reckless`), as lists of tool calls."""


def load_scenario(path: Path) -> Scenario:
    """Read and validate one scenario file."""
    from pydantic import ValidationError

    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    try:
        return Scenario.model_validate(data or {})
    except ValidationError as exc:
        tags = _UNION_TAGS | {"tool_failure", "slow_tool", "ShellCheck", "SqlCheck"}
        problems = [_describe(error, lines, str(path), tags) for error in exc.errors()]
        raise ConfigError("invalid scenario:\n  " + "\n  ".join(problems)) from None


def scenario_files(paths: list[Path]) -> list[Path]:
    """The scenario files named by files and folders (every *.yaml inside)."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return files


def scenarios_in(paths: list[Path]) -> list[Scenario]:
    """Scenarios from files and folders (every *.yaml inside), sorted by name."""
    return sorted((load_scenario(f) for f in scenario_files(paths)), key=lambda s: s.name)
