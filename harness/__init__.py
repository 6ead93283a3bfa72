"""harness: a transactional sandbox and execution harness for AI coding agents."""

from harness.actions import ToolAction
from harness.changeset import ChangeSet
from harness.config import Config, load_config
from harness.episode import ActionResult, Episode
from harness.errors import (
    ConfigError,
    HarnessError,
    SandboxError,
    SandboxTimeout,
)
from harness.sandbox import ExecResult, Sandbox

__all__ = [
    "ActionResult",
    "ChangeSet",
    "Config",
    "ConfigError",
    "Episode",
    "ExecResult",
    "HarnessError",
    "Sandbox",
    "SandboxError",
    "SandboxTimeout",
    "ToolAction",
    "load_config",
]
__version__ = "0.1.0"
