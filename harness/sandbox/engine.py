"""The connection to the Docker engine that runs every sandbox container.

A small client of the Engine API: the few calls the harness makes, spoken over the
engine's socket with nothing but the standard library, so that `harness exec` starts
without importing an HTTP stack. One connection per call (a unix socket connects in
microseconds); a command's input and output ride on the connection `exec_attach` (or
`attach_container`) takes over, as the engine's own client does."""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from harness.errors import EngineUnavailable, SandboxError

START_HINT = (
    "Start a Docker engine: on Debian as root `apt-get install docker.io` then "
    "`dockerd --bridge=none --iptables=false &` (./setup does this), elsewhere start "
    "Docker Desktop or the docker service; set DOCKER_HOST if it listens elsewhere."
)
DEFAULT_SOCKET = "/var/run/docker.sock"
CALL_TIMEOUT_S = 120.0
_CHUNK = 1 << 16


class EngineError(SandboxError):
    """The engine refused a call; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


class NotFound(EngineError):
    """No such container, image, volume or exec (status 404)."""


class _Connection:
    """One HTTP/1.1 exchange on a fresh socket; what was read past the headers is kept."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()

    def read_line(self) -> bytes:
        while b"\r\n" not in self.pending:
            self._fill()
        line, _, rest = bytes(self.pending).partition(b"\r\n")
        self.pending = bytearray(rest)
        return line

    def read_exact(self, size: int) -> bytes:
        while len(self.pending) < size:
            self._fill()
        data = bytes(self.pending[:size])
        del self.pending[:size]
        return data

    def read_some(self) -> bytes:
        """What is buffered, or the next piece from the socket (b"" at its end)."""
        if not self.pending:
            return self.sock.recv(_CHUNK)
        data, self.pending = bytes(self.pending), bytearray()
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(_CHUNK)
        if not chunk:
            raise EngineError(502, "the engine closed the connection mid-answer")
        self.pending += chunk

    def close(self) -> None:
        self.sock.close()


class _Answer:
    """An answer's status and headers; its body read whole or piece by piece."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        status_line = connection.read_line().decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise EngineError(502, f"not an HTTP answer: {status_line[:80]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while line := connection.read_line():
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives (chunked, sized, or up to the end of the connection)."""
        connection = self.connection
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(connection.read_line().split(b";")[0] or b"0", 16):
                yield connection.read_exact(size)
                connection.read_line()
            return
        length = self.headers.get("content-length")
        if length is not None:
            remaining = int(length)
            while remaining > 0:
                piece = connection.read_some()
                if not piece:
                    raise EngineError(502, "the engine closed the connection mid-answer")
                piece, extra = piece[:remaining], piece[remaining:]
                connection.pending[:0] = extra
                remaining -= len(piece)
                yield piece
            return
        if self.status in (204, 304):
            return
        while piece := connection.read_some():
            yield piece

    def body(self) -> bytes:
        try:
            return b"".join(self.pieces())
        finally:
            self.connection.close()


class Engine:
    """A Docker engine reached at `host` (unix:///path, tcp://host:port); `tls` is the
    (ca, cert, key) files for a tcp engine that verifies its clients."""

    def __init__(self, host: str = f"unix://{DEFAULT_SOCKET}",
                 tls: tuple[str, str, str] | None = None) -> None:
        self.host = host
        self._tls = tls
        self._version_prefix = ""

    @classmethod
    def from_environment(cls) -> Engine:
        """The engine DOCKER_HOST names (the default socket without it)."""
        host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        tls = None
        if os.environ.get("DOCKER_TLS_VERIFY") and host.startswith("tcp://"):
            certs = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
            tls = (str(certs / "ca.pem"), str(certs / "cert.pem"), str(certs / "key.pem"))
        if not host.startswith(("unix://", "tcp://")):
            raise EngineUnavailable(f"DOCKER_HOST={host}: only unix:// and tcp:// engines "
                                    f"are supported. {START_HINT}")
        return cls(host, tls)

    # ------------------------------------------------------------ transport

    def _socket(self, timeout: float | None) -> socket.socket:
        if self.host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.host[len("unix://"):])
            except BaseException:
                sock.close()
                raise
            return sock
        address = self.host[len("tcp://"):].rstrip("/")
        name, _, port = address.rpartition(":")
        sock = socket.create_connection((name, int(port)), timeout=timeout)
        if self._tls is None:
            return sock
        import ssl

        ca, cert, key = self._tls
        try:
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
            return context.wrap_socket(sock, server_hostname=name)
        except BaseException:
            sock.close()
            raise

    def _open(self, method: str, path: str, *,
              query: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
              body: bytes | IO[bytes] | None = None, length: int | None = None,
              headers: Mapping[str, str] | None = None,
              timeout: float | None = CALL_TIMEOUT_S) -> _Answer:
        target = self._version_prefix + path
        pairs = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        if pairs:
            target += "?" + urlencode([(k, v) for k, v in pairs if v is not None])
        try:
            sock = self._socket(timeout)
        except OSError as exc:
            raise EngineUnavailable(f"no Docker engine answers at {self.host} ({exc}). "
                                    f"{START_HINT}") from exc
        connection = _Connection(sock)
        try:
            size = len(body) if isinstance(body, bytes) else length
            lines = [f"{method} {target} HTTP/1.1", "Host: docker",
                     *(f"{k}: {v}" for k, v in (headers or {}).items())]
            if body is not None:
                lines.append(f"Content-Length: {size or 0}")
            if "Upgrade" not in (headers or {}):
                lines.append("Connection: close")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if isinstance(body, bytes):
                sock.sendall(body)
            elif body is not None:
                while piece := body.read(_CHUNK):
                    sock.sendall(piece)
            return _Answer(connection)
        except BaseException:
            connection.close()
            raise

    def _call(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
              payload: Any = None, timeout: float | None = CALL_TIMEOUT_S) -> Any:
        """One call; its JSON answer (None for an empty one). Errors raise EngineError."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            answer = self._open(method, path, query=query, body=body, headers=headers,
                                timeout=timeout)
            data = answer.body()
        except TimeoutError as exc:
            raise EngineError(504, f"{method} {path}: the engine did not answer in "
                                   f"{timeout}s") from exc
        except OSError as exc:
            raise EngineError(502, f"{method} {path}: {exc}") from exc
        _raise_for(answer.status, data)
        if not data:
            return None
        if answer.headers.get("content-type", "").startswith("application/json"):
            return json.loads(data)
        return data

    def _progress(self, answer: _Answer) -> Iterator[dict[str, Any]]:
        """The JSON messages of a streamed answer (build, pull, import)."""
        if answer.status >= 400:
            _raise_for(answer.status, answer.body())
        decoder = json.JSONDecoder()
        pending = ""
        try:
            for piece in answer.pieces():
                pending += piece.decode("utf-8", errors="replace")
                while pending := pending.lstrip():
                    try:
                        message, end = decoder.raw_decode(pending)
                    except json.JSONDecodeError:
                        break
                    pending = pending[end:]
                    yield message
        finally:
            answer.connection.close()

    # ------------------------------------------------------------ engine

    def ping(self) -> None:
        """Check that the engine answers; later calls use the API version it speaks."""
        answer = self._open("GET", "/_ping", timeout=10)
        body = answer.body()
        _raise_for(answer.status, body)
        version = answer.headers.get("api-version")
        if version:
            self._version_prefix = f"/v{version}"

    def version(self) -> dict[str, Any]:
        """The engine's version report."""
        return dict(self._call("GET", "/version"))

    # ------------------------------------------------------------ containers

    def create_container(self, config: Mapping[str, Any], *, name: str | None = None) -> str:
        """Create a container from an Engine API container config; its id."""
        return str(self._call("POST", "/containers/create", query={"name": name},
                              payload=dict(config))["Id"])

    def start_container(self, container: str) -> None:
        self._call("POST", f"/containers/{quote(container)}/start")

    def remove_container(self, container: str, *, force: bool = True,
                         volumes: bool = True) -> None:
        self._call("DELETE", f"/containers/{quote(container)}",
                   query={"force": int(force), "v": int(volumes)})

    def kill_container(self, container: str, signal: str = "SIGKILL") -> None:
        self._call("POST", f"/containers/{quote(container)}/kill", query={"signal": signal})

    def inspect_container(self, container: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/containers/{quote(container)}/json"))

    def find_container(self, container: str) -> dict[str, Any] | None:
        """The container's inspection, or None when there is none by that name or id."""
        try:
            return self.inspect_container(container)
        except NotFound:
            return None

    def attach_container(self, container: str, *, stdin: bool) -> tuple[socket.socket, bytes]:
        """Attach to a container's main process before it starts (as `docker run` does):
        the connection carries its input, when `stdin`, and its multiplexed output, with
        what of that output was already read with the answer's headers."""
        return self._take_over("POST", f"/containers/{quote(container)}/attach",
                               query={"stream": 1, "stdin": int(stdin), "stdout": 1,
                                      "stderr": 1})

    def wait_container(self, container: str) -> int:
        """Wait for the container to stop; its exit status."""
        answer = self._call("POST", f"/containers/{quote(container)}/wait", timeout=None)
        return int(answer.get("StatusCode", 1))

    def container_logs(self, container: str, *, stdout: bool = True, stderr: bool = True,
                       tail: int | None = None) -> bytes:
        """What the container wrote (no TTY: the streams' frames joined)."""
        raw = self._call("GET", f"/containers/{quote(container)}/logs",
                         query={"stdout": int(stdout), "stderr": int(stderr),
                                "tail": tail if tail is not None else "all"})
        return demultiplex(raw or b"")

    def containers(self, *, labels: list[str] | None = None) -> list[dict[str, Any]]:
        """Every container (running or not) carrying all of `labels` (`key` or
        `key=value`), as the engine lists them (Id, Names, Labels, State, ...)."""
        filters = json.dumps({"label": labels}) if labels else None
        return list(self._call("GET", "/containers/json",
                               query={"all": 1, "filters": filters}) or [])

    # ------------------------------------------------------------ exec

    def create_exec(self, container: str, argv: list[str], *,
                    environment: Mapping[str, str] | None = None, workdir: str | None = None,
                    user: str = "", stdin: bool = False) -> str:
        """Prepare a command in a running container; the exec's id."""
        config: dict[str, Any] = {
            "Cmd": argv, "AttachStdin": stdin, "AttachStdout": True, "AttachStderr": True,
            "Tty": False, "User": user,
            "Env": [f"{k}={v}" for k, v in (environment or {}).items()]}
        if workdir:
            config["WorkingDir"] = workdir
        return str(self._call("POST", f"/containers/{quote(container)}/exec",
                              payload=config)["Id"])

    def start_exec_detached(self, exec_id: str) -> None:
        self._call("POST", f"/exec/{exec_id}/start", payload={"Detach": True, "Tty": False})

    def exec_attach(self, exec_id: str) -> tuple[socket.socket, bytes]:
        """Start the exec attached: the connection now carries the command's input (what
        is sent) and its multiplexed output (what is read), with what of that output was
        already read with the answer's headers."""
        body = json.dumps({"Detach": False, "Tty": False}).encode()
        return self._take_over("POST", f"/exec/{exec_id}/start", body=body)

    def _take_over(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                   body: bytes | None = None) -> tuple[socket.socket, bytes]:
        """A call whose connection the engine hands over to a process's streams."""
        headers = {"Connection": "Upgrade", "Upgrade": "tcp"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        answer = self._open(method, path, query=query, body=body, headers=headers,
                            timeout=CALL_TIMEOUT_S)
        if answer.status not in (101, 200):
            _raise_for(answer.status, answer.body())
        sock = answer.connection.sock
        sock.settimeout(None)
        return sock, bytes(answer.connection.pending)

    def exec_output(self, exec_id: str) -> bytes:
        """Start the exec attached and wait for its end; its output, both streams joined."""
        sock, already = self.exec_attach(exec_id)
        sock.settimeout(CALL_TIMEOUT_S)
        data = bytearray(already)
        try:
            sock.shutdown(socket.SHUT_WR)
            while piece := sock.recv(_CHUNK):
                data += piece
        finally:
            sock.close()
        return demultiplex(bytes(data))

    def inspect_exec(self, exec_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/exec/{exec_id}/json"))

    # ------------------------------------------------------------ images

    def inspect_image(self, image: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/images/{quote(image, safe='')}/json"))

    def has_image(self, image: str) -> bool:
        try:
            self.inspect_image(image)
        except NotFound:
            return False
        return True

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        self._call("POST", f"/images/{quote(image, safe='')}/tag",
                   query={"repo": repository, "tag": tag})

    def pull_image(self, image: str) -> None:
        """Pull from a registry; EngineError when it cannot."""
        name, tag = image, "latest"
        if ":" in image.rsplit("/", 1)[-1]:  # a tag, not a registry's port
            name, _, tag = image.rpartition(":")
        self._drain(self._open("POST", "/images/create",
                               query={"fromImage": name, "tag": tag}, timeout=None))

    def import_image(self, tarball: Path, *, repository: str, tag: str,
                     changes: list[str]) -> None:
        """Import a root filesystem tarball as an image."""
        with tarball.open("rb") as source:
            answer = self._open(
                "POST", "/images/create",
                query=[("fromSrc", "-"), ("repo", repository), ("tag", tag),
                       *(("changes", change) for change in changes)],
                body=source, length=tarball.stat().st_size,
                headers={"Content-Type": "application/tar"}, timeout=None)
            self._drain(answer)

    def build_image(self, context: Path, *, tag: str, buildargs: Mapping[str, str],
                    labels: Mapping[str, str], network_mode: str | None) -> list[str]:
        """Build the folder `context` (its Dockerfile) as `tag`; the build's log lines.
        A failed step raises EngineError with the log's end."""
        import tarfile

        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(str(context), arcname=".")
        query = {"t": tag, "buildargs": json.dumps(dict(buildargs)),
                 "labels": json.dumps(dict(labels)), "networkmode": network_mode,
                 "rm": 1, "forcerm": 1}
        answer = self._open("POST", "/build", query=query, body=archive.getvalue(),
                            headers={"Content-Type": "application/x-tar"}, timeout=None)
        log: list[str] = []
        for message in self._progress(answer):
            if "error" in message:
                tail = "".join(log[-15:])
                raise EngineError(500, f"{message['error']}\n{tail}")
            if "stream" in message:
                log.append(str(message["stream"]))
        return log

    def _drain(self, answer: _Answer) -> None:
        for message in self._progress(answer):
            if "error" in message:
                raise EngineError(500, str(message["error"]))

    # ------------------------------------------------------------ volumes

    def create_volume(self, name: str, *, labels: Mapping[str, str]) -> None:
        self._call("POST", "/volumes/create", payload={"Name": name, "Labels": dict(labels)})

    def find_volume(self, name: str) -> dict[str, Any] | None:
        """The volume's inspection (Name, Labels, Mountpoint, ...), or None."""
        try:
            return dict(self._call("GET", f"/volumes/{quote(name)}"))
        except NotFound:
            return None

    def remove_volume(self, name: str, *, force: bool = True) -> None:
        self._call("DELETE", f"/volumes/{quote(name)}", query={"force": int(force)})

    def volumes(self, *, labels: list[str] | None = None) -> list[dict[str, Any]]:
        """Every volume carrying all of `labels` (Name, Labels, ...)."""
        filters = json.dumps({"label": labels}) if labels else None
        answer = self._call("GET", "/volumes", query={"filters": filters}) or {}
        return list(answer.get("Volumes") or [])


def container_name(listed: Mapping[str, Any]) -> str:
    """A listed container's name (without the engine's leading slash), else its id."""
    names = listed.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(listed.get("Id") or "?")


def container_status(inspection: Mapping[str, Any]) -> str:
    """A container's state (running, exited, ...) from its inspection."""
    return str((inspection.get("State") or {}).get("Status", ""))


def mount(kind: str, source: str, target: str, *, read_only: bool = False) -> dict[str, Any]:
    """A container's mount in the Engine API's form (kind: bind or volume)."""
    return {"Type": kind, "Source": source, "Target": target, "ReadOnly": read_only}


def demultiplex(raw: bytes) -> bytes:
    """The payloads of a multiplexed stream (8-byte frame headers), joined."""
    out, at = bytearray(), 0
    while at + 8 <= len(raw):
        (size,) = struct.unpack(">L", raw[at + 4:at + 8])
        out += raw[at + 8:at + 8 + size]
        at += 8 + size
    return bytes(out)


def _raise_for(status: int, body: bytes) -> None:
    if status < 400:
        return
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode(errors="replace").strip()
    raise (NotFound if status == 404 else EngineError)(status, message or "(no message)")


@functools.cache
def connect() -> Engine:
    """The engine named by the environment (DOCKER_HOST or the default socket), answering."""
    engine = Engine.from_environment()
    try:
        engine.ping()
    except EngineError as exc:
        raise EngineUnavailable(f"the Docker engine at {engine.host} answers {exc}. "
                                f"{START_HINT}") from exc
    return engine
