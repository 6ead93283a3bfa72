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


@pytest.fixture(scope="module")
def provider_allowing_root(shop_repo: Path) -> Iterator[HarnessSandboxEnvironment]:
    config = parse_config(f"""
target: {{repo: {shop_repo}}}
orchestrator: {{limits: {{max_actions: 100000}}}}
sandbox:
  hardening: {{exec_users: [root, inspect-ai-test-exec-as-user], read_only_root: false,
              drop_capabilities: false,
              no_new_privileges: false}}
""")
    with Episode(config) as episode:
        yield HarnessSandboxEnvironment(episode)


async def test_inspects_check_of_another_user_passes_when_the_config_allows_it(
        provider_allowing_root: HarnessSandboxEnvironment) -> None:
    await test_exec_as_user(provider_allowing_root)  # noqa: F405 (inspect's own check)
    assert any(r.tool == "exec" and r.output.get("stdout") == "root\n"
               for r in provider_allowing_root.episode.results), "through the episode"


def test_the_exec_tool_runs_as_no_user_the_config_does_not_allow(
        provider: HarnessSandboxEnvironment) -> None:
    result = provider.episode.act({"tool": "exec", "parameters": {"argv": ["id", "-u"],
                                                                  "user": "root"}})
    assert result.status == "error"
    assert "'root' is not in sandbox.hardening.exec_users" in result.output["error"]
