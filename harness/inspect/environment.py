"""The inspect_ai sandbox provider: one harness episode per sample."""

from __future__ import annotations

import base64
import dataclasses
import threading
from pathlib import Path
from typing import Any, Literal, overload

import anyio
from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUserUnsupportedError,
    sandboxenv,
)
from pydantic import BaseModel, ConfigDict

from harness.config import Config, load_config
from harness.episode import ActionResult, Episode
from harness.errors import SandboxError
from harness.tools import ToolAction

_CONFIG_FILE = "harness.yaml"


class HarnessSandboxConfig(BaseModel):
    """The provider's configuration: the harness.yaml to run each sample under."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: str = _CONFIG_FILE
    """Path of the harness configuration (relative to the task's folder)."""


@sandboxenv(name="harness")
class HarnessSandboxEnvironment(SandboxEnvironment):
    """A sample's sandbox: a harness episode. Commands run as the sandbox's agent user;
    another user is refused (SandboxUserUnsupportedError) unless the configuration allows
    it (`sandbox.hardening.exec_users`)."""

    def __init__(self, episode: Episode) -> None:
        super().__init__()
        self.episode = episode
        self._lock = threading.Lock()  # an episode runs one action at a time

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def config_files(cls) -> list[str]:
        return [_CONFIG_FILE]

    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        return HarnessSandboxConfig(**config)

    @classmethod
    async def task_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None
                        ) -> None:
        # Images and the database baseline once per task, not in every sample at once.
        settings = _load(config)
        await anyio.to_thread.run_sync(_prepare, settings)

    @classmethod
    async def sample_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                          metadata: dict[str, str]) -> dict[str, SandboxEnvironment]:
        settings = _load(config)
        episode = await anyio.to_thread.run_sync(Episode(settings).open)
        return {"default": cls(episode)}

    @classmethod
    async def sample_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment],
                             interrupted: bool) -> None:
        for environment in environments.values():
            if isinstance(environment, HarnessSandboxEnvironment):
                changes = await anyio.to_thread.run_sync(environment.episode.close)
                _remember(environment.episode, changes.summary())

    # ------------------------------------------------------------ actions

    async def exec(self, cmd: list[str], input: str | bytes | None = None,
                   cwd: str | None = None, env: dict[str, str] | None = None,
                   user: str | None = None, timeout: int | None = None,
                   timeout_retry: bool = True, concurrency: bool = True) -> ExecResult[str]:
        if user == self.episode.config.sandbox.hardening.user:
            user = None  # the container's own user, as configured
        if user is not None and not self.episode.config.sandbox.hardening.may_run_as(user):
            raise SandboxUserUnsupportedError(
                f"harness runs commands as the sandbox's agent user, not {user!r} (allow it "
                "in sandbox.hardening.exec_users)")
        parameters: dict[str, Any] = {"argv": list(cmd)}
        if user is not None:
            parameters["user"] = user
        if cwd is not None:
            parameters["cwd"] = cwd
        if env:
            parameters["env"] = dict(env)
        if timeout is not None:
            parameters["timeout"] = timeout
        if isinstance(input, bytes):
            parameters["stdin_base64"] = base64.b64encode(input).decode()
        elif input is not None:
            parameters["stdin"] = input
        result = await self._act(ToolAction("exec", parameters))
        output = result.output
        if result.refusal is not None:
            return ExecResult(False, 1, "", f"harness refused this command "
                                            f"({result.refusal.kind} {result.refusal.rule}): "
                                            f"{result.refusal.reason}\n")
        if "exit_code" not in output:
            _raise(output, " ".join(cmd))
            return ExecResult(False, 1, "", f"{output.get('error', 'the command failed')}\n")
        if output.get("timed_out"):
            raise TimeoutError(f"the command ran past its {timeout} s and was killed")
        exit_code, stdout, stderr = output["exit_code"], output["stdout"], output["stderr"]
        limit = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
        if output.get("truncated") or max(len(stdout.encode()), len(stderr.encode())) > limit:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR,
                                           stdout[:limit])
        if exit_code == 126 and "ermission denied" in stderr:
            raise PermissionError(f"the agent may not run {cmd[0]}: {stderr.strip()}")
        return ExecResult(exit_code == 0, exit_code, stdout, stderr)

    async def write_file(self, file: str, contents: str | bytes) -> None:
        parameters = {"path": file, "content": contents} if isinstance(contents, str) else {
            "path": file, "content_base64": base64.b64encode(contents).decode()}
        result = await self._act(ToolAction("write_file", parameters))
        if result.refusal is not None:
            raise PermissionError(f"harness refused writing {file} ({result.refusal.kind} "
                                  f"{result.refusal.rule}): {result.refusal.reason}")
        if result.status != "ok":
            _raise(result.output, file)
            raise SandboxError(result.output.get("error", f"cannot write {file}"))

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> str | bytes:
        limit = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
        result = await self._act(ToolAction("read_file", {"path": file, "max_bytes": limit}))
        if result.refusal is not None:
            raise PermissionError(f"harness refused reading {file} ({result.refusal.kind} "
                                  f"{result.refusal.rule}): {result.refusal.reason}")
        output = result.output
        if result.status != "ok":
            if output.get("error_kind") == "too_large":
                raise OutputLimitExceededError(
                    SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR, None)
            _raise(output, file)
            raise SandboxError(output.get("error", f"cannot read {file}"))
        data = output["content"].encode() if "content" in output else \
            base64.b64decode(output["content_base64"])
        return data.decode("utf-8") if text else data

    async def _act(self, action: ToolAction) -> ActionResult:
        def run() -> ActionResult:
            with self._lock:
                return self.episode.act(action)

        return await anyio.to_thread.run_sync(run)


def _raise(output: dict[str, Any], name: str) -> None:
    """The builtin error a failed action's `error_kind` stands for (nothing for others)."""
    kinds: dict[str, type[Exception]] = {
        "not_found": FileNotFoundError, "is_a_directory": IsADirectoryError,
        "not_a_directory": NotADirectoryError, "permission": PermissionError,
        "timeout": TimeoutError}
    kind = kinds.get(output.get("error_kind", ""))
    if kind is not None:
        message = output.get("error", "")
        raise kind(message if name in message else f"{message} ({name})")


def _load(config: SandboxEnvironmentConfigType | None) -> Config:
    if isinstance(config, HarnessSandboxConfig):
        path = config.config
    elif isinstance(config, str):
        path = config
    else:
        path = _CONFIG_FILE
    settings = load_config(Path(path))
    sandbox = settings.sandbox
    if not _sets(Path(path), "sandbox", "output_limit_bytes"):
        # inspect's own limit on what an exec returns, unless the config set one.
        limit = max(sandbox.output_limit_bytes, SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE)
        settings = settings.model_copy(update={"sandbox": dataclasses.replace(
            sandbox, output_limit_bytes=limit)})
    return settings


def _sets(path: Path, section: str, key: str) -> bool:
    """Whether the configuration file sets `key` in `section` (validated already)."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return key in (data.get(section) or {})


def _prepare(config: Config) -> None:
    from harness.sandbox import engine, images
    from harness.sandbox.database import open_baseline

    client = engine.connect()
    image = config.sandbox.image
    if ":" not in image and "/" not in image:
        images.ensure(client, images.ImageDefinition.named(image))
    if config.target.database:
        open_baseline(config.target.database, config.sandbox.database)


def _remember(episode: Episode, summary: dict[str, Any]) -> None:
    """Keep the sample's change set in its store, under `harness` (when there is a sample
    to keep it in)."""
    try:
        from inspect_ai.util import store

        store().set("harness", {"trace_id": episode.trace_id, "changeset": summary,
                                "refused": [r.refusal.rule for r in episode.results
                                            if r.refusal is not None]})
    except Exception:  # outside a sample (a direct call, the self_check suite)
        pass


