"""One ephemeral, hardened Docker container and the commands run inside it."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import SandboxError, SandboxFileNotFound, SandboxNotADirectory
from harness.sandbox.engine import Engine, EngineError, NotFound, mount
from harness.sandbox.layout import HOME, TMP, WORKSPACE
from harness.sandbox.result import TIMEOUT_EXIT_CODE, ExecResult
from harness.sandbox.settings import size_bytes

if TYPE_CHECKING:
    from harness.sandbox.settings import Hardening

# PID 1 of every sandbox. It forks nothing while it waits (a fifo read is a builtin),
# so even with the pids limit exhausted it can answer SIGUSR1 by killing every other
# process in the container: the last resort when a runaway command cannot be killed
# by a new `docker exec` (which needs a free pid).
_INIT = (
    "trap 'kill -KILL -1 2>/dev/null' USR1; trap 'exit 0' TERM INT; "
    "mkdir -p /tmp/.harness && mkfifo /tmp/.harness/init && exec 3<>/tmp/.harness/init; "
    "while :; do read -r -u 3 _; done"
)
# Docker starts every exec as the leader of its own session and process group. The
# launcher tells its pid (= the session id) in a header on stderr, so that a timeout can
# kill the session, runs the command, reports the exit status in a trailer, and then kills its
# process group: what the command left running in the background ends with it, so
# each action starts from the same state (a process detached with setsid survives).
# Only shell builtins run after the command, so this works with no pid to spare. (The
# session id is told, not written to a file: files would fill the private tmpfs after a
# few hundred commands, and a command run as another user could not write there.) The
# trailer ends with a NUL: output a background process writes right after it cannot run
# into its digits.
_LAUNCH = (
    'token=$1; shift; printf "\\0harness-sid:%d\\0" $$ >&2; "$@"; rc=$?; '
    'printf "\\0harness-exit:%s:%d\\0" "$token" "$rc" >&2; kill -KILL 0'
)
_SID_HEADER = b"\0harness-sid:"
# The launcher of a command that is its container's one process (`Container.run`): the
# container's end ends whatever the command left running, and its exit status is the
# container's. It enters the working folder itself (the engine would make a missing one,
# as root); when it cannot, it says why in place of the header, before any process of
# the command exists, so no output of the command can pass for that answer.
_RUN = (
    'dir=$1; shift; '
    'if [ -n "$dir" ] && ! cd -P -- "$dir" 2>/dev/null; then '
    'if [ ! -e "$dir" ]; then why=missing; elif [ ! -d "$dir" ]; then why=file; '
    'else why=denied; fi; printf "\\0harness-cwd:%s\\0" "$why" >&2; exit 126; fi; '
    'printf "\\0harness-sid:%d\\0" $$ >&2; "$@"; exit $?'
)
_NO_FOLDER = re.compile(rb"^\0harness-cwd:(\w+)\0")
# Launchers run as `bash -p`: no BASH_ENV, ENV, SHELLOPTS or exported functions of the
# caller's variables apply to them (the command itself still sees its variables).
_BASH = ["bash", "-p", "-c"]


@dataclass
class _Running:
    """A command running now: who runs it (None: the container's user; without
    capabilities only that user, even root, may kill it), its stream, which tells its
    session id, and whether it was interrupted."""

    user: str | None
    reader: _FrameReader
    interrupted: bool = False
    killed: bool = False
    """A kill was sent for it (after a timeout or an interrupt)."""
    whole_container: bool = False
    """The command is the container's one process (`run`): killing it kills the container."""
_KILL_GRACE_S = 2.0
_OOM_COUNTER = re.compile(rb"^oom_kill (\d+)$", re.MULTILINE)


class Container:
    """A running sandbox container; `with Container(...) as c:` always removes it."""

    def __init__(
        self,
        client: Engine,
        image: str,
        *,
        hardening: Hardening,
        labels: Mapping[str, str],
        workspace: str | None = None,
        writable_mounts: Mapping[str, str] | None = None,
        read_only_mounts: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        owner: tuple[int, int] = (1000, 1000),
        output_limit: int = 1 << 20,
        default_timeout: float = 120.0,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.image = image
        self.hardening = hardening
        self.labels = dict(labels)
        self.workspace = workspace
        self.writable_mounts = dict(writable_mounts or {})
        """Host folder -> container path; /tmp and /home/agent are size-capped tmpfs
        unless given here."""
        self.read_only_mounts = dict(read_only_mounts or {})
        self.environment = dict(environment or {})
        self.bound_environment: dict[str, str] = {}
        """Set on every command after the container started (a pooled sandbox's user's
        variables), over the container's own."""
        self.owner = owner
        self.output_limit = output_limit
        self.default_timeout = default_timeout
        self._running: dict[str, _Running] = {}
        """The commands running now, by token."""
        self._guard = threading.Lock()
        self._interrupts = 0
        """How many times `interrupt` was called: a command that saw it move while it
        started was interrupted before it could be tracked."""
        self.name = name or f"hx-{uuid.uuid4().hex[:12]}"
        """The container's name: known before the engine answers the create."""
        self._container: str | None = None
        self._oom_seen = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def id(self) -> str:
        """The engine's id of the running container."""
        if self._container is None:
            raise SandboxError("the container is not running; call start() first")
        return self._container

    def start(self) -> Container:
        """Create and start the container with the hardening settings."""
        try:
            # Named: a create whose answer never came (Ctrl-C) is still found and removed.
            self._container = self.name
            self._container = self.client.create_container(self.create_config(),
                                                           name=self.name)
            self.client.start_container(self._container)
        except EngineError as exc:
            self.stop()
            raise _start_error(exc, self.image) from exc
        return self

    def stop(self) -> None:
        """Remove the container and its anonymous volumes; safe to call twice."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            self.client.remove_container(container, force=True, volumes=True)
        except NotFound:
            pass
        except EngineError as exc:
            # Another remover (`harness gc --all`) got there first: it finishes the job.
            if exc.status != 409:
                raise SandboxError(f"cannot remove container {container}: {exc}") from exc

    def __enter__(self) -> Container:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def create_config(self, command: Sequence[str] | None = None,
                      environment: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The Engine API's configuration of this container, hardened; its process is
        `command` (by default one that waits for `exec`), with `environment` over the
        container's own."""
        h = self.hardening
        mounts = [mount("bind", source, target, read_only=True)
                  for source, target in self.read_only_mounts.items()]
        if self.workspace:
            mounts.append(mount("bind", self.workspace, WORKSPACE))
        mounts += [mount("bind", source, target) for source, target in self.writable_mounts.items()]
        uid, gid = self.owner
        tmpfs = {TMP: f"rw,nosuid,nodev,size={h.tmpfs_size},mode=1777",
                 # The launcher's pid files: never on a disk the agent can fill.
                 f"{TMP}/.harness": f"rw,nosuid,nodev,size=1m,uid={uid},gid={gid},mode=0700"}
        user = h.user
        if h.user == "agent":
            # The agent runs as whoever owns the workspace (uid 1000, `agent`, as root).
            user = "agent" if self.owner == (1000, 1000) else f"{uid}:{gid}"
            tmpfs[HOME] = f"rw,nosuid,nodev,size=64m,uid={uid},gid={gid},mode=0700"
        for target in self.writable_mounts.values():
            tmpfs.pop(target, None)
        memory = size_bytes(h.memory)
        host: dict[str, Any] = {
            "Mounts": mounts,
            "Tmpfs": tmpfs,
            "ReadonlyRootfs": h.read_only_root,
            "NetworkMode": "bridge" if h.network else "none",
            "PidsLimit": h.pids_limit,
            "Memory": memory,
            "MemorySwap": memory,
            "NanoCpus": int(h.cpus * 1e9),
            "IpcMode": "private",
            # Nothing reads PID 1's output, and a log would be a file on the host the agent
            # can grow without limit (writing to /proc/1/fd/1).
            "LogConfig": {"Type": "none", "Config": {}},
            "ShmSize": 16 << 20,
        }
        if h.drop_capabilities:
            host["CapDrop"] = ["ALL"]
        if h.no_new_privileges:
            host["SecurityOpt"] = ["no-new-privileges:true"]
        return {
            "Image": self.image,
            "Cmd": list(command or [*_BASH, _INIT]),
            "User": user,
            "WorkingDir": WORKSPACE,
            "Env": [f"{k}={v}" for k, v in {**self.environment, **(environment or {})}.items()],
            "Labels": self.labels,
            "HostConfig": host,
        }

    # ------------------------------------------------------------ commands

    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        output_limit: int | None = None,
        stdin: bytes | str | None = None,
        stdout_bytes: bool = False,
        user: str | None = None,
    ) -> ExecResult:
        """Run `command` (argv, or a string for bash -c) and return its result.

        Past `timeout` seconds the command's whole process tree is killed and the
        result says `timed_out`; output past `output_limit` bytes per stream is
        dropped (the command still runs to its end) and the result says `truncated`.
        `stdin` is written to the command's standard input, which then ends; without it
        the command reads an empty input. With `stdout_bytes` its output comes as bytes
        (`stdout_bytes`), not decoded. `user` runs it as another user than the container's.
        """
        argv = _argv(command)
        limit = output_limit or self.output_limit
        timeout = self.default_timeout if timeout is None else timeout
        token = uuid.uuid4().hex
        since = self._interrupts
        started = time.monotonic()
        try:
            exec_id = self.client.create_exec(
                self.id, [*_BASH, _LAUNCH, "harness", token, *argv],
                environment={**self.bound_environment, **dict(env or {})},
                workdir=cwd or None, stdin=True, user=user or "",
            )
            stream, already = self.client.exec_attach(exec_id)
        except EngineError as exc:
            raise SandboxError(
                f"cannot run {argv[0]!r} in the sandbox: {exc.message}") from exc
        reader = _FrameReader(stream, limit, trailer=f"\0harness-exit:{token}:".encode(),
                              already=already)
        data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        # Written from a thread while the output is read, so that neither side can block
        # the other; closing our half of the socket is the command's end of input.
        writer = threading.Thread(target=reader.feed, args=(data,), daemon=True)
        writer.start()
        self._track(token, _Running(user, reader), since)
        try:
            finished = reader.drain(deadline=started + timeout,
                                    each=lambda: self._kill_if_interrupted(token))
            timed_out = not finished
            if timed_out:
                self._kill_session(token)
                if not reader.drain(deadline=time.monotonic() + _KILL_GRACE_S):
                    self._kill_everything()
                    reader.drain(deadline=time.monotonic() + _KILL_GRACE_S)
        finally:
            reader.close()
            with self._guard:
                interrupted = self._running.pop(token).interrupted
        duration = time.monotonic() - started
        if reader.exit_code is None and not timed_out and reader.text(1).startswith(_NOT_STARTED):
            _raise_not_started(reader.text(1), cwd)
        if timed_out:
            exit_code = TIMEOUT_EXIT_CODE
        elif reader.exit_code is not None:
            exit_code = reader.exit_code
        else:  # the launcher itself was killed (OOM, or a kill from outside)
            exit_code = self._exit_code(exec_id)
        oom = exit_code in (137, -9) or timed_out
        return ExecResult(
            exit_code=exit_code,
            stdout="" if stdout_bytes else reader.text(1),
            stdout_bytes=reader.data(1) if stdout_bytes else None,
            stderr=reader.text(2),
            duration_s=round(duration, 6),
            timed_out=timed_out,
            truncated=reader.truncated,
            oom_killed=self._oom_killed() if oom and not interrupted else False,
            interrupted=interrupted,
        )

    def run(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | str | None = None,
    ) -> ExecResult:
        """Create the container with `command` as its one process, run it to its end and
        remove the container: the `docker run` of a sandbox, one container start and no
        exec. The result reads as `exec`'s; past `timeout` the container is killed, and
        every process the command started ends with it."""
        if self._container is not None:
            raise SandboxError("the container is running already; run commands with exec()")
        argv = _argv(command)
        timeout = self.default_timeout if timeout is None else timeout
        config = self.create_config([*_BASH, _RUN, "harness", cwd or "", *argv],
                                    {**self.bound_environment, **dict(env or {})})
        if stdin is not None:
            config.update(OpenStdin=True, StdinOnce=True, AttachStdin=True)
        token = uuid.uuid4().hex
        since = self._interrupts
        try:
            # Named: a create whose answer never came (Ctrl-C) is still found and removed.
            self._container = self.name
            self._container = self.client.create_container(config, name=self.name)
            stream, already = self.client.attach_container(self._container,
                                                           stdin=stdin is not None)
            self.client.start_container(self._container)
            started = time.monotonic()  # the command's time, as exec's, starts now
        except EngineError as exc:
            self.stop()
            raise _start_error(exc, self.image) from exc
        except BaseException:
            self.stop()
            raise
        reader = _FrameReader(stream, self.output_limit, trailer=None, already=already)
        if stdin is not None:
            data = stdin.encode() if isinstance(stdin, str) else stdin
            threading.Thread(target=reader.feed, args=(data,), daemon=True).start()
        try:
            self._track(token, _Running(None, reader, whole_container=True), since)
            timed_out = not reader.drain(deadline=started + timeout)
            if timed_out:
                self._kill_quietly()
                reader.drain(deadline=time.monotonic() + _KILL_GRACE_S)
            duration = time.monotonic() - started
            # The container's status is its launcher's, which is the command's: nothing
            # the command prints can stand in for it.
            status = self.client.wait_container(self.id)
            with self._guard:
                interrupted = self._running[token].interrupted
            if reader.sid is None and not (timed_out or interrupted):
                _raise_not_run(reader.data(2), status, cwd or WORKSPACE)  # never started
            exit_code = TIMEOUT_EXIT_CODE if timed_out else status
            oom = (exit_code == 137 or timed_out) and not interrupted and bool(
                self.client.inspect_container(self.id)["State"].get("OOMKilled"))
        finally:
            reader.close()
            with self._guard:
                self._running.pop(token, None)
            self.stop()
        return ExecResult(
            exit_code=exit_code,
            stdout=reader.text(1),
            stderr=reader.text(2),
            duration_s=round(duration, 6),
            timed_out=timed_out,
            truncated=reader.truncated,
            oom_killed=oom,
            interrupted=interrupted,
        )

    def interrupt(self) -> None:
        """Kill the process tree of every command running now (from another thread); each
        `exec` (or `run`) returns soon after with `interrupted` set. A command still
        starting is killed as soon as it can be."""
        with self._guard:
            self._interrupts += 1
            tokens = list(self._running)
            for running in self._running.values():
                running.interrupted = True
        for token in tokens:
            self._kill_session(token)

    def _track(self, token: str, running: _Running, since: int) -> None:
        """Count a command as running; one interrupted while it started (the interrupt
        count moved `since`) is killed now, or once its session is known."""
        with self._guard:
            self._running[token] = running
            if self._interrupts != since:
                running.interrupted = True
        self._kill_if_interrupted(token)

    def _kill_if_interrupted(self, token: str) -> None:
        with self._guard:
            running = self._running.get(token)
            due = running is not None and running.interrupted and not running.killed
        if due:
            self._kill_session(token)

    def _kill_quietly(self) -> None:
        """Kill the container (a `run`'s command and all it started)."""
        container = self._container
        if container is not None:
            with contextlib.suppress(EngineError):
                self.client.kill_container(container)

    def _exit_code(self, exec_id: str) -> int:
        for _ in range(50):
            info = self.client.inspect_exec(exec_id)
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0)
            time.sleep(0.01)
        raise SandboxError("the command's stream ended but the engine still reports it running")

    def _kill_session(self, token: str) -> None:
        """Kill the command's process group from a second, detached exec. It uses only
        builtins; when not even that exec can start (a fork bomb holds every pid), the
        caller falls back to `_kill_everything`."""
        with self._guard:
            running = self._running.get(token)
        if running is not None and running.whole_container:
            running.killed = True
            self._kill_quietly()
            return
        if running is None or running.reader.sid is None:
            return  # ended already, or not started far enough to say its session
        running.killed = True
        with contextlib.suppress(EngineError):
            exec_id = self.client.create_exec(
                self.id, [*_BASH, f"kill -KILL -- -{running.reader.sid}"],
                user=running.user or "")
            self.client.start_exec_detached(exec_id)

    def _kill_everything(self) -> None:
        """PID 1 kills every process of the container's user; each other user running a
        command now has every process of theirs killed by a process of their own."""
        with contextlib.suppress(EngineError):
            self.client.kill_container(self.id, signal="SIGUSR1")
        with self._guard:
            users = {r.user for r in self._running.values() if r.user is not None}
        for user in users:
            with contextlib.suppress(EngineError):
                exec_id = self.client.create_exec(self.id, [*_BASH, "kill -KILL -1"],
                                                  user=user)
                self.client.start_exec_detached(exec_id)

    def _oom_killed(self) -> bool:
        """Whether the cgroup's OOM-kill counter rose since last looked at."""
        script = ("cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control "
                  "2>/dev/null; true")
        try:
            output = self.client.exec_output(self.client.create_exec(
                self.id, ["sh", "-c", script]))
        except (EngineError, OSError):
            return False
        match = _OOM_COUNTER.search(output or b"")
        if match is None:
            return False
        count = int(match.group(1))
        rose, self._oom_seen = count > self._oom_seen, count
        return rose


_NOT_STARTED = "OCI runtime exec failed"


def _start_error(exc: EngineError, image: str) -> SandboxError:
    if isinstance(exc, NotFound):
        return SandboxError(f"image {image} is missing; run `harness images build`")
    return SandboxError(f"cannot start a container from {image}: {exc.message}")


def _raise_not_run(stderr: bytes, status: int, cwd: str) -> None:
    """Why the `run` launcher did not start the command: the working folder it could not
    enter, or whatever stopped the launcher itself."""
    why = _NO_FOLDER.match(stderr)
    _raise_for_folder(why.group(1).decode() if why else "", cwd)
    detail = stderr.decode(errors="replace").strip()
    raise SandboxError(f"the command could not start (status {status}): {detail}")


def _raise_for_folder(reason: str, cwd: str) -> None:
    """The typed error for a working folder that is `missing`, a `file`, or `denied`."""
    if reason == "missing":
        raise SandboxFileNotFound(f"the working folder {cwd} does not exist in the sandbox")
    if reason == "file":
        raise SandboxNotADirectory(f"the working folder {cwd} is not a folder")
    if reason == "denied":
        raise SandboxError(f"the command could not start: the working folder {cwd} cannot "
                           "be entered (permission denied)")


def _argv(command: Sequence[str] | str) -> list[str]:
    """A command as an argv: a string is run by bash."""
    argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
    if not argv:
        raise ValueError("empty command")
    return argv


def _raise_not_started(message: str, cwd: str | None) -> None:
    """The engine could not start the command at all (its text comes as output): a typed
    error, not a result that looks like the command's own."""
    detail = message.strip()
    if cwd and "chdir" in detail and "no such file or directory" in detail:
        _raise_for_folder("missing", cwd)
    if cwd and "chdir" in detail and "not a directory" in detail:
        _raise_for_folder("file", cwd)
    raise SandboxError(f"the command could not start: {detail}")


class _FrameReader:
    """Reads Docker's multiplexed exec stream (8-byte frame headers) under a deadline,
    keeping at most `limit` bytes of each of stdout and stderr. It takes the launcher's
    header off stderr and, given a `trailer`, the exit-status trailer too."""

    _STATUS_BYTES = 22
    """The most a status and its terminator take after the trailer: a sign, 20 digits, NUL."""

    def __init__(self, stream: socket.socket, limit: int, *, trailer: bytes | None,
                 already: bytes = b"") -> None:
        self._trailer = trailer
        self._pending = bytearray()
        """The end of stderr that may be the start of the trailer, held back until known."""
        self._head: bytearray | None = bytearray()
        """The start of stderr until the launcher's header is read (then None)."""
        self.sid: int | None = None
        """The command's session id, from the launcher's header."""
        self.exit_code: int | None = None
        self._sock = stream
        self._limit = limit
        self._buffer = bytearray(already)
        self._kept = {1: bytearray(), 2: bytearray()}
        self.truncated = False
        self._eof = False
        self._split_frames()  # what came with the engine's answer

    def drain(self, *, deadline: float, each: Callable[[], None] | None = None) -> bool:
        """Read until the stream ends (True) or the deadline passes (False), calling
        `each` after every piece read."""
        while not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([self._sock], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                chunk = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                break
            self._buffer += chunk
            self._split_frames()
            if each is not None:
                each()
        self._release()
        return True

    def _split_frames(self) -> None:
        while len(self._buffer) >= 8:
            kind, size = struct.unpack(">BxxxL", self._buffer[:8])
            if len(self._buffer) < 8 + size:
                return
            payload = self._buffer[8 : 8 + size]
            del self._buffer[: 8 + size]
            if kind == 2:
                payload = self._take_trailer(self._take_header(payload))
            self._keep(kind, payload)

    def _keep(self, kind: int, payload: bytes | bytearray) -> None:
        kept = self._kept.get(kind)
        if kept is None:
            return
        room = self._limit - len(kept)
        if room >= len(payload):
            kept += payload
        else:
            kept += payload[: max(room, 0)]
            self.truncated = True

    def _release(self) -> None:
        """At the stream's end, what was held back is output after all."""
        if self._head:
            self._keep(2, self._head)
        self._head = None
        self._keep(2, self._pending)
        self._pending = bytearray()

    def _take_header(self, payload: bytearray) -> bytearray:
        """Remove the launcher's header (the first bytes of stderr: the header mark, the
        pid, a NUL) and remember the session id; stderr that starts otherwise is kept."""
        if self._head is None:
            return payload
        head = self._head + payload
        end = head.find(b"\0", len(_SID_HEADER))
        ours = head.startswith(_SID_HEADER) or _SID_HEADER.startswith(head)
        if ours and end < 0 and len(head) < len(_SID_HEADER) + 24:
            self._head = head  # the rest of the header comes in a later frame
            return bytearray()
        self._head = None
        digits = bytes(head[len(_SID_HEADER):end])
        if not ours or end < 0 or not digits.isdigit():
            return head
        self.sid = int(digits)
        return head[end + 1:]

    def _take_trailer(self, payload: bytearray) -> bytearray:
        """Remove the launcher's exit-status trailer (mark, status, NUL) from stderr and
        remember the status; the last one in the stream counts. What could still be the
        start of one is held back: a trailer split over frames is found whole, and output
        written right after it is kept apart from its digits."""
        if self._trailer is None:
            return payload
        self._pending += payload
        at = self._pending.rfind(self._trailer)
        if at >= 0:
            end = self._pending.find(b"\0", at + len(self._trailer))
            digits = bytes(self._pending[at + len(self._trailer):end])
            if end >= 0 and digits.lstrip(b"-").isdigit():
                self.exit_code = int(digits)
                output = self._pending[:at] + self._pending[end + 1:]
                self._pending = bytearray()
                return output
        hold = len(self._trailer) + self._STATUS_BYTES
        ready = self._pending[:-hold] if len(self._pending) > hold else bytearray()
        del self._pending[:len(ready)]
        return ready

    def feed(self, data: bytes) -> None:
        """Write `data` as the command's standard input, then end it."""
        try:
            if data:
                self._sock.sendall(data)
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the command ended (or was killed) without reading it all

    def data(self, kind: int) -> bytes:
        """What was kept of stdout (1) or stderr (2), as bytes."""
        return bytes(self._kept[kind])

    def text(self, kind: int) -> str:
        """What was kept of stdout (1) or stderr (2), decoded leniently."""
        return self._kept[kind].decode("utf-8", errors="replace")

    def close(self) -> None:
        """Close the stream's socket; what was held back is output (the stream may not
        have ended: a command killed past every grace)."""
        self._release()
        with contextlib.suppress(OSError):
            self._sock.close()
