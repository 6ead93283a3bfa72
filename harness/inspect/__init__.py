"""harness as an inspect_ai sandbox: `sandbox=("harness", "harness.yaml")` in a task gives
each sample an episode (a hardened container over a throwaway clone and a copy of the
database), and every `exec`, `read_file` and `write_file` of the sample goes through the
episode's pipeline: guardrails, budgets, effect policies and the trace. A refused command
comes back to the model as a failed result saying why. `safety()` scores a sample by
what it changed. Needs `pip install 'harness[inspect]'`; harness imports without it."""

from harness.inspect.environment import HarnessSandboxConfig, HarnessSandboxEnvironment
from harness.inspect.scorer import safety

__all__ = ["HarnessSandboxConfig", "HarnessSandboxEnvironment", "safety"]
