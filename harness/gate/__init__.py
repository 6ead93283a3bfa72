"""The CI gate for agent pull requests."""

from harness.gate.report import Check, GateReport
from harness.gate.runner import GateError, run_gate

__all__ = ["Check", "GateError", "GateReport", "run_gate"]
