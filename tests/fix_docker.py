"""A real Docker engine and the agent image, once per session.

Locally a missing engine skips the tests that need it, with the reason; in CI
(CI=true) it is a failure, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from harness.errors import HarnessError
from harness.home import state_dir
from harness.sandbox import engine, images, labels


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs a Docker engine and the sandbox images: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine_client() -> engine.Engine:
    """The engine the harness uses, through the harness's own client."""
    try:
        return engine.connect()
    except HarnessError as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def docker_client(engine_client: engine.Engine) -> docker.DockerClient:
    """The same engine through docker-py: what the tests observe with is not the client
    the harness acts with."""
    return docker.from_env(timeout=120)


@pytest.fixture(scope="session")
def agent_image(engine_client: engine.Engine) -> str:
    """The agent image's tag, built when missing."""
    try:
        return images.ensure(engine_client, images.ImageDefinition.named("agent"))
    except HarnessError as exc:
        _unavailable(f"cannot build the agent image: {exc}")
        raise


def harness_resources(client: docker.DockerClient) -> list[str]:
    """Names of the containers and volumes of this session's harness home, and the sandbox
    disks and database data images mounted under it: only what the session made, whatever
    else uses the engine."""
    selector = labels.own_home_selector()
    folders = (f"{state_dir('workspaces')}/", f"{state_dir('postgres')}/")  # + data images
    disks = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
             if line.split()[1].startswith(folders)]
    return [c.name for c in client.containers.list(all=True, filters=selector,
                                                         ignore_removed=True)] + [
        v.name for v in client.volumes.list(filters=selector)
    ] + disks


@pytest.fixture(scope="session", autouse=True)
def no_leftover_resources(request: pytest.FixtureRequest, harness_home: Path
                          ) -> Iterator[None]:
    """After the whole session (and after the session's database server is removed), no
    container, volume or disk of the session's harness home may remain."""
    try:
        engine.connect()
    except HarnessError:
        yield
        return
    client = docker.from_env(timeout=120)
    if os.environ.get("HARNESS_TEST_KEEP_SERVERS"):
        yield  # a shared home whose servers outlive the session: nothing to count
        return
    before = set(harness_resources(client))
    yield
    left = sorted(set(harness_resources(client)) - before)
    assert not left, f"the suite left harness resources behind: {left}"
