"""Checks that the machine can run sandboxes, each with what to do when it cannot."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import HarnessError
from harness.sandbox import engine, images


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, what was found and what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def run_checks() -> list[Check]:
    """Every check, in the order a new user should fix them."""
    checks = [_engine()]
    if checks[0].ok:
        checks.append(_image("agent"))
        checks.append(_image("postgres-15"))
    checks.append(_binary("git", "apt-get install git"))
    checks.append(_postgres())
    checks.append(_disk_limit())
    checks.append(_workspace_view())
    checks.append(_reflink_clone())
    checks.append(_binary("debootstrap", "apt-get install debootstrap (for offline image builds)",
                          required=False))
    return checks


def _engine() -> Check:
    try:
        client = engine.connect()
        version = client.version().get("Version", "?")
    except HarnessError as exc:
        return Check("docker engine", False, str(exc).split(". ")[0], engine.START_HINT)
    return Check("docker engine", True, f"Docker {version} answers")


def _image(name: str) -> Check:
    try:
        definition = images.ImageDefinition.named(name)
        if engine.connect().has_image(definition.tag):
            return Check(f"image {name}", True, definition.tag)
        return Check(f"image {name}", False, f"{definition.tag} is not built",
                     "harness images build")
    except HarnessError as exc:
        return Check(f"image {name}", False, str(exc), "check the sandboxes/ folder")


def _disk_limit() -> Check:
    from harness.sandbox.disk import mechanism

    found = mechanism()
    if found.enforced:
        return Check("sandbox disk limit", True, found.detail)
    return Check("sandbox disk limit", True, f"NOT ENFORCED: {found.detail}",
                 "run harness as root on a host with loop devices, or accept the risk "
                 "(sandbox.require_disk_limit refuses to run without it)")


def _reflink_clone() -> Check:
    from harness.home import state_dir
    from harness.sandbox.reflink import IMAGE_NAME, REFLINK_MIN_VERSION, DataImage, host_support

    found = host_support()
    unmounted = "not mounted: the next server start mounts it"
    images = [f"{image} ({'mounted' if DataImage(image.parent, 0).mounted() else unmounted})"
              for image in sorted(state_dir("postgres").glob(f"*/{IMAGE_NAME}"))]
    where = f"; data images: {', '.join(images)}" if images else ""
    if found.reflink:
        return Check("database clone by reflink", True,
                     f"available: {found.detail}, used by PostgreSQL {REFLINK_MIN_VERSION} "
                     f"sandbox servers (sandbox.database.server_version: "
                     f"{REFLINK_MIN_VERSION} or clone: reflink){where}")
    return Check("database clone by reflink", True,
                 f"NOT AVAILABLE: {found.detail}; sandbox databases are copied file by file "
                 f"(FILE_COPY, time grows with the database){where}",
                 "run harness as root on a host with loop devices and xfsprogs "
                 "(apt-get install xfsprogs)")


def _workspace_view() -> Check:
    from harness.sandbox.overlay import support

    found = support()
    if found.available:
        return Check("sandbox workspace", True, found.detail)
    return Check("sandbox workspace", True, f"each sandbox checks out its own work tree (no "
                 f"copy-on-write view: {found.detail})",
                 "run harness as root on a kernel with overlayfs for constant-time opens")


def _binary(name: str, fix: str, *, required: bool = True) -> Check:
    path = shutil.which(name)
    if path:
        return Check(name, True, path)
    return Check(name, not required, "not found" + ("" if required else " (optional)"), fix)


def _postgres() -> Check:
    for name in ("pg_ctl", "pg_dump"):
        path = shutil.which(name)
        if path is None:
            return Check("postgres binaries", False, f"{name} not found",
                         "apt-get install postgresql")
    version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    return Check("postgres binaries", True, version)
