"""Agents named on the command line: `good` (a scenario's own scripted agent by name),
`scripted:FILE.jsonl`, `subprocess:COMMAND`, `openai:MODEL@BASE_URL`,
`anthropic:MODEL[@BASE_URL]`."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from harness.agents import AnthropicAgent, OpenAIAgent, ScriptedAgent, SubprocessAgent
from harness.agents.anthropic import DEFAULT_BASE_URL
from harness.errors import ConfigError
from harness.eval.runner import AgentFactory
from harness.eval.scenario import Scenario


def agent_factory(spec: str) -> AgentFactory:
    """A factory making a fresh agent for each run, from a command-line spec."""
    kind, _, rest = spec.partition(":")
    if not rest:
        def from_scenario(scenario: Scenario) -> ScriptedAgent:
            if spec not in scenario.agents:
                raise ConfigError(f"scenario {scenario.name} has no scripted agent {spec!r} "
                                  f"(it has {sorted(scenario.agents)})")
            return ScriptedAgent(scenario.agents[spec])
        return from_scenario
    if kind == "scripted":
        path = Path(rest)
        if not path.is_file():
            raise ConfigError(f"no actions file {path} for agent {spec!r}")
        actions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return lambda scenario: ScriptedAgent(actions)
    if kind == "subprocess":
        argv = shlex.split(rest)
        return lambda scenario: SubprocessAgent(argv)
    if kind == "openai":
        model, _, base_url = rest.partition("@")
        if not model or not base_url:
            raise ConfigError(f"agent {spec!r}: write openai:MODEL@BASE_URL")
        key = os.environ.get("OPENAI_API_KEY")
        return lambda scenario: OpenAIAgent(base_url, model, api_key=key)
    if kind == "anthropic":
        model, _, base_url = rest.partition("@")
        if not model:
            raise ConfigError(f"agent {spec!r}: write anthropic:MODEL or anthropic:MODEL@BASE_URL")
        base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        key = os.environ.get("ANTHROPIC_API_KEY")
        return lambda scenario: AnthropicAgent(model, base_url=base_url, api_key=key)
    raise ConfigError(f"unknown agent spec {spec!r}: use NAME, scripted:FILE, "
                      "subprocess:COMMAND, openai:MODEL@BASE_URL or anthropic:MODEL[@BASE_URL]")
