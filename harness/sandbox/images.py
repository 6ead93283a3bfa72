"""Sandbox image definitions (the folders under `sandboxes/`) and their builds.

Two build paths produce the same image: the definition's Dockerfile on top of
`debian:<suite>-slim` when a registry answers, or, offline, on top of a Debian
root filesystem made by `debootstrap` from the same package list and suite and loaded
with `docker import`. Tags carry a hash of the definition, so a changed
definition gets a new image. A definition may take its Dockerfile and scripts from a
shared folder (its `extends` file names it) and add its own package list and suite.
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

from harness.errors import ImageError
from harness.progress import report
from harness.sandbox import labels
from harness.sandbox.engine import Engine, EngineError

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
Progress = Callable[[str], None]


def definitions_root() -> Path:
    """The `sandboxes/` folder: $HARNESS_SANDBOXES or the one beside the package."""
    override = os.environ.get("HARNESS_SANDBOXES")
    root = Path(override) if override else Path(__file__).resolve().parents[2] / "sandboxes"
    if not root.is_dir():
        raise ImageError(f"no image definitions at {root}; set HARNESS_SANDBOXES to the folder")
    return root


def definitions() -> list[str]:
    """The names of every buildable definition (folders with a packages.txt)."""
    return sorted(p.name for p in definitions_root().iterdir()
                  if (p / "packages.txt").is_file())


@dataclass(frozen=True)
class ImageDefinition:
    """One folder under `sandboxes/`: a package list, a Dockerfile and helper files (its
    own, or a shared folder's named in its `extends` file), and optionally a `suite`."""

    name: str
    directory: Path

    @classmethod
    def named(cls, name: str) -> ImageDefinition:
        """The definition `sandboxes/NAME`."""
        directory = definitions_root() / name
        definition = cls(name, directory)
        if "Dockerfile" not in definition.files():
            raise ImageError(f"image definition {name!r} has no Dockerfile in {directory}")
        return definition

    def files(self) -> dict[str, Path]:
        """The build context: relative name -> file (its own files over the shared ones)."""
        found: dict[str, Path] = {}
        extends = self.directory / "extends"
        if extends.is_file():
            shared = self.directory.parent / extends.read_text().strip()
            found.update({p.relative_to(shared).as_posix(): p
                          for p in sorted(shared.rglob("*")) if p.is_file()})
        if self.directory.is_dir():
            found.update({p.relative_to(self.directory).as_posix(): p
                          for p in sorted(self.directory.rglob("*")) if p.is_file()})
        return found

    @property
    def content_hash(self) -> str:
        """A digest of every file of the definition, names and bytes."""
        digest = hashlib.sha256()
        for name, path in sorted(self.files().items()):
            digest.update(name.encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()[:12]

    @property
    def tag(self) -> str:
        """The image reference this definition builds, e.g. `harness-agent:3f2a9c01b7de`."""
        return f"harness-{self.name}:{self.content_hash}"

    @property
    def suite(self) -> str:
        """The Debian suite its packages come from (default bookworm)."""
        path = self.files().get("suite")
        return path.read_text().strip() if path else SUITE

    @property
    def online_base(self) -> str:
        """The registry image the online path builds on."""
        return f"debian:{self.suite}-slim"

    @property
    def packages(self) -> list[str]:
        """The Debian packages listed in packages.txt."""
        path = self.files().get("packages.txt")
        if path is None:
            return []
        lines = (line.strip() for line in path.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("#")]


def ensure(
    client: Engine,
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
    say = progress or report
    tag = definition.tag
    if client.has_image(tag) and not force:
        return tag
    if progress is None:  # built on first use: say why this call takes minutes
        report(f"building the sandbox image {tag} (first use; it takes a few minutes, once)")
    online_base = definition.online_base
    if offline is None:
        offline = not _pull_base(client, online_base, say)
    elif not offline and not _pull_base(client, online_base, say):
        raise ImageError(f"cannot pull {online_base}; build with --offline instead")
    base = _offline_base(client, definition, force=force, say=say) if offline else online_base
    _build(client, definition, base=base, offline=offline, say=say)
    return tag


def _pull_base(client: Engine, base: str, say: Progress) -> bool:
    if client.has_image(base):
        return True
    try:
        client.pull_image(base)
    except EngineError as exc:
        say(f"cannot pull {base} ({_first_line(exc)}); building offline")
        return False
    return True


def _offline_base(
    client: Engine, definition: ImageDefinition, *, force: bool, say: Progress
) -> str:
    """A Debian root filesystem with the definition's packages, imported as an image."""
    packages = sorted(set(definition.packages))
    suite = definition.suite
    key = hashlib.sha256(f"{suite}\n{' '.join(packages)}".encode()).hexdigest()[:12]
    tag = f"harness-rootfs:{suite}-{key}"
    if client.has_image(tag) and not force:
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "offline build needs debootstrap: `apt-get install debootstrap` (Debian/Ubuntu), "
            f"or give the engine access to a registry that has {definition.online_base}"
        )
    if os.geteuid() != 0:
        raise ImageError("offline build runs debootstrap, which needs root; run it as root")
    mirror = os.environ.get("HARNESS_DEBIAN_MIRROR", DEFAULT_MIRROR)
    with tempfile.TemporaryDirectory(prefix="harness-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        say(f"debootstrap {suite} with {len(packages)} packages from {mirror}")
        # A debootstrap older than the suite has no script for it; newer suites are
        # made the way `sid` is.
        script = [] if Path(f"/usr/share/debootstrap/scripts/{suite}").exists() else ["sid"]
        _run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                suite, str(rootfs), mirror, *script,
            ],
            what="debootstrap",
        )
        tarball = Path(scratch) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], what="tar")
        say(f"docker import as {tag}")
        repository, _, version = tag.partition(":")
        try:
            client.import_image(tarball, repository=repository, tag=version,
                                changes=[f"LABEL {labels.IMAGE_HASH}={key}", "CMD [\"bash\"]"])
        except EngineError as exc:
            raise ImageError(f"docker import as {tag} failed: {exc}") from exc
    return tag


def _build(
    client: Engine,
    definition: ImageDefinition,
    *,
    base: str,
    offline: bool,
    say: Progress,
) -> None:
    repository = definition.tag.partition(":")[0]
    say(f"building {definition.tag} on {base}")
    with tempfile.TemporaryDirectory(prefix="harness-context-") as context:
        for name, path in definition.files().items():
            (Path(context) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, Path(context) / name)
        _build_in(client, definition, Path(context), base=base, offline=offline)
    client.tag_image(definition.tag, repository, "latest")


def _build_in(client: Engine, definition: ImageDefinition, context: Path, *,
              base: str, offline: bool) -> None:
    version = definition.tag.partition(":")[2]
    try:
        client.build_image(
            context, tag=definition.tag, buildargs={"BASE": base},
            labels={labels.IMAGE_HASH: version, labels.KIND: f"image-{definition.name}"},
            network_mode="none" if offline else None)
    except EngineError as exc:
        raise ImageError(f"building {definition.tag} failed: {exc.message}") from exc


def _run(argv: list[str], *, what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        raise ImageError(f"{what} failed with exit {done.returncode}:\n{tail}")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
