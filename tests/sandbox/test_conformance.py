"""The conformance suite of the sandbox interface (harness.sandbox.interface): every backend
must pass it. Each test takes `sandbox`, an open SandboxEnvironment of the backend under
test; the Docker sandbox is the one backend today."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import SandboxError
from harness.sandbox import Sandbox
from harness.sandbox.interface import SandboxEnvironment

pytestmark = pytest.mark.docker


@pytest.fixture(params=["docker"])
def sandbox(request: pytest.FixtureRequest, shop_repo: Path) -> Iterator[SandboxEnvironment]:
    backend = Sandbox(shop_repo)
    assert isinstance(backend, SandboxEnvironment)
    with backend:
        yield backend


def test_exec_runs_an_argv_or_a_shell_string(sandbox: SandboxEnvironment) -> None:
    assert sandbox.exec(["printf", "%s|", "a b", "c"]).stdout == "a b|c|"
    result = sandbox.exec("echo out; echo err >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    assert not result.ok and result.duration_s > 0


def test_exec_takes_env_cwd_and_stdin(sandbox: SandboxEnvironment) -> None:
    assert sandbox.exec("echo $GREETING", env={"GREETING": "hi there"}).stdout == "hi there\n"
    assert sandbox.exec("pwd").stdout == "/workspace\n"
    sandbox.exec("mkdir -p sub/dir")
    assert sandbox.exec("pwd", cwd="sub/dir").stdout == "/workspace/sub/dir\n"
    assert sandbox.exec("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sandbox.exec(["cat"], stdin="line one\n").stdout == "line one\n"
    data = os.urandom(3 << 20)
    assert sandbox.exec("wc -c", stdin=data).stdout.strip() == str(len(data))
    assert sandbox.exec("head -c 5 > /dev/null; echo read-some", stdin=data).ok
    assert sandbox.exec("cat").stdout == "", "without stdin the input is empty"


def test_a_working_folder_that_cannot_be_entered_is_an_error(sandbox: SandboxEnvironment
                                                              ) -> None:
    with pytest.raises(FileNotFoundError, match="/workspace/nowhere"):
        sandbox.exec("pwd", cwd="nowhere")
    sandbox.exec("touch plain.txt")
    with pytest.raises((NotADirectoryError, SandboxError)):
        sandbox.exec("pwd", cwd="plain.txt")
    with pytest.raises(ValueError):
        sandbox.exec([])


def test_a_timeout_kills_the_whole_process_tree(sandbox: SandboxEnvironment) -> None:
    started = time.monotonic()
    result = sandbox.exec("sleep 60 & sleep 60 & wait", timeout=1)
    assert result.timed_out and result.exit_code == 124 and time.monotonic() - started < 15
    assert sandbox.exec("pgrep -c sleep || true").stdout.strip() == "0"
    assert sandbox.exec("echo alive").stdout == "alive\n", "the sandbox goes on"


def test_output_past_the_cap_is_dropped_and_flagged(sandbox: SandboxEnvironment) -> None:
    result = sandbox.exec("head -c 3000000 /dev/zero | tr '\\0' x; echo end >&2")
    assert result.truncated and len(result.stdout) == 1 << 20 and result.stderr == "end\n"


def test_files_round_trip_as_bytes_text_and_large(sandbox: SandboxEnvironment) -> None:
    binary = bytes(range(256)) * 64
    sandbox.write_file("/workspace/bin/blob.dat", binary)
    assert sandbox.read_file("/workspace/bin/blob.dat") == binary
    sandbox.write_file("/tmp/text.txt", "héllo\n")
    assert sandbox.read_file("/tmp/text.txt") == "héllo\n".encode()
    big = os.urandom(8 << 20)
    sandbox.write_file("/workspace/big.bin", big)
    assert sandbox.read_file("/workspace/big.bin") == big
    sandbox.write_file("/workspace/empty", b"")
    assert sandbox.read_file("/workspace/empty") == b""
    assert sandbox.exec("stat -c %U /workspace/big.bin").stdout.strip() == "agent", \
        "written as the agent"


def test_file_errors_are_typed_and_name_the_file(sandbox: SandboxEnvironment) -> None:
    def raises(kind: type[Exception], call: Any, path: str, *args: Any) -> None:
        with pytest.raises(kind) as caught:
            call(path, *args)
        assert isinstance(caught.value, SandboxError) and path in str(caught.value)

    raises(FileNotFoundError, sandbox.read_file, "/workspace/missing.txt")
    raises(FileNotFoundError, sandbox.read_file, "missing/too.txt")
    raises(IsADirectoryError, sandbox.read_file, "/workspace")
    raises(PermissionError, sandbox.write_file, "/etc/passwd", "x")
    raises(PermissionError, sandbox.write_file, "/etc/new-file", "x")
    raises(PermissionError, sandbox.write_file, "/root/deeper/file", "x")
    sandbox.exec("mkdir -p folder && touch plain && echo secret > locked && chmod 000 locked")
    raises(IsADirectoryError, sandbox.write_file, "folder", "x")
    raises(NotADirectoryError, sandbox.write_file, "plain/below", "x")
    raises(PermissionError, sandbox.read_file, "locked")
    raises(PermissionError, sandbox.write_file, "locked", "x")
    sandbox.exec("ln -s /nowhere dangling")
    raises(FileNotFoundError, sandbox.read_file, "dangling")


def test_a_read_over_its_limit_reads_nothing(sandbox: SandboxEnvironment) -> None:
    from harness.errors import SandboxFileTooLarge

    sandbox.write_file("sized.txt", "a" * 2048)
    assert sandbox.read_file("sized.txt", max_bytes=2048) == b"a" * 2048
    with pytest.raises(SandboxFileTooLarge) as caught:
        sandbox.read_file("sized.txt", max_bytes=2047)
    assert (caught.value.size, caught.value.limit) == (2048, 2047)


def test_relative_paths_start_at_the_workspace(sandbox: SandboxEnvironment) -> None:
    sandbox.write_file("nested/dir/file.txt", "here")
    assert sandbox.exec("cat /workspace/nested/dir/file.txt").stdout == "here"
    assert sandbox.read_file("./nested/dir/file.txt") == b"here"


def test_interrupt_stops_a_running_command_from_another_thread(
        sandbox: SandboxEnvironment) -> None:
    timer = threading.Timer(1.0, sandbox.interrupt)
    timer.start()
    started = time.monotonic()
    result = sandbox.exec("sleep 60", timeout=120)
    timer.join()
    assert result.interrupted and time.monotonic() - started < 20
    sandbox.interrupt()  # nothing running: no error


def test_close_removes_everything_and_is_safe_twice(shop_repo: Path) -> None:
    backend = Sandbox(shop_repo).open()
    backend.exec("echo x > /workspace/x")
    backend.close()
    backend.close()
    with pytest.raises(SandboxError):
        backend.exec("true")
    assert not backend.workspace.path.exists()


def test_a_failed_open_leaves_nothing_behind(tmp_path: Path) -> None:
    from harness.errors import WorkspaceError

    backend = Sandbox(tmp_path / "no-such-repo")
    with pytest.raises(WorkspaceError):
        backend.open()
    backend.close()
    assert not backend.workspace.path.exists()
