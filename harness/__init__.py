"""harness: a transactional sandbox and execution harness for AI coding agents.

The public API is imported on first use, so that `import harness` (and every `harness`
command) pays only for what it touches."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from harness.version import __version__ as __version__

_PUBLIC = {
    "ActionResult": "harness.episode",
    "ChangeSet": "harness.changeset",
    "Config": "harness.config",
    "ConfigError": "harness.errors",
    "Episode": "harness.episode",
    "EpisodePool": "harness.episode",
    "ExecResult": "harness.sandbox",
    "HarnessError": "harness.errors",
    "Sandbox": "harness.sandbox",
    "SandboxError": "harness.errors",
    "SandboxPool": "harness.sandbox",
    "SandboxTimeout": "harness.errors",
    "ToolAction": "harness.tools.action",
    "load_config": "harness.config",
    "promote": "harness.promote",
}

__all__ = ["ActionResult", "ChangeSet", "Config", "ConfigError", "Episode", "EpisodePool",
           "ExecResult", "HarnessError", "Sandbox", "SandboxError", "SandboxPool",
           "SandboxTimeout", "ToolAction", "load_config", "promote"]

if TYPE_CHECKING:
    from harness.changeset import ChangeSet
    from harness.config import Config, load_config
    from harness.episode import ActionResult, Episode, EpisodePool
    from harness.errors import ConfigError, HarnessError, SandboxError, SandboxTimeout
    from harness.promote import promote
    from harness.sandbox import ExecResult, Sandbox, SandboxPool
    from harness.tools import ToolAction


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
