"""The exceptions harness raises; callers catch `HarnessError` or one of its kinds."""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error harness raises on purpose."""


class ConfigError(HarnessError, ValueError):
    """A configuration file or value is invalid; the message names the key and line."""


class SandboxError(HarnessError):
    """A sandbox could not be created, used or removed."""


class EngineUnavailable(SandboxError):
    """No Docker engine answers; the message says how to start one."""


class ImageError(SandboxError):
    """A sandbox image is missing or could not be built."""


class WorkspaceError(SandboxError):
    """The throwaway git workspace could not be made or read."""


class SandboxTimeout(SandboxError, TimeoutError):
    """An operation on the sandbox itself (not a command inside it) ran out of time."""
