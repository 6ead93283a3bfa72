"""A tool action an agent proposes: the unit that guardrails judge and episodes run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError


class ActionError(HarnessError, ValueError):
    """An action could not be read: malformed JSON, no tool name, parameters not an object."""


@dataclass(frozen=True)
class ToolAction:
    """One call of a tool: its name and its parameters, as an LLM tool call carries them."""

    tool: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        """The parameter `name` if it is a string, else None."""
        value = self.parameters.get(name)
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        """The tool-call shape: {"tool": ..., "parameters": {...}}."""
        return {"tool": self.tool, "parameters": dict(self.parameters)}

    @classmethod
    def from_dict(cls, data: Any) -> ToolAction:
        """Read `{"tool": T, "parameters": {...}}`; the flat form `{"tool": T, "command": ...}`
        (parameters beside the tool name) is accepted too."""
        if not isinstance(data, Mapping):
            raise ActionError(f"an action must be a JSON object, not {type(data).__name__}")
        tool = data.get("tool")
        if not isinstance(tool, str) or not tool:
            raise ActionError("an action needs a \"tool\" name (a non-empty string)")
        if "parameters" in data:
            parameters = data["parameters"]
            if not isinstance(parameters, Mapping):
                raise ActionError(f"\"parameters\" of {tool} must be an object")
            extra = set(data) - {"tool", "parameters", "id"}
            if extra:
                raise ActionError(f"unexpected keys beside \"parameters\": {sorted(extra)}")
        else:
            parameters = {k: v for k, v in data.items() if k not in ("tool", "id")}
        return cls(tool, dict(parameters))

    @classmethod
    def from_json(cls, line: str) -> ToolAction:
        """Read one JSON line."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ActionError(f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
        return cls.from_dict(data)
