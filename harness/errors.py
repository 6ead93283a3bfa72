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


class SandboxFileNotFound(SandboxError, FileNotFoundError):
    """A file (or a working folder) the sandbox was asked for does not exist."""


class SandboxIsADirectory(SandboxError, IsADirectoryError):
    """A file was asked for where the sandbox has a folder."""


class SandboxNotADirectory(SandboxError, NotADirectoryError):
    """A folder was asked for where the sandbox has a file."""


class SandboxPermissionError(SandboxError, PermissionError):
    """The agent may not read, write or run what it was asked to."""


class SandboxFileTooLarge(SandboxError):
    """A file is larger than the caller's limit; nothing of it was read."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        super().__init__(f"{path} is {size} bytes, over the limit of {limit}")
        self.path, self.size, self.limit = path, size, limit
