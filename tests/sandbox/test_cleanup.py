"""Leaving a sandbox always removes its container and workspace; gc removes leftovers."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from harness.errors import SandboxError
from harness.sandbox import Sandbox, labels
from harness.sandbox.cleanup import collect_garbage
from harness.sandbox.container import Container
from harness.sandbox.engine import Engine
from harness.sandbox.settings import Hardening

pytestmark = pytest.mark.docker


def _containers_of(client: docker.DockerClient, sandbox_id: str) -> list[str]:
    return [c.name for c in client.containers.list(
        all=True, filters={"label": f"{labels.SANDBOX}={sandbox_id}"}, ignore_removed=True)]


def test_leaving_the_block_removes_container_and_workspace(
    docker_client: docker.DockerClient, shop_repo: Path
) -> None:
    with Sandbox(shop_repo) as sb:
        assert _containers_of(docker_client, sb.id)
        workspace = sb.workspace.path
        assert workspace.is_dir()
    assert not _containers_of(docker_client, sb.id)
    assert not workspace.exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_inside_the_block_still_cleans_up(
    docker_client: docker.DockerClient, shop_repo: Path, error: type[BaseException]
) -> None:
    with pytest.raises(error), Sandbox(shop_repo) as sb:
        sandbox_id, workspace = sb.id, sb.workspace.path
        raise error()
    assert not _containers_of(docker_client, sandbox_id)
    assert not workspace.exists()


def test_a_failed_start_leaves_nothing(docker_client: docker.DockerClient, shop_repo: Path) -> None:
    from harness.sandbox.settings import SandboxSettings

    sb = Sandbox(shop_repo, settings=SandboxSettings(image="harness-missing:nope"))
    with pytest.raises(SandboxError, match="missing"):
        sb.open()
    assert not _containers_of(docker_client, sb.id)
    assert not sb.workspace.path.exists()


def test_gc_removes_resources_of_dead_processes_only(engine_client: Engine,
    docker_client: docker.DockerClient, agent_image: str
) -> None:
    orphan_labels = {**labels.resource_labels("hx-orphan", "sandbox"), labels.PID: "999999999"}
    orphan = Container(engine_client, agent_image, hardening=Hardening(), labels=orphan_labels)
    live = Container(engine_client, agent_image, hardening=Hardening(),
                     labels=labels.resource_labels("hx-live", "sandbox"))
    orphan.start()
    orphan_name = docker_client.containers.get(orphan.id).name
    with live:
        report = collect_garbage(engine_client)
        assert orphan_name in report.containers
        assert _containers_of(docker_client, "hx-orphan") == []
        assert _containers_of(docker_client, "hx-live"), "a sandbox in use is kept"
    assert _containers_of(docker_client, "hx-live") == []


def test_gc_never_touches_another_harness_homes_resources(engine_client: Engine,
    docker_client: docker.DockerClient, agent_image: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two homes (a user's runs and a test session, two CI jobs) share one engine: even
    `gc --all` in one leaves the other's sandboxes, orphaned or not, alone."""
    orphan = {**labels.resource_labels("hx-other-home", "sandbox"), labels.PID: "999999999"}
    other = Container(engine_client, agent_image, hardening=Hardening(), labels=orphan)
    with other:
        name = docker_client.containers.get(other.id).name
        monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "second-home"))
        plain = collect_garbage(engine_client)
        everything = collect_garbage(engine_client, everything=True)
        monkeypatch.undo()
        assert _containers_of(docker_client, "hx-other-home"), "another home's orphan is kept"
        assert name not in plain.containers + everything.containers
        assert name in collect_garbage(engine_client).containers, "its own home removes it"


@pytest.mark.postgres
def test_gc_keeps_the_database_server_and_drops_orphaned_sandbox_databases(engine_client: Engine,
    docker_client: docker.DockerClient, pg_server: object, shop_repo: Path
) -> None:
    from harness.sandbox.database import SandboxDatabase, open_baseline
    from harness.sandbox.postgres import DatabaseServer
    from tests.fix_pg import CHINOOK

    server, baseline = open_baseline(str(CHINOOK))
    orphan = SandboxDatabase(server, baseline, "hx-crashed-run").create()
    with server.connect() as conn:  # as if made by a process that has since died
        conn.execute(f"COMMENT ON DATABASE {orphan.name} IS '{{\"owner_pid\": 999999999}}'")
    being_born = SandboxDatabase(server, baseline, "hx-no-container-yet").create()
    try:
        with Sandbox(shop_repo, database=str(CHINOOK)) as live:
            report = collect_garbage(engine_client)
            assert orphan.name in report.databases
            assert live.database is not None and live.database.name not in report.databases
            assert being_born.name not in report.databases, "its owner is alive"
            with server.connect() as conn:
                names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            assert orphan.name not in names
            assert {live.database.name, being_born.name} <= names
            assert DatabaseServer(15).running(), "the shared server survives gc"
    finally:
        being_born.drop()
