"""Sandbox databases cloned by reflink: a PostgreSQL 18 server with its data on a loop-mounted
XFS image, the fallback to copying where the data is elsewhere, and gc --all removing the
image. Real Docker, real PostgreSQL 18, real loop mounts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from harness.errors import SandboxError
from harness.sandbox.cleanup import collect_garbage
from harness.sandbox.database import SandboxDatabase, clone_method, open_baseline
from harness.sandbox.engine import Engine
from harness.sandbox.mounts import unmount
from harness.sandbox.postgres import DatabaseServer, ServerAddress
from harness.sandbox.reflink import host_support
from harness.sandbox.settings import DatabaseSettings
from harness.sandbox.snapshot import Baseline, Source, ensure_baseline

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

TABLE_BYTES = 40 << 20
SEED = """
CREATE TABLE big (id int PRIMARY KEY, pad text NOT NULL);
INSERT INTO big SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 160000) g;
CREATE TABLE small (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO small SELECT g, 'name ' || g FROM generate_series(1, 100) g;
"""
REFLINK = DatabaseSettings(clone="reflink", data_image_size="4g")


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reflink") / "big.sql"
    path.write_text(SEED)
    return path


@pytest.fixture(scope="module")
def reflinked(docker_client: docker.DockerClient, harness_home: Path, seed: Path
              ) -> tuple[ServerAddress, Baseline]:
    """The session's PostgreSQL 18 sandbox server, on its data image, with the seed's
    baseline (it goes with the session's servers)."""
    if not host_support().reflink:
        message = f"this host cannot mount a reflink image: {host_support().detail}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return open_baseline(str(seed), REFLINK)


def used_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


@pytest.fixture()
def clones(reflinked: tuple[ServerAddress, Baseline]) -> Iterator[list[SandboxDatabase]]:
    made: list[SandboxDatabase] = []
    yield made
    for db in made:
        db.drop()


def test_a_reflinked_clone_shares_the_baselines_blocks_and_keeps_its_writes(
        reflinked: tuple[ServerAddress, Baseline], clones: list[SandboxDatabase]) -> None:
    server, baseline = reflinked
    assert server.version == 18 and server.clone.reflink, server.clone
    data = DatabaseServer(18).data_image.mountpoint
    before = used_bytes(data)
    first = SandboxDatabase(server, baseline, "rl-first").create()
    clones.append(first)
    shared = used_bytes(data) - before
    assert (first.clone_method, first.clone_report()["clone_method"]) == ("reflink", "reflink")
    assert "XFS image" in first.clone_detail and first.clone_seconds > 0
    second = SandboxDatabase(server, baseline, "rl-second").create()
    clones.append(second)
    copied_server = clone_method(server, "copy")
    copied = SandboxDatabase(copied_server, baseline, "rl-copied")
    before = used_bytes(data)
    clones.append(copied.create())
    grown = used_bytes(data) - before
    assert copied.clone_method == "copy" and "clone is copy" in copied.clone_detail
    # The copy writes the table again; the clone only its metadata.
    assert grown > TABLE_BYTES * 0.8, grown
    assert shared < grown / 4, (shared, grown)

    for db in (first, second, copied):
        with db.connect() as conn:
            assert conn.execute("SELECT count(*), sum(id) FROM big").fetchone() == (
                160000, 160000 * 160001 // 2)
    with first.connect() as conn:
        conn.execute("UPDATE big SET pad = 'changed' WHERE id <= 1000")
        conn.execute("DELETE FROM small WHERE id > 50")
        conn.execute("INSERT INTO small VALUES (1000, 'new')")
    delta = first.delta().summary()["total"]
    assert (delta["inserted"], delta["updated"], delta["deleted"]) == (1, 1000, 50)
    for db in (second, copied):
        with db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM big WHERE pad = 'changed'"
                                ).fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM small").fetchone() == (100,)
        assert db.delta().summary()["total"]["updated"] == 0
    # The baseline takes no connections: a clone made after the writes shows what it holds.
    later = SandboxDatabase(server, baseline, "rl-later").create()
    clones.append(later)
    with later.connect() as conn:
        assert conn.execute("SELECT count(*) FROM big WHERE pad = 'changed'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM small").fetchone() == (100,)


def test_the_data_image_is_mounted_again_after_a_reboot_with_its_baselines(
        reflinked: tuple[ServerAddress, Baseline], seed: Path) -> None:
    server = DatabaseServer(18)
    server.client.remove_container(server.name)
    unmount(server.data_image.mountpoint)  # what a reboot does; the image file stays
    assert not server.data_image.mounted() and server.data_image.exists()
    address = server.ensure()
    assert server.data_image.mounted() and address.clone.reflink
    again, baseline = open_baseline(str(seed), REFLINK)
    assert baseline.reused, "the baseline lived on the image"
    db = SandboxDatabase(again, baseline, "rl-after-reboot").create()
    try:
        assert db.clone_method == "reflink"
        with db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM small").fetchone() == (100,)
    finally:
        db.drop()


def test_auto_copies_and_says_why_when_the_data_is_not_on_a_reflink_filesystem(
        docker_client: docker.DockerClient, harness_home: Path, seed: Path) -> None:
    server = DatabaseServer(18, instance="on-volume", data_image_size=None)
    try:
        address = server.ensure()
        assert not server.data_image.exists()
        assert not address.clone.reflink
        assert server.volume in address.clone.detail, address.clone.detail
        assert clone_method(address, "auto") == address
        with pytest.raises(SandboxError, match=r"clone is reflink.*Docker volume"):
            clone_method(address, "reflink")
        baseline = ensure_baseline(address, Source.parse(str(seed)))
        db = SandboxDatabase(clone_method(address, "auto"), baseline, "rl-fallback").create()
        try:
            assert db.clone_method == "copy"
            assert server.volume in db.clone_report()["clone_detail"]
            with db.connect() as conn:
                assert conn.execute("SELECT count(*) FROM big").fetchone() == (160000,)
        finally:
            db.drop()
    finally:
        server.destroy()


def test_reflink_on_a_server_older_than_18_is_refused_with_the_reason(
        docker_client: docker.DockerClient, harness_home: Path) -> None:
    older = DatabaseServer(15).ensure()
    assert not older.clone.reflink and "new in 18" in older.clone.detail
    with pytest.raises(SandboxError, match="PostgreSQL 15 cannot clone by reflink"):
        clone_method(older, "reflink")


def test_gc_all_leaves_no_mount_and_no_image(engine_client: Engine,
        docker_client: docker.DockerClient, reflinked: object, seed: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HARNESS_HOME", str(home))
    server, _ = open_baseline(str(seed), REFLINK)
    image = DatabaseServer(18).data_image
    try:
        assert server.clone.reflink and image.mounted()
        report = collect_garbage(engine_client, everything=True)
        assert report.data_images == [str(image.image)]
        assert not image.exists() and not image.mountpoint.exists()
        assert str(home) not in Path("/proc/mounts").read_text()
        attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True)
        assert str(image.image) not in attached.stdout
    finally:
        DatabaseServer(18).destroy()
