"""The connection to the Docker engine that runs every sandbox container."""

from __future__ import annotations

import functools

import docker
import docker.errors

from harness.errors import EngineUnavailable

START_HINT = (
    "Start a Docker engine: on Debian as root `apt-get install docker.io` then "
    "`dockerd --bridge=none --iptables=false &` (./setup does this), elsewhere start "
    "Docker Desktop or the docker service; set DOCKER_HOST if it listens elsewhere."
)


@functools.cache
def connect() -> docker.DockerClient:
    """A client for the engine named by the environment (DOCKER_HOST or the default socket)."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"no Docker engine answers ({exc}). {START_HINT}") from exc
    return client
