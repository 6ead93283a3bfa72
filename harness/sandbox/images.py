"""Sandbox image definitions (the folders under `sandboxes/`) and their builds.

Two build paths produce the same image: the definition's Dockerfile on top of
`debian:bookworm-slim` when a registry answers, or, offline, on top of a Debian
root filesystem made by `debootstrap` from the same package list and loaded
with `docker import`. Tags carry a hash of the definition, so a changed
definition gets a new image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from harness.errors import ImageError
from harness.sandbox import labels

SUITE = "bookworm"
ONLINE_BASE = "debian:bookworm-slim"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
Progress = Callable[[str], None]


def definitions_root() -> Path:
    """The `sandboxes/` folder: $HARNESS_SANDBOXES or the one beside the package."""
    override = os.environ.get("HARNESS_SANDBOXES")
    root = Path(override) if override else Path(__file__).resolve().parents[2] / "sandboxes"
    if not root.is_dir():
        raise ImageError(f"no image definitions at {root}; set HARNESS_SANDBOXES to the folder")
    return root


@dataclass(frozen=True)
class ImageDefinition:
    """One folder under `sandboxes/`: a Dockerfile, its packages.txt and helper files."""

    name: str
    directory: Path

    @classmethod
    def named(cls, name: str) -> ImageDefinition:
        """The definition `sandboxes/NAME`."""
        directory = definitions_root() / name
        if not (directory / "Dockerfile").is_file():
            raise ImageError(f"image definition {name!r} has no Dockerfile in {directory}")
        return cls(name, directory)

    @property
    def content_hash(self) -> str:
        """A digest of every file of the definition, names and bytes."""
        digest = hashlib.sha256()
        for path in sorted(p for p in self.directory.rglob("*") if p.is_file()):
            digest.update(path.relative_to(self.directory).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()[:12]

    @property
    def tag(self) -> str:
        """The image reference this definition builds, e.g. `harness-agent:3f2a9c01b7de`."""
        return f"harness-{self.name}:{self.content_hash}"

    @property
    def packages(self) -> list[str]:
        """The Debian packages listed in packages.txt."""
        path = self.directory / "packages.txt"
        if not path.is_file():
            return []
        lines = (line.strip() for line in path.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]


def exists(client: docker.DockerClient, tag: str) -> bool:
    """Whether the engine has the image `tag`."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure(
    client: docker.DockerClient,
    definition: ImageDefinition,
    *,
    offline: bool | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> str:
    """Build `definition` unless its tag exists; return the tag.

    `offline=None` tries the registry first and falls back to debootstrap when
    the base image cannot be pulled.
    """
    say = progress or (lambda _line: None)
    tag = definition.tag
    if exists(client, tag) and not force:
        return tag
    if offline is None:
        offline = not _pull_base(client, say)
    elif not offline and not _pull_base(client, say):
        raise ImageError(f"cannot pull {ONLINE_BASE}; build with --offline instead")
    base = _offline_base(client, definition, force=force, say=say) if offline else ONLINE_BASE
    _build(client, definition, base=base, offline=offline, say=say)
    return tag


def _pull_base(client: docker.DockerClient, say: Progress) -> bool:
    if exists(client, ONLINE_BASE):
        return True
    try:
        client.images.pull(ONLINE_BASE)
    except docker.errors.APIError as exc:
        say(f"cannot pull {ONLINE_BASE} ({_first_line(exc)}); building offline")
        return False
    return True


def _offline_base(
    client: docker.DockerClient, definition: ImageDefinition, *, force: bool, say: Progress
) -> str:
    """A Debian root filesystem with the definition's packages, imported as an image."""
    packages = sorted(set(definition.packages))
    key = hashlib.sha256(f"{SUITE}\n{' '.join(packages)}".encode()).hexdigest()[:12]
    tag = f"harness-rootfs:{SUITE}-{key}"
    if exists(client, tag) and not force:
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "offline build needs debootstrap: `apt-get install debootstrap` (Debian/Ubuntu), "
            f"or give the engine access to a registry that has {ONLINE_BASE}"
        )
    if os.geteuid() != 0:
        raise ImageError("offline build runs debootstrap, which needs root; run it as root")
    mirror = os.environ.get("HARNESS_DEBIAN_MIRROR", DEFAULT_MIRROR)
    with tempfile.TemporaryDirectory(prefix="harness-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        say(f"debootstrap {SUITE} with {len(packages)} packages from {mirror}")
        _run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                SUITE, str(rootfs), mirror,
            ],
            what="debootstrap",
        )
        tarball = Path(scratch) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], what="tar")
        say(f"docker import as {tag}")
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version,
            changes=[f"LABEL {labels.IMAGE_HASH}={key}", "CMD [\"bash\"]"],
        )
    return tag


def _build(
    client: docker.DockerClient,
    definition: ImageDefinition,
    *,
    base: str,
    offline: bool,
    say: Progress,
) -> None:
    repository, _, version = definition.tag.partition(":")
    say(f"building {definition.tag} on {base}")
    stream = client.api.build(
        path=str(definition.directory),
        tag=definition.tag,
        buildargs={"BASE": base},
        labels={labels.IMAGE_HASH: version, labels.KIND: f"image-{definition.name}"},
        network_mode="none" if offline else None,
        rm=True,
        forcerm=True,
        decode=True,
    )
    log: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            tail = "".join(log[-15:])
            raise ImageError(f"building {definition.tag} failed: {chunk['error']}\n{tail}")
        if "stream" in chunk:
            log.append(chunk["stream"])
    client.images.get(definition.tag).tag(repository, "latest")


def _run(argv: list[str], *, what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        raise ImageError(f"{what} failed with exit {done.returncode}:\n{tail}")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
