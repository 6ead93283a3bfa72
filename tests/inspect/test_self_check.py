"""inspect_ai's own conformance suite (44 checks) against the harness provider: every
exec, read and write goes through a real episode (guardrails, budgets, trace) over a real
container. Running as another user is the one check harness does not pass: the sandbox
runs commands as its agent user only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inspect_ai.util._sandbox.self_check import *  # noqa: F403

from harness.config import parse_config
from harness.episode import Episode
from harness.inspect import HarnessSandboxEnvironment

pytestmark = [pytest.mark.docker, pytest.mark.anyio]
UNSUPPORTED = {"test_exec_as_user": "commands run as the sandbox's agent user only"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def provider(shop_repo: Path) -> Iterator[HarnessSandboxEnvironment]:
    config = parse_config(f"""
target: {{repo: {shop_repo}}}
orchestrator: {{limits: {{max_actions: 100000}}}}
sandbox: {{output_limit_bytes: 10485760}}
""")
    with Episode(config) as episode:
        yield HarnessSandboxEnvironment(episode)


@pytest.fixture()
def sandbox_env(provider: HarnessSandboxEnvironment, request: pytest.FixtureRequest
                ) -> HarnessSandboxEnvironment:
    reason = UNSUPPORTED.get(request.node.originalname)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    return provider
