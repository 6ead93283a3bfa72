"""The hardening of the sandbox container holds against real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.sandbox import Sandbox
from harness.sandbox.settings import Hardening, SandboxSettings

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def sandbox(agent_image: str, shop_repo: Path) -> Iterator[Sandbox]:
    with Sandbox(shop_repo, settings=SandboxSettings(output_limit_bytes=64 * 1024)) as sb:
        yield sb


def test_only_the_loopback_interface_exists(sandbox: Sandbox) -> None:
    result = sandbox.exec("ls /sys/class/net")
    assert result.ok
    assert result.stdout.split() == ["lo"]


def test_outbound_connections_fail(sandbox: Sandbox) -> None:
    script = "import socket; socket.create_connection(('1.1.1.1', 53), 2)"
    result = sandbox.exec(["python3", "-c", script])
    assert result.exit_code != 0
    assert "unreachable" in result.stderr.lower()


@pytest.mark.parametrize("path", ["/etc/harness-probe", "/usr/bin/probe", "/home-probe", "/var/probe"])
def test_writing_outside_workspace_and_tmp_fails(sandbox: Sandbox, path: str) -> None:
    result = sandbox.exec(["touch", path])
    assert result.exit_code != 0
    assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr


@pytest.mark.parametrize("folder", ["/workspace", "/tmp"])
def test_workspace_and_tmp_are_writable(sandbox: Sandbox, folder: str) -> None:
    result = sandbox.exec(f"echo ok > {folder}/probe && cat {folder}/probe && rm {folder}/probe")
    assert result.stdout == "ok\n"


def test_nothing_the_agent_prints_reaches_a_host_file(sandbox: Sandbox,
                                                      docker_client: Any) -> None:
    attributes = docker_client.api.inspect_container(sandbox.container.id)["HostConfig"]
    assert attributes["LogConfig"]["Type"] == "none"
    assert attributes["ShmSize"] == 16 << 20
    sandbox.exec("head -c 1000000 /dev/zero > /proc/1/fd/1; head -c 1000000 /dev/zero >&2")
    with pytest.raises(Exception, match="logs"):
        docker_client.api.logs(sandbox.container.id)


def test_capabilities_are_empty(sandbox: Sandbox) -> None:
    status = sandbox.exec("grep ^Cap /proc/self/status").stdout
    values = dict(line.split(":\t") for line in status.splitlines())
    assert set(values.values()) == {"0000000000000000"}, values


def test_runs_as_the_unprivileged_agent_user(sandbox: Sandbox) -> None:
    assert sandbox.exec("id -u; id -un").stdout.split() == ["1000", "agent"]


def test_no_new_privileges_is_set(sandbox: Sandbox) -> None:
    assert "NoNewPrivs:\t1" in sandbox.exec("cat /proc/self/status").stdout


def test_fork_bomb_is_contained_by_the_pids_limit(sandbox: Sandbox) -> None:
    result = sandbox.exec(":(){ :|:& };: ; sleep 30", timeout=3)
    assert result.timed_out
    assert "Resource temporarily unavailable" in result.stderr
    after = sandbox.exec("ps -e --no-headers | wc -l")
    assert after.ok
    assert int(after.stdout) < 10, "the bomb's processes were killed"


def test_memory_hog_is_killed_and_reported_as_oom(agent_image: str, shop_repo: Path) -> None:
    settings = SandboxSettings(hardening=Hardening(memory="128m"))
    with Sandbox(shop_repo, settings=settings) as sb:
        result = sb.exec(["python3", "-c", "x = bytearray(512 * 1024 * 1024)"], timeout=30)
        assert result.exit_code == 137
        assert result.oom_killed
        assert sb.exec("echo alive").stdout == "alive\n"
        assert not sb.exec("true").oom_killed


def test_sleep_past_its_timeout_is_killed_and_next_exec_works(sandbox: Sandbox) -> None:
    result = sandbox.exec("sleep 60", timeout=1)
    assert result.timed_out
    assert result.exit_code == 124
    assert result.duration_s < 5
    assert sandbox.exec("pgrep -x sleep || echo none").stdout == "none\n"
    assert sandbox.exec("echo next").stdout == "next\n"


def test_timeout_kills_the_whole_process_tree(sandbox: Sandbox) -> None:
    result = sandbox.exec("(sleep 61 &); bash -c 'sleep 62' & sleep 63", timeout=1)
    assert result.timed_out
    assert sandbox.exec("pgrep -x sleep || echo none").stdout == "none\n"


def test_background_processes_end_with_their_command(sandbox: Sandbox) -> None:
    assert sandbox.exec("sleep 70 & echo started").stdout == "started\n"
    assert sandbox.exec("pgrep -x sleep || echo none").stdout == "none\n"


def test_hundred_megabytes_of_output_are_truncated_quickly(sandbox: Sandbox) -> None:
    result = sandbox.exec("head -c 100000000 /dev/zero | tr '\\0' x", timeout=60)
    assert result.ok
    assert result.truncated
    assert len(result.stdout) == 64 * 1024
    assert result.duration_s < 10


def test_output_within_the_cap_is_not_flagged(sandbox: Sandbox) -> None:
    result = sandbox.exec("seq 1 1000")
    assert not result.truncated
    assert result.stdout.splitlines()[-1] == "1000"


def test_stdout_and_stderr_are_kept_apart(sandbox: Sandbox) -> None:
    result = sandbox.exec("echo to-out; echo to-err >&2; exit 7")
    assert (result.exit_code, result.stdout, result.stderr) == (7, "to-out\n", "to-err\n")


def test_non_utf8_output_does_not_crash(sandbox: Sandbox) -> None:
    result = sandbox.exec(["printf", "\\377\\376ok"])
    assert result.ok
    assert result.stdout.endswith("ok")


def test_argv_is_passed_without_a_shell(sandbox: Sandbox) -> None:
    result = sandbox.exec(["echo", "$HOME", "a b"])
    assert result.stdout == "$HOME a b\n"


def test_env_and_cwd_apply_to_one_command(sandbox: Sandbox) -> None:
    result = sandbox.exec("echo $GREETING; pwd", env={"GREETING": "hi"}, cwd="/tmp")
    assert result.stdout == "hi\n/tmp\n"
    assert sandbox.exec("echo ${GREETING:-unset}").stdout == "unset\n"


def test_files_round_trip_and_missing_files_raise(sandbox: Sandbox) -> None:
    payload = bytes(range(256)) * 1000  # binary, larger than one write chunk
    sandbox.write_file("/tmp/deep/dir/blob.bin", payload)
    assert sandbox.read_file("/tmp/deep/dir/blob.bin") == payload
    with pytest.raises(FileNotFoundError):
        sandbox.read_file("/tmp/missing")
    with pytest.raises(IsADirectoryError):
        sandbox.read_file("/tmp/deep")


def test_hardening_overrides_are_reported(agent_image: str, shop_repo: Path) -> None:
    settings = SandboxSettings(hardening=Hardening(pids_limit=64, read_only_root=False))
    with Sandbox(shop_repo, settings=settings) as sb:
        assert sb.hardening_overrides == {"pids_limit": 64, "read_only_root": False}
        assert sb.exec("touch /var/tmp/now-writable").ok
        limit = sb.exec("cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null")
        assert limit.stdout.split() == ["64"]


def test_the_root_filesystem_is_read_only_by_default(sandbox: Sandbox) -> None:
    result = sandbox.exec("touch /var/tmp/probe")
    assert "Read-only file system" in result.stderr


def test_the_agent_runs_as_the_owner_of_the_workspace(agent_image: str, shop_repo: Path) -> None:
    # As on a laptop whose user is not uid 1000: the agent takes the workspace owner's uid.
    with Sandbox(shop_repo, owner=(1234, 1234)) as sb:
        result = sb.exec("id -u; touch /workspace/new && echo ok > $HOME/x && cat $HOME/x && "
                         "git commit -q --allow-empty -m as-1234 && echo committed")
        assert result.stdout.split() == ["1234", "ok", "committed"], result.stderr
        assert sb.changes().commit_count == 1


def test_after_hundreds_of_commands_a_timeout_still_kills_its_own_session_only(
        sandbox: Sandbox) -> None:
    """Each command's session id once went to a file on a 1 MiB tmpfs, full after ~256
    commands: a timeout then fell back to killing every process of the agent."""
    import threading

    for _ in range(300):
        assert sandbox.exec("true").exit_code == 0
    stderr = sandbox.exec("echo visible >&2").stderr
    assert stderr == "visible\n", "the launcher's header never reaches the output"
    neighbour: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: neighbour.update(
        result=sandbox.exec("sleep 4; echo survived", timeout=30)))
    thread.start()
    timed = sandbox.exec("sleep 60 & sleep 60", timeout=1)
    thread.join()
    assert timed.timed_out
    assert neighbour["result"].stdout == "survived\n", "only the timed-out session was killed"
    assert "sleep 60" not in sandbox.exec(["ps", "-eo", "args"]).stdout
