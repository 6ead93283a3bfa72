"""The sandbox database server: PostgreSQL in a container with no network, serving a
Unix socket in a host folder that sandboxes mount. One long-lived server per major
version and harness home holds the cached baselines and every sandbox's copy; the
target database never serves a sandbox."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from harness.errors import SandboxError
from harness.home import home_key, locked, state_dir
from harness.sandbox import engine, images, labels
from harness.sandbox.engine import Engine, EngineError, NotFound, container_status, mount
from harness.sandbox.reflink import (
    REFLINK_MIN_VERSION,
    CloneSupport,
    DataImage,
    can_reflink,
    host_support,
)

SERVER_UID = 999
CONTAINER_SOCKET_DIR = "/var/run/postgresql"
DB_SERVER_KIND = "db-server"
DEFAULT_DATA_IMAGE_BYTES = 32 << 30
"""The size of a server's reflink data image (sparse: the host pays for what is written)."""
CLONE_NOT_KNOWN = CloneSupport(False, "the server did not say")


def available_versions() -> list[int]:
    """Major versions with an image definition under sandboxes/ (postgres-N)."""
    root = images.definitions_root()
    return sorted(int(p.name.split("-", 1)[1]) for p in root.glob("postgres-*")
                  if p.name.split("-", 1)[1].isdigit())


@dataclass(frozen=True)
class VersionChoice:
    """The sandbox server's major version for a target, and why."""

    version: int
    reason: str


def choose_version(target_major: int | None, wanted: int | None = None) -> VersionChoice:
    """The server version for a target: as asked, else the target's own, else the
    nearest newer one (pg_dump cannot read a newer server than itself, and a copy restored
    into an older server may not load)."""
    versions = available_versions()
    if not versions:
        raise SandboxError("no PostgreSQL image definitions (sandboxes/postgres-N)")
    if wanted is not None:
        if wanted not in versions:
            raise SandboxError(f"no image for PostgreSQL {wanted}; available: {versions}")
        return VersionChoice(wanted, f"PostgreSQL {wanted}, as sandbox.database.server_version "
                                     f"asks")
    if target_major is None:
        # A seed file names no version; its SQL is run by the host's psql.
        host = client_major("psql")
        chosen = host if host in versions else versions[0]
        return VersionChoice(chosen, f"PostgreSQL {chosen} for a seed file (the host's psql "
                                     f"is {host})")
    if target_major in versions:
        return VersionChoice(target_major, f"PostgreSQL {target_major}, the target's own")
    newer = [v for v in versions if v > target_major]
    if newer:
        return VersionChoice(newer[0], f"PostgreSQL {newer[0]}: the target runs "
                                       f"{target_major}, which has no image; {newer[0]} is the "
                                       f"nearest newer one")
    raise SandboxError(
        f"the target runs PostgreSQL {target_major}, newer than every sandbox image "
        f"({versions}); add sandboxes/postgres-{target_major}")


@dataclass(frozen=True)
class ServerAddress:
    """How to reach a running sandbox database server from the host."""

    socket_dir: Path
    password: str
    user: str = "postgres"
    version: int | None = None
    """The server's major version."""
    clone: CloneSupport = CLONE_NOT_KNOWN
    """How a database is copied from its template here: by reflink, or why by copying."""
    chosen_because: str = ""
    """Why this server's major version serves the target (`choose_version`'s reason)."""

    def conninfo(self, dbname: str = "postgres", *, with_password: bool = True) -> str:
        """A libpq connection string for `dbname` as the superuser (without the password
        for command-line tools, which get it from PGPASSWORD)."""
        params = {"host": str(self.socket_dir), "user": self.user, "dbname": dbname}
        if with_password:
            params["password"] = self.password
        return psycopg.conninfo.make_conninfo("", **params)

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection to `dbname` (autocommit unless told otherwise)."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.conninfo(dbname), **kwargs)

    def run_script(self, path: Path, dbname: str = "postgres") -> None:
        """Run a SQL file with psql (stopping at the first error) as the superuser."""
        done = subprocess.run(
            [client_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
             "-U", self.user, "-d", dbname, "-f", str(path)],
            capture_output=True, env=client_environment(self.password), check=False)
        if done.returncode != 0:
            raise SandboxError(f"{path} failed: "
                               f"{done.stderr.decode(errors='replace').strip()[-2000:]}")

    def fresh_database(self, name: str, setup_sql: str = "") -> str:
        """Create (or re-create) the database `name`, run `setup_sql` in it; its DSN."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if setup_sql:
            with self.connect(name) as conn:
                conn.execute(setup_sql)
        return self.conninfo(name)


def client_tool(name: str) -> str:
    """The path of a PostgreSQL client program (psql, pg_dump, pg_restore) on the host."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise SandboxError(f"{name} is not installed; `apt-get install postgresql-client`")


def client_major(name: str = "pg_dump") -> int | None:
    """The major version of a client program on the host (None when it is missing)."""
    try:
        done = subprocess.run([client_tool(name), "--version"], capture_output=True, text=True,
                              check=False)
    except SandboxError:
        return None
    words = [w for w in done.stdout.split() if w[:1].isdigit()]
    return int(words[0].split(".")[0]) if words else None


def client_environment(password: str | None) -> dict[str, str]:
    """The environment for a client program: no inherited PG* settings, this password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password:
        env["PGPASSWORD"] = password
    return env


SANDBOX_SERVER_SETTINGS = {"max_prepared_transactions": "0"}
"""What the sandbox server runs with beside its image's settings. No prepared
transactions: a transaction prepared in one action and committed in a later one would
land its rows where no action's effects are judged."""


class DatabaseServer:
    """The server for one major version; `ensure()` starts it when it is not running."""

    def __init__(self, version: int = 15, client: Engine | None = None, *,
                 instance: str = "sandbox", settings: dict[str, str] | None = None,
                 data_image_size: int | None = DEFAULT_DATA_IMAGE_BYTES) -> None:
        self.version = version
        self._client = client
        self.settings = dict(SANDBOX_SERVER_SETTINGS if settings is None and
                             instance == "sandbox" else settings or {})
        """Server settings beside the image's own (`-c name=value`); the sandbox server's
        are the same whoever starts it (an episode, a fixture, gc)."""
        suffix = "" if instance == "sandbox" else f"-{instance}"
        self.name = f"harness-pg{version}{suffix}-{home_key()}"
        self.volume = f"{self.name}-data"
        self.folder = state_dir(f"postgres/{version}{suffix}")
        self.socket_dir = self.folder / "socket"
        self.data_image = DataImage(self.folder, data_image_size or DEFAULT_DATA_IMAGE_BYTES,
                                    owner=(SERVER_UID, SERVER_UID))
        """Where a server of PostgreSQL 18 or newer keeps its data when the host can mount
        it; with `data_image_size=None` a new server keeps it on a Docker volume instead,
        as older versions do (an image already made is used either way)."""
        self._wants_image = data_image_size is not None

    @property
    def client(self) -> Engine:
        """The Docker engine."""
        if self._client is None:
            self._client = engine.connect()
        return self._client

    def ensure(self) -> ServerAddress:
        """Start the server if needed and wait until it answers."""
        # Episodes, MCP sessions and eval workers open at once: one of them starts the
        # server, and the catalogue is changed by one at a time.
        with locked(self.folder / "ensure.lock"):
            password = self._password()
            not_on_image = self._prepare_data()
            container = self._container()
            if container is None or container_status(container) != "running":
                if container is not None:
                    self._remove(volumes=False)
                self._start(on_image=not_on_image is None)
            address = ServerAddress(self.socket_dir, password, version=self.version,
                                    clone=self._clone_support(not_on_image))
            self._wait(address)
            with address.connect() as conn:
                # Sandbox roles may connect to their own database and nothing else.
                conn.execute("REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 "
                             "FROM PUBLIC")
        return address

    def run_client(self, script: str, *, environment: dict[str, str],
                   socket_dirs: list[str]) -> tuple[int, str]:
        """Run `script` (bash) with this version's client programs, in a throwaway container
        of the server's image on the host's network (to reach a source by TCP on the
        loopback or anywhere the host can), with this server's socket folder at
        /run/harness/sandbox-socket and each of `socket_dirs` at its own path. Returns the
        exit code and stderr."""
        tag = images.ensure(self.client, images.ImageDefinition.named(f"postgres-{self.version}"))
        mounts = [mount("bind", str(self.socket_dir), "/run/harness/sandbox-socket")]
        mounts += [mount("bind", folder, folder, read_only=True) for folder in socket_dirs]
        container = self.client.create_container({
            "Image": tag, "Entrypoint": ["bash", "-c", script],
            "Env": [f"{k}={v}" for k, v in environment.items()],
            "Labels": labels.resource_labels(f"{self.name}-client", "db-client"),
            "HostConfig": {"NetworkMode": "host", "Mounts": mounts, "CapDrop": ["ALL"],
                           "SecurityOpt": ["no-new-privileges:true"]}})
        try:
            self.client.start_container(container)
            code = self.client.wait_container(container)
            errors = self.client.container_logs(container, stdout=False).decode(
                errors="replace")
        finally:
            self.client.remove_container(container, volumes=False)
        return code, errors

    def running(self) -> bool:
        """Whether the server's container is up."""
        container = self._container()
        return container is not None and container_status(container) == "running"

    def destroy(self) -> None:
        """Stop the server and delete its data (every cached baseline and sandbox copy),
        on its volume or its data image (unmounted and deleted)."""
        if self._container() is not None:
            self._remove(volumes=True)
        with contextlib.suppress(NotFound):
            self.client.remove_volume(self.volume)
        self.data_image.remove()

    # ------------------------------------------------------------ internals

    def _password(self) -> str:
        path = self.folder / "superuser-password"
        if not path.exists():
            self.folder.chmod(0o700)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o644)  # read by the server's uid through a single-file mount
        return path.read_text().strip()

    def _container(self) -> dict[str, Any] | None:
        return self.client.find_container(self.name)

    def _remove(self, *, volumes: bool) -> None:
        with contextlib.suppress(NotFound):
            self.client.remove_container(self.name, volumes=volumes)

    def _volume(self) -> dict[str, Any] | None:
        return self.client.find_volume(self.volume)

    def _prepare_data(self) -> str | None:
        """Mount the data image when the server keeps its data there (making it on a new
        server that can have one); None then, else why the data is on a Docker volume."""
        if self.version < REFLINK_MIN_VERSION:
            return (f"PostgreSQL {self.version} copies every file (cloning by reflink, "
                    f"file_copy_method = clone, is new in {REFLINK_MIN_VERSION})")
        if not self.data_image.exists():
            if not self._wants_image:
                return f"the server keeps its data on the Docker volume {self.volume}"
            if self._volume() is not None:
                return (f"the server's data was put on the Docker volume {self.volume} before "
                        f"it could be on a reflink image (`harness gc --all` removes it; the "
                        f"next start makes the image)")
            found = host_support()
            if not found.reflink:
                return f"no reflink data image on this host: {found.detail}"
        if not self.data_image.mounted():
            # Not mounted (a reboot): a container still running holds the old mount, and the
            # same filesystem must never be mounted twice.
            if self._container() is not None:
                self._remove(volumes=False)
            try:
                self.data_image.ensure()
            except SandboxError as exc:
                raise SandboxError(f"cannot mount the sandbox database server's data image "
                                   f"{self.data_image.image}: {exc}") from exc
        return None

    def _clone_support(self, not_on_image: str | None) -> CloneSupport:
        """Whether the data directory clones by reflink, and why not."""
        if self.version < REFLINK_MIN_VERSION:
            return CloneSupport(False, not_on_image or "")
        if not_on_image is None:
            found = can_reflink(self.data_image.mountpoint)
            return CloneSupport(found.reflink, f"data on the XFS image {self.data_image.image}"
                                + ("" if found.reflink else f": {found.detail}"))
        volume = self._volume()
        where = Path(volume.get("Mountpoint") or "/nonexistent") if volume else None
        if where is not None and os.access(where.parent, os.W_OK):
            # Docker's own storage may already clone (XFS with reflink, btrfs).
            found = can_reflink(where.parent)
            if found.reflink:
                return CloneSupport(True, f"data on the Docker volume {self.volume}: "
                                          f"{found.detail}")
            return CloneSupport(False, f"{not_on_image}, and {found.detail}")
        return CloneSupport(False, f"{not_on_image}, whose filesystem cannot be checked here")

    def _start(self, *, on_image: bool) -> None:
        tag = images.ensure(self.client, images.ImageDefinition.named(f"postgres-{self.version}"))
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.socket_dir.glob(".s.PGSQL.*"):
            stale.unlink()
        if os.geteuid() == 0:
            os.chown(self.socket_dir, SERVER_UID, SERVER_UID)
        else:
            self.socket_dir.chmod(0o777)
        server_labels = {**labels.resource_labels(self.name, DB_SERVER_KIND)}
        if on_image:
            data = mount("bind", str(self.data_image.pgdata), "/var/lib/postgresql/data")
        else:
            data = mount("volume", self.volume, "/var/lib/postgresql/data")
            with contextlib.suppress(EngineError):
                self.client.create_volume(self.volume, labels=server_labels)
        try:
            self.client.start_container(self.client.create_container({
                "Image": tag, "Labels": server_labels,
                "Cmd": [part for name, value in sorted(self.settings.items())
                        for part in ("-c", f"{name}={value}")],
                "HostConfig": {
                    "NetworkMode": "none",
                    "Mounts": [
                        mount("bind", str(self.socket_dir), CONTAINER_SOCKET_DIR),
                        mount("bind", str(self.folder / "superuser-password"),
                               "/run/harness/superuser-password", read_only=True),
                        data,
                    ],
                    "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"],
                    "ShmSize": 256 << 20, "Memory": 4 << 30,
                }}, name=self.name))
        except EngineError as exc:
            raise SandboxError(f"cannot start the sandbox database server: {exc}") from exc

    def _wait(self, address: ServerAddress, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with address.connect() as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = exc
                container = self._container()
                if container is None or container_status(container) == "exited":
                    logs = self.client.container_logs(self.name, tail=20).decode(
                        errors="replace") if container else ""
                    raise SandboxError(f"the sandbox database server stopped:\n{logs}") from exc
                time.sleep(0.1)
        raise SandboxError(f"the sandbox database server did not answer in {timeout:.0f}s: {last}")
