"""A sandbox's disk limit, enforced by the kernel: writing past it gives ENOSPC wherever the
agent writes, the host loses no more than the limit, the sandbox stays usable, and a
sandbox beside it does not notice."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.config import parse_config
from harness.errors import ConfigError
from harness.home import state_dir
from harness.sandbox import Sandbox
from harness.sandbox.disk import image_path, mechanism
from harness.sandbox.settings import SandboxSettings

pytestmark = pytest.mark.docker
LIMIT_MB = 64


def _settings(limit: str | None = f"{LIMIT_MB}m") -> SandboxSettings:
    return SandboxSettings(disk_limit=limit)


def _host_free() -> int:
    stats = os.statvfs(state_dir("disks"))
    return stats.f_bavail * stats.f_frsize


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text()
               .splitlines())


def test_this_host_enforces_disk_limits() -> None:
    assert mechanism().enforced, mechanism().detail


@pytest.mark.parametrize("where", ["/workspace", "/tmp", "/home/agent"])
def test_writing_past_the_limit_gets_enospc_and_the_host_loses_at_most_the_limit(
        shop_repo: Path, where: str) -> None:
    free_before = _host_free()
    with Sandbox(shop_repo, settings=_settings()) as sandbox:
        result = sandbox.exec(f"dd if=/dev/urandom of={where}/fill bs=1M count=200 "
                              "conv=fsync status=none")
        assert result.exit_code != 0
        assert "No space left on device" in result.stderr
        assert result.disk_limit_hit
        written = int(sandbox.exec(f"stat -c %s {where}/fill").stdout)
        assert 40 << 20 < written <= LIMIT_MB << 20
        lost = free_before - _host_free()
        assert lost <= (LIMIT_MB + 8) << 20, f"the host lost {lost >> 20} MiB"
        # Still usable: free the space and carry on, git included.
        again = sandbox.exec(f"rm {where}/fill && echo fine > notes.txt && git add notes.txt "
                             "&& git -c user.email=a@b -c user.name=a commit -qm notes && "
                             "git log --oneline | head -1")
        assert again.ok, again.stderr
        assert "notes" in again.stdout and not again.disk_limit_hit
        assert sandbox.changes().commit_count == 1
        disk = sandbox.disk
        assert disk is not None and _mounted(disk.path)
    assert not _mounted(disk.path) and not disk.path.exists() and not image_path(disk.name).exists()


def test_the_limit_counts_every_place_together(shop_repo: Path) -> None:
    with Sandbox(shop_repo, settings=_settings()) as sandbox:
        result = sandbox.exec(
            "for d in /workspace /tmp /home/agent; do "
            "dd if=/dev/zero of=$d/part bs=1M count=25 status=none || echo full at $d; done")
        assert "full at /home/agent" in result.stdout, result.stdout + result.stderr
        assert result.disk_limit_hit


def test_a_sandbox_beside_a_full_one_does_not_notice(shop_repo: Path) -> None:
    with Sandbox(shop_repo, settings=_settings()) as full, \
            Sandbox(shop_repo, settings=_settings()) as neighbour:
        assert full.disk is not None and neighbour.disk is not None
        free = neighbour.disk.free_bytes()
        filled = full.exec("dd if=/dev/zero of=/tmp/fill bs=1M count=500 status=none")
        assert filled.disk_limit_hit
        assert neighbour.disk.free_bytes() == free
        written = neighbour.exec("dd if=/dev/zero of=/workspace/ok bs=1M count=40 status=none "
                                 "&& echo done")
        assert written.ok and written.stdout.strip() == "done" and not written.disk_limit_hit


def test_many_small_files_exhaust_the_limit_too(shop_repo: Path) -> None:
    with Sandbox(shop_repo, settings=_settings("16m")) as sandbox:
        result = sandbox.exec("cd /tmp && for i in $(seq 1 20000); do : > f$i || break; "
                              "done; ls | wc -l", timeout=60)
        assert "No space left on device" in result.stderr
        assert result.disk_limit_hit
        assert sandbox.exec("rm -rf /tmp/f* && echo x > /tmp/y && cat /tmp/y").stdout == "x\n"


def test_the_write_file_tool_says_the_disk_is_full(shop_repo: Path) -> None:
    from harness.errors import SandboxError

    with Sandbox(shop_repo, settings=_settings("16m")) as sandbox:
        sandbox.exec("dd if=/dev/zero of=/tmp/fill bs=1M count=64 status=none")
        with pytest.raises(SandboxError, match="disk_limit_hit"):
            sandbox.write_file("/workspace/more.bin", b"x" * (1 << 20))


def test_without_a_limit_there_is_no_disk_and_it_is_reported(shop_repo: Path) -> None:
    with Sandbox(shop_repo, settings=_settings(None)) as sandbox:
        assert sandbox.disk is None
        assert sandbox.hardening_overrides == {"disk_limit": None}
        assert not sandbox.exec("df /workspace | tail -1").stdout.startswith("/dev/loop")


def test_bad_limits_name_the_key() -> None:
    with pytest.raises(ConfigError, match="disk_limit"):
        parse_config("sandbox:\n  disk_limit: 10k\n")
    with pytest.raises(ConfigError, match="disk_limit"):
        parse_config("sandbox:\n  disk_limit: lots\n")
    assert parse_config("sandbox:\n  disk_limit: 2G\n").sandbox.disk_limit == "2g"


def test_a_non_root_host_reports_why_the_limit_is_not_enforced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
         os.environ.get("PYTHON", "python3"), "-c",
         "import sys; sys.path.insert(0, sys.argv[1]);"
         "from harness.sandbox.disk import mechanism; print(mechanism())",
         str(Path(__file__).resolve().parents[2])],
        capture_output=True, text=True, env={"HARNESS_HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False)
    assert "enforced=False" in done.stdout and "needs root" in done.stdout, done.stderr


def test_a_required_limit_that_cannot_be_enforced_refuses_to_open(
        shop_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import SandboxError
    from harness.sandbox import sandbox as sandbox_module
    from harness.sandbox.disk import Mechanism

    monkeypatch.setattr(sandbox_module, "mechanism",
                        lambda: Mechanism(False, "no loop devices (for this test)"))
    settings = SandboxSettings(disk_limit="1g", require_disk_limit=True)
    with pytest.raises(SandboxError, match="require_disk_limit"):
        Sandbox(shop_repo, settings=settings).open()
    with Sandbox(shop_repo, settings=_settings()) as sandbox:
        assert sandbox.disk is None
        assert sandbox.hardening_overrides["disk_limit"].startswith("not enforced: no loop")
        assert sandbox.exec("df --output=size -m /tmp | tail -1").stdout.strip() == \
            str(LIMIT_MB), "tmpfs no larger than the limit"


def test_a_disk_that_fails_to_mount_forgets_the_hosts_record_and_leaves_nothing() -> None:
    """The record that this host mounts disks saves every later process a probe; a disk
    that then cannot be made (here: an image too small to hold a filesystem) must send
    the next process back to probing, and leave no image, folder or mount behind."""
    from harness.errors import SandboxError
    from harness.sandbox import probes
    from harness.sandbox.disk import PROBE, Disk

    assert mechanism().enforced
    record = state_dir("probes") / f"{PROBE}.json"
    assert record.exists(), "a probe that worked is recorded"
    broken = Disk("hx-too-small", 1, owner=(os.geteuid(), os.getegid()))
    with pytest.raises(SandboxError):
        broken.create()
    assert not record.exists(), "the record is forgotten"
    assert not broken.image.exists() and not broken.path.exists()
    assert not _mounted(broken.path)
    # The next asker probes again (a probe that fails is answered and never recorded).
    assert probes.remembered(PROBE, lambda: (False, "probed again")) == (False, "probed again")
    assert not record.exists()
