"""harness: a transactional sandbox and execution harness for AI coding agents."""

from harness.config import Config, load_config
from harness.errors import (
    ConfigError,
    HarnessError,
    SandboxError,
    SandboxTimeout,
)
from harness.sandbox import ExecResult, Sandbox

__all__ = [
    "Config",
    "ConfigError",
    "ExecResult",
    "HarnessError",
    "Sandbox",
    "SandboxError",
    "SandboxTimeout",
    "load_config",
]
__version__ = "0.1.0"
