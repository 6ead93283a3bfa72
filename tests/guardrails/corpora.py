"""The guardrail corpora, as every corpus test reads them: the cases of a file, the policy
they are judged under (corpus/policy.yaml) and the action each case stands for."""

from __future__ import annotations

import json
from pathlib import Path

from harness.config import load_config
from harness.guardrails import Context, Policy
from harness.tools import ToolAction

CORPUS = Path(__file__).parent / "corpus"
POLICY = Policy(load_config(CORPUS / "policy.yaml").guardrails)
CONTEXT = Context(branch="agent/work")


def cases(*names: str) -> list[dict[str, object]]:
    """Every case of the named files (one JSON object a line)."""
    return [json.loads(line) for name in names
            for line in (CORPUS / name).read_text().splitlines() if line]


def text(case: dict[str, object]) -> str:
    """The input a case judges: its one parameter's value."""
    parameters = case["parameters"]
    assert isinstance(parameters, dict)
    return str(next(iter(parameters.values())))


def action(case: dict[str, object]) -> ToolAction:
    """The tool call a case stands for."""
    return ToolAction.from_dict({"tool": case["tool"], "parameters": case["parameters"]})
