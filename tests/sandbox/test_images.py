"""Image definitions: content-hashed tags, and the offline build on this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

from harness.errors import ImageError
from harness.sandbox import images
from harness.sandbox.engine import Engine


def test_the_tag_follows_the_definition_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(images.definitions_root() / "agent", tmp_path / "agent")
    monkeypatch.setenv("HARNESS_SANDBOXES", str(tmp_path))
    definition = images.ImageDefinition.named("agent")
    before = definition.tag
    assert before == images.ImageDefinition.named("agent").tag, "the hash is stable"
    with (tmp_path / "agent" / "packages.txt").open("a") as packages:
        packages.write("jq\n")
    assert definition.tag != before
    assert "jq" in definition.packages


def test_the_package_list_drives_both_build_paths() -> None:
    definition = images.ImageDefinition.named("agent")
    assert {"bash", "coreutils", "git", "python3", "postgresql-client"} <= set(definition.packages)
    dockerfile = (definition.directory / "Dockerfile").read_text()
    assert "ARG BASE=debian:bookworm-slim" in dockerfile
    assert "setup.sh" in dockerfile


def test_an_unknown_definition_is_a_clear_error() -> None:
    with pytest.raises(ImageError, match="no Dockerfile"):
        images.ImageDefinition.named("no-such-image")


@pytest.mark.docker
def test_the_built_image_has_the_agent_user_and_tools(
    docker_client: docker.DockerClient, agent_image: str
) -> None:
    output = docker_client.containers.run(
        agent_image, ["bash", "-c", "id -un; pwd; git --version; psql --version; python3 -V"],
        network_mode="none", remove=True,
    ).decode()
    lines = output.splitlines()
    assert lines[0] == "agent"
    assert lines[1] == "/workspace"
    assert lines[2].startswith("git version")
    assert lines[3].startswith("psql (PostgreSQL)")
    assert lines[4].startswith("Python 3")


@pytest.mark.docker
def test_an_existing_image_is_not_rebuilt(engine_client: Engine, agent_image: str) -> None:
    said: list[str] = []
    assert images.ensure(engine_client, images.ImageDefinition.named("agent"),
                         progress=said.append) == agent_image
    assert said == []
