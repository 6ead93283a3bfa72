"""The harness's own Engine API client against the real engine, and the cheap start of
`harness exec` that it (and the sandbox settings without pydantic) exists for."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import docker
import pytest

from harness.errors import EngineUnavailable
from harness.sandbox import probes
from harness.sandbox.container import Container
from harness.sandbox.engine import Engine, EngineError, NotFound, demultiplex
from harness.sandbox.settings import Hardening

pytestmark = pytest.mark.docker


def test_a_missing_container_image_or_volume_is_not_found(engine_client: Engine) -> None:
    with pytest.raises(NotFound):
        engine_client.inspect_container("harness-no-such-container")
    assert engine_client.find_container("harness-no-such-container") is None
    assert not engine_client.has_image("harness-no-such-image:nope")
    assert engine_client.find_volume("harness-no-such-volume") is None
    with pytest.raises(EngineError) as info:
        engine_client.create_container({"Image": "harness-no-such-image:nope"})
    assert info.value.status == 404 and "harness-no-such-image" in info.value.message


def test_no_engine_at_the_socket_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as info:
        Engine(f"unix://{tmp_path}/absent.sock").ping()
    assert "no Docker engine answers" in str(info.value) and "dockerd" in str(info.value)


def test_an_engine_that_is_not_http_is_an_engine_error(tmp_path: Path) -> None:
    path = str(tmp_path / "fake.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def answer_garbage() -> None:
        connection, _ = server.accept()
        connection.recv(4096)
        connection.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        connection.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    with pytest.raises(EngineError, match="not an HTTP answer"):
        Engine(f"unix://{path}").version()
    server.close()


def test_an_unsupported_docker_host_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ssh://user@example")
    with pytest.raises(EngineUnavailable, match="ssh://user@example"):
        Engine.from_environment()


def test_the_container_config_is_the_hardened_one_the_engine_reports(
        engine_client: Engine, docker_client: docker.DockerClient, agent_image: str) -> None:
    """Seen through docker-py, not the client that made it."""
    with Container(engine_client, agent_image, hardening=Hardening(memory="512m", cpus=0.5),
                   labels={"harness.test": "config"}) as container:
        host = docker_client.api.inspect_container(container.id)["HostConfig"]
        assert host["Memory"] == host["MemorySwap"] == 512 << 20
        assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 256
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["NetworkMode"] == "none" and host["LogConfig"]["Type"] == "none"


def test_output_larger_than_a_socket_read_and_both_streams_arrive_whole(
        engine_client: Engine, agent_image: str) -> None:
    with Container(engine_client, agent_image, hardening=Hardening(),
                   labels={"harness.test": "stream"}) as container:
        result = container.exec("head -c 300000 /dev/zero | tr '\\0' a; echo -n err >&2; "
                                "exit 3", stdin=b"x" * 200_000)
        assert result.exit_code == 3 and result.stdout == "a" * 300_000
        assert result.stderr == "err"
        echoed = container.exec(["cat"], stdin=b"y" * 200_000)
        assert echoed.stdout == "y" * 200_000
        raw = engine_client.exec_output(engine_client.create_exec(
            container.id, ["sh", "-c", "echo out; echo err >&2"]))
        assert sorted(raw.decode().split()) == ["err", "out"]


def test_demultiplex_joins_the_frames_and_ignores_a_torn_tail() -> None:
    frames = (b"\x01\0\0\0\0\0\0\x03out" + b"\x02\0\0\0\0\0\0\x03err" + b"\x01\0\0")
    assert demultiplex(frames) == b"outerr"


def test_a_probe_that_worked_is_remembered_until_the_next_boot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def works() -> tuple[bool, str]:
        calls.append("probe")
        return True, "it mounts"

    probes.forget("test-probe")
    assert probes.remembered("test-probe", works) == (True, "it mounts")
    assert probes.remembered("test-probe", works) == (True, "it mounts")
    assert calls == ["probe"], "the second answer came from the record"
    monkeypatch.setattr(probes, "_boot_id", lambda: "another boot")
    assert probes.remembered("test-probe", works) == (True, "it mounts")
    assert calls == ["probe", "probe"], "a reboot probes again"
    probes.forget("test-probe")
    assert probes.remembered("test-probe", works) and len(calls) == 3, "forgotten: asked again"

    def fails() -> tuple[bool, str]:
        calls.append("fail")
        return False, "no loop devices"

    probes.forget("test-probe")
    for _ in range(2):
        assert probes.remembered("test-probe", fails) == (False, "no loop devices")
    assert calls[-2:] == ["fail", "fail"], "what did not work is never remembered"
    probes.forget("test-probe")


HEAVY_FOR_EXEC = ("docker", "requests", "urllib3", "pydantic", "pydantic_core", "yaml", "rich",
                  "psycopg", "git", "opentelemetry", "http")


def test_exec_without_a_config_imports_no_http_stack_validation_or_driver(
        shop_repo: Path) -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", "exec",
                           "--repo", str(shop_repo), "--json", "--", "true"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["exit_code"] == 0
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "harness" in imported
    assert not imported & set(HEAVY_FOR_EXEC), sorted(imported & set(HEAVY_FOR_EXEC))
