"""`Sandbox.run`: one command as its container's one process (what `harness exec` does).

It must be `exec`'s twin in everything the agent can observe or escape by (the hardening,
the result, the limits), and it must leave nothing: the container is gone when `run`
returns, with every process the command started, before the workspace is read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import SandboxError, SandboxFileNotFound, SandboxNotADirectory
from harness.sandbox import Sandbox
from harness.sandbox import labels as resource_labels
from harness.sandbox.engine import Engine
from harness.sandbox.result import ExecResult
from harness.sandbox.settings import Hardening, SandboxSettings

pytestmark = pytest.mark.docker

# What the agent can see of its confinement; nothing here may differ between exec and run.
_CONFINEMENT = r"""
id
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status
ls /sys/class/net
touch /etc/probe 2>&1 | sed 's/^.*: //'
(cd /sys/fs/cgroup && cat pids.max memory.max cpu.max pids/pids.max \
  memory/memory.limit_in_bytes cpu/cpu.cfs_quota_us 2>/dev/null)
awk '{split($4, o, ","); print $2, $3, o[1]}' /proc/self/mounts | sort
df --output=size,target /tmp "$HOME" /dev/shm | tail -n +2
env | grep -v -E '^(HOSTNAME|_|SHLVL|PWD|OLDPWD)=' | sort
ulimit -a
umask
pwd
ls -ld /workspace /tmp "$HOME"
"""


@pytest.fixture
def fresh(agent_image: str, shop_repo: Path) -> Iterator[Any]:
    """Make sandboxes over the shop repository; each is closed, and checked to have left
    no container, when the test ends."""
    made: list[Sandbox] = []

    def make(**settings: Any) -> Sandbox:
        made.append(Sandbox(shop_repo, settings=SandboxSettings(**settings)))
        return made[-1]

    yield make
    for sandbox in made:
        sandbox.close()


def _containers_of(client: Engine, sandbox: Sandbox) -> list[dict[str, Any]]:
    return client.containers(labels=[f"{resource_labels.SANDBOX}={sandbox.id}"])


def test_run_sees_exactly_the_confinement_exec_sees(fresh: Any) -> None:
    with fresh() as opened:
        by_exec = opened.exec(_CONFINEMENT)
    by_run = fresh().run(_CONFINEMENT)
    assert by_exec.ok and by_run.ok, (by_exec.stderr, by_run.stderr)
    assert by_run.stdout == by_exec.stdout
    assert "Read-only file system" in by_run.stdout
    assert by_run.stderr == by_exec.stderr == ""


def test_the_result_reads_as_execs(fresh: Any) -> None:
    with fresh() as opened:
        expected = [opened.exec(command, env={"WHO": "agent"}, cwd="shop")
                    for command in _COMMANDS]
    for command, wanted in zip(_COMMANDS, expected, strict=True):
        got = fresh().run(command, env={"WHO": "agent"}, cwd="shop")
        assert (got.exit_code, got.stdout, got.stderr, got.truncated) == \
            (wanted.exit_code, wanted.stdout, wanted.stderr, wanted.truncated), command


_COMMANDS: list[str | list[str]] = [
    "echo out; echo err >&2; exit 3",
    ["printf", "%s|", "two words", "$HOME", ";rm -rf /"],  # an argv: no shell reads it
    "pwd; echo $WHO; ls | head -3",
    "printf '\\xff\\xfe not utf-8\\n'",
    "printf 'no newline at the end' >&2",
    "kill -TERM $$",
    "exit 255",
    "nonexistent-program",
]


def test_a_forged_trailer_or_header_is_the_commands_own_output(fresh: Any) -> None:
    forged = ("printf '\\0harness-sid:77\\0'; printf '\\0harness-sid:88\\0' >&2; "
              "printf '\\0harness-exit:0123456789abcdef:0' >&2; exit 7")
    result = fresh().run(forged)
    assert result.exit_code == 7
    assert result.stdout == "\0harness-sid:77\0"
    assert result.stderr == "\0harness-sid:88\0\0harness-exit:0123456789abcdef:0"


def test_input_is_passed_whole_and_no_input_is_an_empty_one(fresh: Any) -> None:
    data = bytes(range(256)) * 800  # 200 KB, every byte value
    result = fresh().run("tee /tmp/in | sha256sum; wc -c < /tmp/in", stdin=data)
    import hashlib

    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert result.stdout.split()[-1] == str(len(data))
    started = time.monotonic()
    assert fresh().run("cat; echo end", timeout=30).stdout == "end\n"
    assert time.monotonic() - started < 10, "a command without input reads its end at once"


def test_a_timeout_ends_the_command_and_everything_it_started(fresh: Any, engine_client: Engine
                                                              ) -> None:
    sandbox = fresh()
    late = sandbox.workspace.path / "late"
    result = sandbox.run(
        "trap '' TERM HUP; (setsid sh -c 'sleep 3; echo escaped > /workspace/late' &); "
        "nohup sh -c 'sleep 3; echo escaped >> /workspace/late' >/dev/null 2>&1 & sleep 60",
        timeout=1)
    assert result.timed_out and result.exit_code == 124
    assert 1 <= result.duration_s < 5, "the command's own time, not the container's start"
    assert _containers_of(engine_client, sandbox) == []
    time.sleep(4)
    assert not late.exists(), "a process left by the command outlived the container"


def test_what_a_command_leaves_running_ends_before_run_returns(fresh: Any,
                                                                engine_client: Engine) -> None:
    sandbox = fresh()
    result = sandbox.run("(setsid sh -c 'sleep 2; touch /workspace/late' &); "
                         "nohup sh -c 'sleep 2; touch /workspace/late2' >/dev/null 2>&1 & "
                         "echo left")
    assert result.stdout == "left\n"
    assert _containers_of(engine_client, sandbox) == []
    time.sleep(3)
    assert not (sandbox.workspace.path / "late").exists()
    assert not (sandbox.workspace.path / "late2").exists()
    assert sandbox.changes().files == []


def test_a_fork_bomb_ends_at_its_timeout(fresh: Any, engine_client: Engine) -> None:
    sandbox = fresh()
    result = sandbox.run(":(){ :|:& };: ; sleep 30", timeout=3)
    assert result.timed_out
    assert result.duration_s < 10
    assert _containers_of(engine_client, sandbox) == []


def test_output_past_the_limit_is_cut_quickly(fresh: Any) -> None:
    result = fresh(output_limit_bytes=64 * 1024).run(
        "head -c 100000000 /dev/zero | tr '\\0' x; echo tail >&2", timeout=60)
    assert result.ok and result.truncated
    assert len(result.stdout) == 64 * 1024
    assert result.stderr == "tail\n"
    assert result.duration_s < 10


def test_a_memory_hog_is_reported_as_killed_at_the_limit(fresh: Any) -> None:
    result = fresh(hardening=Hardening(memory="128m")).run(
        ["python3", "-c", "x = bytearray(512 * 1024 * 1024)"], timeout=60)
    assert result.exit_code == 137
    assert result.oom_killed
    assert not fresh(hardening=Hardening(memory="128m")).run("true").oom_killed


def test_a_full_disk_is_reported(fresh: Any) -> None:
    result = fresh(disk_limit="32m").run("head -c 64000000 /dev/zero > /workspace/big",
                                          timeout=60)
    assert result.exit_code != 0
    assert result.disk_limit_hit


def test_a_working_folder_that_cannot_be_entered_raises_and_leaves_nothing(
        fresh: Any, engine_client: Engine) -> None:
    missing = fresh()
    with pytest.raises(SandboxFileNotFound, match="/workspace/nowhere"):
        missing.run("touch made", cwd="nowhere")
    file = fresh()
    with pytest.raises(SandboxNotADirectory, match=r"/workspace/README\.md"):
        file.run("touch made", cwd="README.md")
    closed = fresh()
    with pytest.raises(SandboxError, match="cannot be entered"):
        closed.run("true", cwd="/root")
    for sandbox in (missing, file, closed):
        assert _containers_of(engine_client, sandbox) == []
        assert not (sandbox.workspace.path / "made").exists()
        assert not (sandbox.workspace.path / "nowhere").exists()


def test_interrupting_a_run_kills_it_at_once(fresh: Any, engine_client: Engine) -> None:
    sandbox = fresh()
    results: list[ExecResult] = []
    worker = threading.Thread(target=lambda: results.append(
        sandbox.run("trap '' TERM INT; sleep 60", timeout=120)))
    worker.start()
    deadline = time.monotonic() + 30
    while not _containers_of(engine_client, sandbox) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    sandbox.interrupt()
    worker.join(timeout=20)
    assert results and results[0].interrupted
    assert not results[0].timed_out and not results[0].oom_killed
    assert _containers_of(engine_client, sandbox) == []


def test_a_sandbox_opens_or_runs_once_until_closed_and_leaks_nothing_trying_again(
        fresh: Any, engine_client: Engine) -> None:
    sandbox = fresh()
    assert sandbox.run("true").ok
    disks_before = _loop_devices()
    for again in (lambda: sandbox.run("true"), sandbox.open):
        with pytest.raises(SandboxError, match="opened already"):
            again()
    with fresh() as opened:
        for again in (lambda: opened.run("true"), opened.open):
            with pytest.raises(SandboxError, match="opened already"):
                again()
        assert len(_containers_of(engine_client, opened)) == 1
    assert _loop_devices() == disks_before, "no second disk was made"
    sandbox.close()
    assert sandbox.run("echo again").stdout == "again\n", "closed, it may run once more"


def _loop_devices() -> set[str]:
    import subprocess

    return set(subprocess.run(["losetup", "-a"], capture_output=True, text=True,
                              check=True).stdout.splitlines())


@pytest.mark.parametrize("run_it", [True, False], ids=["run", "exec"])
def test_output_written_right_after_the_command_ends_does_not_change_its_status(
        fresh: Any, run_it: bool) -> None:
    """A background writer's bytes land in the frame right after the launcher's status:
    they must neither be read as part of it nor hide it (the status once came out as 0)."""
    command = "yes bg >&2 & sleep 0.1; exit 7"
    for _ in range(12):
        if run_it:
            result = fresh().run(command, timeout=30)
        else:
            with fresh() as opened:
                result = opened.exec(command, timeout=30)
        assert result.exit_code == 7, result.stderr[-200:]
        assert "harness-exit" not in result.stderr
        assert result.stderr.startswith("bg\n")


def test_the_status_is_the_containers_not_what_the_command_prints(fresh: Any) -> None:
    """No token to forge: whatever the command prints after its start, its status is the
    one its process ended with, and a folder answer it prints is its own output."""
    forged = ("printf '\\0harness-cwd:missing\\0' >&2; "
              "for t in $(tr '\\0' ' ' < /proc/1/cmdline); do "
              "printf '\\0harness-exit:%s:0\\0' \"$t\" >&2; done; exit 9")
    result = fresh().run(forged)
    assert result.exit_code == 9
    assert result.stderr.startswith("\0harness-cwd:missing\0")


def test_the_callers_shell_variables_do_not_reach_the_launchers(fresh: Any,
                                                               tmp_path: Path) -> None:
    """BASH_ENV, SHELLOPTS and exported functions do not reach the launchers (`bash -p`):
    no trace, no sourced file and no function standing in for a builtin breaks their
    header or status. BASH_ENV still reaches the command."""
    env = {"SHELLOPTS": "xtrace", "BASH_ENV": "/workspace/README.md",
           "BASH_FUNC_printf%%": "() { echo hijacked; }",
           "BASH_FUNC_kill%%": "() { echo spared; }"}
    argv = ["sh", "-c", "echo $BASH_ENV; exit 4"]
    with fresh() as opened:
        by_exec = opened.exec(argv, env=env)
        assert opened.exec("sleep 30 & echo started", env=env).stdout == "started\n"
        assert opened.exec("pgrep -x sleep || echo none").stdout == "none\n", \
            "a function named kill spared the command's background"
    by_run = fresh().run(argv, env=env)
    for result in (by_exec, by_run):
        assert (result.exit_code, result.stdout, result.stderr) == \
            (4, "/workspace/README.md\n", "")


def test_an_interrupt_while_the_command_starts_is_not_lost(fresh: Any,
                                                           engine_client: Engine) -> None:
    sandbox = fresh()
    results: list[ExecResult] = []
    worker = threading.Thread(target=lambda: results.append(
        sandbox.run("sleep 60", timeout=120)))
    worker.start()
    while sandbox._container is None:  # the container is being made: not yet tracked
        time.sleep(0.001)
    sandbox.interrupt()
    worker.join(timeout=30)
    assert results and results[0].interrupted
    assert results[0].duration_s < 10
    with fresh() as opened:
        client = opened.container.client
        making = threading.Event()
        real_create = client.create_exec

        def create_exec(*args: Any, **kwargs: Any) -> str:
            making.set()
            time.sleep(0.2)  # the interrupt comes while the exec is being made
            return real_create(*args, **kwargs)

        opened.container.client = _Patched(client, create_exec=create_exec)
        worker = threading.Thread(target=lambda: results.append(
            opened.exec("sleep 60", timeout=120)))
        worker.start()
        making.wait()
        opened.interrupt()
        worker.join(timeout=30)
        opened.container.client = client
        assert results[1].interrupted and results[1].duration_s < 10
        assert opened.exec("pgrep -x sleep || echo none").stdout == "none\n"


class _Patched:
    """An engine client with some calls replaced."""

    def __init__(self, real: Engine, **replaced: Any) -> None:
        self._real, self._replaced = real, replaced

    def __getattr__(self, name: str) -> Any:
        return self._replaced.get(name) or getattr(self._real, name)


def test_a_missing_image_is_named_and_nothing_is_left(shop_repo: Path,
                                                      engine_client: Engine) -> None:
    sandbox = Sandbox(shop_repo, settings=SandboxSettings(image="harness-absent:never"))
    try:
        with pytest.raises(SandboxError, match="harness-absent:never"):
            sandbox.run("true")
        assert _containers_of(engine_client, sandbox) == []
    finally:
        sandbox.close()
    assert not sandbox.workspace.path.parent.exists()


def test_commits_made_by_the_command_are_read_after_it(fresh: Any) -> None:
    sandbox = fresh()
    result = sandbox.run("echo new > NEW.md && git add NEW.md && git commit -qm 'add new' "
                         "&& git log --oneline | head -1")
    assert result.ok, result.stderr
    changes = sandbox.changes()
    assert changes.commit_count == 1
    assert [f.path for f in changes.files] == ["NEW.md"]


def test_a_create_interrupted_before_its_answer_leaves_no_container(
        fresh: Any, engine_client: Engine) -> None:
    """Ctrl-C while the engine makes the container: its id never came back, its name is
    known, and it is removed by name."""
    sandbox = fresh()

    def create_then_interrupted(config: Any, *, name: str | None = None) -> str:
        engine_client.create_container(config, name=name)
        raise KeyboardInterrupt

    sandbox._client = _Patched(engine_client, create_container=create_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        sandbox.run("true")
    assert _containers_of(engine_client, sandbox) == []


def test_close_interrupted_in_one_step_still_takes_the_others(
        fresh: Any, engine_client: Engine) -> None:
    sandbox = fresh()
    sandbox.run("echo data > /workspace/file")
    disk = sandbox.disk
    assert disk is not None

    def interrupted() -> None:
        raise KeyboardInterrupt

    sandbox.workspace.detach = interrupted  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            sandbox.close()
    finally:
        del sandbox.workspace.detach  # the class's again, for the fixture's close
    assert not disk.path.exists() and not disk.image.exists()
    assert not [line for line in Path("/proc/mounts").read_text().splitlines()
                if sandbox.id in line]
    assert not [line for line in _loop_devices() if sandbox.id in line]
