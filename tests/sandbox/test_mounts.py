"""Host mounts by system call: loop devices taken in a race, busy mounts, odd paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.sandbox.mounts import attach_loop, detach_loop, mount, unmount


def _attached() -> dict[str, str]:
    """Loop device -> backing file, as losetup (not the harness) reports them."""
    listing = subprocess.run(["losetup", "--json", "-O", "NAME,BACK-FILE"],
                             capture_output=True, text=True, check=True).stdout
    if not listing.strip():
        return {}
    return {row["name"]: row["back-file"] for row in json.loads(listing)["loopdevices"]}


@pytest.fixture
def images(tmp_path: Path) -> Iterator[list[Path]]:
    made = []
    for number in range(8):
        image = tmp_path / f"disk {number}.img"  # a space: /proc/mounts escapes it
        with image.open("wb") as handle:
            handle.truncate(16 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        made.append(image)
    yield made
    for device, backing in _attached().items():
        if backing.startswith(str(tmp_path)):
            detach_loop(device)


def test_parallel_attaches_each_get_their_own_device(images: list[Path]) -> None:
    devices: dict[Path, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(images))

    def attach(image: Path) -> None:
        start.wait()
        try:
            devices[image] = attach_loop(image)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attach, args=(image,)) for image in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(devices.values())) == len(images), "two images on one device"
    attached = _attached()
    for image, device in devices.items():
        assert attached[device] == str(image)
        detach_loop(device)
    assert not set(devices.values()) & set(_attached())


def test_a_busy_mount_is_detached_lazily_and_its_device_freed_when_let_go(
        images: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "mount point"
    target.mkdir()
    device = attach_loop(images[0])
    mount(device, target, "ext4", "discard")
    assert os.path.ismount(target)
    holder = subprocess.Popen(["sleep", "30"], cwd=target)  # keeps the filesystem busy
    try:
        unmount(target)
        assert not os.path.ismount(target), "detached from the tree at once"
        assert device in _attached(), "still in use: freed when the holder lets go"
    finally:
        holder.kill()
        holder.wait()
    # The kernel frees the device once the lazily unmounted filesystem is released.
    for _ in range(100):
        if device not in _attached():
            break
        threading.Event().wait(0.05)
    assert device not in _attached()


def test_a_mount_that_fails_says_where_and_why_and_unmount_of_nothing_is_quiet(
        images: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    device = attach_loop(images[1])
    try:
        with pytest.raises(OSError, match=r"mount xfs at .*target: Invalid argument"):
            mount(device, target, "xfs")
    finally:
        detach_loop(device)
    assert not os.path.ismount(target)
    unmount(target)  # nothing mounted: nothing to do
    detach_loop(device)  # detached already: nothing to do
    detach_loop("/dev/loop-harness-none")  # no such device: nothing to do


def test_a_mount_reached_through_a_symlink_is_unmounted_and_its_device_freed(
        images: list[Path], tmp_path: Path) -> None:
    """A harness home behind a symlink: the mount table names the resolved path."""
    real = tmp_path / "real"
    (real / "target").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    through_link = tmp_path / "link" / "target"
    device = attach_loop(images[2])
    mount(device, through_link, "ext4")
    assert os.path.ismount(real / "target")
    unmount(through_link)
    assert not os.path.ismount(real / "target")
    assert device not in _attached()


def test_a_disk_interrupted_between_attach_and_mount_frees_its_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.sandbox import disk as disk_module

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(disk_module, "mount", interrupted)
    disk = disk_module.Disk("hx-interrupted", 16 << 20, owner=(os.geteuid(), os.getegid()))
    with pytest.raises(KeyboardInterrupt):
        disk.create()
    assert not [backing for backing in _attached().values()
                if "hx-interrupted" in backing], "the loop device stayed attached"
    assert not disk.image.exists() and not disk.path.exists()


def test_gc_detaches_a_device_left_by_a_process_killed_before_it_mounted(
        images: list[Path]) -> None:
    """A process SIGKILLed between attaching its disk and mounting it leaves a device no
    mount table names; gc frees it once its sandbox is gone, and only then."""
    from harness.home import state_dir
    from harness.sandbox import engine
    from harness.sandbox.cleanup import collect_garbage

    disks = state_dir("disks")
    orphan, living = disks / "hx-killed-before-mount.img", disks / "hx-still-making.img"
    for image in (orphan, living):
        shutil.copyfile(images[3], image)
    folder = state_dir("workspaces") / living.stem
    folder.mkdir()
    (folder / "owner.pid").write_text(str(os.getpid()))  # its maker is alive
    orphan_device, living_device = attach_loop(orphan), attach_loop(living)
    orphan.unlink()  # as gc does first: the device now backs a deleted file
    try:
        report = collect_garbage(engine.connect())
        assert orphan_device in report.loop_devices
        assert orphan_device not in _attached()
        assert _attached().get(living_device) == str(living), "a sandbox being made keeps it"
    finally:
        detach_loop(living_device)
        living.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
