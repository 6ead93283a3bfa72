"""Removal of what crashed runs left behind, in one pass and in dependency order: dead
sandbox containers and volumes first, then their databases and roles, half-built
baselines, workspaces, and the scratch folders of pushes (once no process works in them)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harness.home import SCRATCH, home_key, scratch_owner, state_dir
from harness.sandbox import labels, pristine
from harness.sandbox.database import OWNER_PID, SandboxDatabase, drop_role
from harness.sandbox.engine import Engine, EngineError, NotFound, container_name
from harness.sandbox.mounts import detach_loop, loop_devices, mounted_devices, unmount
from harness.sandbox.postgres import DB_SERVER_KIND, DatabaseServer, available_versions
from harness.sandbox.reflink import IMAGE_NAME, DataImage


@dataclass(frozen=True)
class GcReport:
    """What `collect_garbage` removed."""

    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    workspaces: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    """Half-built baselines (`*_building`) whose builder is gone."""
    scratch: list[str] = field(default_factory=list)
    data_images: list[str] = field(default_factory=list)
    """Database servers' reflink data images, unmounted and deleted (`everything` only)."""
    pristine: list[str] = field(default_factory=list)
    """Pristine checkouts (the lower layers of workspace views) no sandbox mounts and no one
    used for a while, and half-built ones whose builder is gone."""
    loop_devices: list[str] = field(default_factory=list)
    """Loop devices left attached to a gone sandbox's disk image, detached."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def collect_garbage(client: Engine, *, everything: bool = False,
                    pristine_idle_s: float = pristine.IDLE_S) -> GcReport:
    """Remove this harness home's resources whose creating process is gone (and unlabelled
    ones of older versions), and pristine checkouts no sandbox mounts that were last used
    `pristine_idle_s` ago. With `everything=True`, also its sandboxes still in use, its
    database servers (with their cached baselines) and every unmounted pristine checkout.
    Other homes on the same engine are never touched."""
    report = GcReport()
    # Containers first: a database is only an orphan once its container is gone.
    for container in client.containers(labels=[labels.SANDBOX]):
        tags = container.get("Labels") or {}
        if not _ours(tags, everything):
            continue
        server = tags.get(labels.KIND) == DB_SERVER_KIND
        if everything or (_orphaned(tags) and not server):
            with contextlib.suppress(NotFound):
                client.remove_container(container["Id"], volumes=True)
            report.containers.append(container_name(container))
    for volume in client.volumes(labels=[labels.SANDBOX]):
        volume_labels = volume.get("Labels") or {}
        if not _ours(volume_labels, everything):
            continue
        server = volume_labels.get(labels.KIND) == DB_SERVER_KIND
        if everything or (_orphaned(volume_labels) and not server):
            with contextlib.suppress(EngineError):
                client.remove_volume(volume["Name"])
                report.volumes.append(volume["Name"])
    if not everything:
        _drop_orphan_databases(client, report)
    else:
        # The servers are gone (above): their data images, mounted on the host, go too.
        for image in sorted(state_dir("postgres").glob(f"*/{IMAGE_NAME}")):
            DataImage(image.parent, 0).remove()
            report.data_images.append(str(image))
    for folder in state_dir("workspaces").iterdir():
        owner = folder / "owner.pid"
        pid = owner.read_text().strip() if owner.is_file() else ""
        if not everything and not pid and _younger_than(folder, 300):
            continue  # being made right now: its owner is written next
        if everything or not _alive(pid):
            unmount(folder / "repo")  # a copy-on-write view, mounted on the disk below
            unmount(folder)  # a sandbox's own filesystem: its contents go with it
            shutil.rmtree(folder, ignore_errors=True)
            report.workspaces.append(folder.name)
    for image in state_dir("disks").glob("*.img"):
        if not (state_dir("workspaces") / image.stem).exists():
            image.unlink(missing_ok=True)
    _detach_orphan_loops(report)
    report.pristine.extend(pristine.prune(idle_s=0.0 if everything else pristine_idle_s))
    _remove_scratch(report, everything)
    return report


def _detach_orphan_loops(report: GcReport) -> None:
    """Loop devices still attached to a sandbox disk image whose sandbox is gone and which
    nothing mounts: a process killed between attaching its disk and mounting it."""
    disks, mounted = state_dir("disks"), mounted_devices()
    for device, backing in sorted(loop_devices().items()):
        image = Path(backing.removesuffix(" (deleted)"))
        if image.parent != disks or device in mounted:
            continue
        if not (state_dir("workspaces") / image.stem).exists():
            detach_loop(device)
            report.loop_devices.append(device)


_LEGACY_SCRATCH = "harness-push-*"
"""Push scratch folders of older versions, in the system's temporary folder, unowned."""


def _remove_scratch(report: GcReport, everything: bool) -> None:
    """Scratch folders whose maker is gone and in which no process works any more: a push
    orphaned by a kill (its git, gated or running, works inside its scratch repository)
    keeps its folder until recovery has stopped it. Also the unowned push folders older
    versions left in the temporary folder, once a minute old."""
    working = _working_folders()
    for folder in state_dir(SCRATCH).iterdir():
        if _used(folder, working):
            continue
        if everything or not _alive(scratch_owner(folder)):
            shutil.rmtree(folder, ignore_errors=True)
            report.scratch.append(folder.name)
    for folder in Path(tempfile.gettempdir()).glob(_LEGACY_SCRATCH):
        with contextlib.suppress(OSError):
            if folder.is_dir() and folder.stat().st_uid == os.getuid() and not _used(
                    folder, working) and (everything or not _younger_than(folder, 60)):
                shutil.rmtree(folder, ignore_errors=True)
                report.scratch.append(str(folder))


def _working_folders() -> list[str]:
    """The current folder of every process this user can see."""
    found = []
    for process in Path("/proc").iterdir():
        if process.name.isdigit():
            with contextlib.suppress(OSError):
                found.append(os.readlink(process / "cwd"))
    return found


def _used(folder: Path, working: list[str]) -> bool:
    inside = str(folder.resolve())
    return any(cwd == inside or cwd.startswith(inside + "/") for cwd in working)


def _drop_orphan_databases(client: Engine, report: GcReport) -> None:
    """On every running database server of this home: sandbox databases (sb_*) whose
    container is gone and whose owning process is dead (a sandbox makes its database
    before its container), sandbox roles left without a database, and half-built
    baselines no builder holds."""
    live = {SandboxDatabase.name_for((c.get("Labels") or {}).get(labels.SANDBOX, ""))
            for c in client.containers(labels=[labels.SANDBOX])}
    for version in available_versions():
        server = DatabaseServer(version, client)
        if not server.running():
            continue
        address = server.ensure()
        with address.connect() as conn:
            found = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') "
                                 "FROM pg_database WHERE datname LIKE 'sb\\_%'").fetchall()
            for name, comment in found:
                if name in live or _alive(_owner_pid(comment)):
                    continue
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
                report.databases.append(name)
            roles = conn.execute("""
                SELECT r.rolname FROM pg_roles r
                WHERE r.rolname LIKE 'sb\\_%'
                  AND NOT EXISTS (SELECT 1 FROM pg_database d WHERE d.datname = r.rolname
                                  OR d.datname || '_undo' = r.rolname)
                """).fetchall()
            for (role,) in roles:
                with contextlib.suppress(psycopg.Error):
                    drop_role(conn, role)
                    report.roles.append(role)
            _drop_abandoned_builds(conn, report)


def _drop_abandoned_builds(conn: psycopg.Connection[Any], report: GcReport) -> None:
    """A baseline is built as `<name>_building` by a process holding the advisory lock of
    `<name>`; when the lock is free, no one is building it any more."""
    for (building,) in conn.execute("SELECT datname FROM pg_database "
                                    "WHERE datname LIKE 'baseline\\_%\\_building'").fetchall():
        name = building.removesuffix("_building")
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()
        if not row or not row[0]:
            continue
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(
                sql.Identifier(building)))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(building)))
            report.baselines.append(building)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))


def _owner_pid(comment: str | None) -> str:
    try:
        return str(json.loads(comment or "{}").get(OWNER_PID, ""))
    except (ValueError, AttributeError):
        return ""


def _ours(resource_labels: dict[str, str], everything: bool) -> bool:
    """Of this home; or made before resources named their home (then only orphans)."""
    home = resource_labels.get(labels.HOME)
    return home == home_key() if home is not None else not everything


def _orphaned(resource_labels: dict[str, str]) -> bool:
    return not _alive(resource_labels.get(labels.PID, ""))


def _younger_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except FileNotFoundError:
        return True


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
