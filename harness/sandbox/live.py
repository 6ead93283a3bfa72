"""The sandboxes alive on the engine (`harness ps`): which process owns each, since when,
and which episode's trace it belongs to; read from the labels every sandbox carries."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from harness.home import home_key
from harness.sandbox import labels
from harness.sandbox.engine import Engine, NotFound, container_name, container_status


@dataclass(frozen=True)
class LiveSandbox:
    """One sandbox container: its id, state, age, owner and the trace it serves."""

    sandbox: str
    container: str
    status: str
    age_seconds: float
    owner: str
    pid: int | None
    owner_alive: bool
    trace_id: str | None
    """The episode's trace id (HARNESS_TRACE_ID in the sandbox), when it was given one."""
    image: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def live_sandboxes(client: Engine, *, every_home: bool = False
                   ) -> list[LiveSandbox]:
    """The sandbox containers of this harness home (of every home with `every_home`),
    oldest first."""
    from harness.sandbox.cleanup import _alive

    found = []
    now = time.time()
    for container in client.containers(labels=[f"{labels.KIND}=sandbox"]):
        tags = container.get("Labels") or {}
        if not every_home and tags.get(labels.HOME) != home_key():
            continue
        pid = tags.get(labels.PID, "")
        created = float(tags.get(labels.CREATED_AT) or now)
        try:
            attrs = client.inspect_container(container["Id"])
        except NotFound:
            continue  # removed since it was listed
        env = (attrs.get("Config") or {}).get("Env") or []
        trace = next((v.partition("=")[2] for v in env
                      if v.startswith("HARNESS_TRACE_ID=")), None) or _bound_trace(
                          tags.get(labels.SANDBOX, ""))
        image = (attrs.get("Config") or {}).get("Image") or ""
        found.append(LiveSandbox(tags.get(labels.SANDBOX, ""), container_name(container),
                                 container_status(attrs), round(now - created, 1),
                                 tags.get(labels.OWNER, ""), int(pid) if pid.isdigit() else None,
                                 _alive(pid), trace, image))
    return sorted(found, key=lambda s: -s.age_seconds)


def _bound_trace(sandbox_id: str) -> str | None:
    """The trace id a pooled sandbox was bound to after it started (see Sandbox.bind)."""
    from harness.home import state_dir
    from harness.sandbox.sandbox import BOUND_TRACE

    if not sandbox_id:
        return None
    try:
        return (state_dir("workspaces") / sandbox_id / BOUND_TRACE).read_text().strip() or None
    except OSError:
        return None
