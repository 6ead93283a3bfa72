"""Removal of what crashed runs left behind: labelled containers, volumes and workspaces."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
import docker.errors

from harness.sandbox import labels
from harness.sandbox.home import state_dir


@dataclass(frozen=True)
class GcReport:
    """What `collect_garbage` removed."""

    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    workspaces: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def collect_garbage(client: docker.DockerClient, *, everything: bool = False) -> GcReport:
    """Remove harness resources whose creating process is gone (all of them with
    `everything=True`, which also ends sandboxes still in use)."""
    report = GcReport()
    selector: dict[str, str | list[str] | bool] = {"label": labels.SANDBOX}
    for container in client.containers.list(all=True, filters=selector):
        if everything or _orphaned(container.labels):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            report.containers.append(container.name or container.id or "?")
    for volume in client.volumes.list(filters=selector):
        if everything or _orphaned(volume.attrs.get("Labels") or {}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
                report.volumes.append(volume.name)
    for folder in state_dir("workspaces").iterdir():
        owner = folder / "owner.pid"
        pid = owner.read_text().strip() if owner.is_file() else ""
        if everything or not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            report.workspaces.append(folder.name)
    return report


def _orphaned(resource_labels: dict[str, str]) -> bool:
    return not _alive(resource_labels.get(labels.PID, ""))


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
