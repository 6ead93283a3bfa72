"""The README's main job: `harness demo` runs an episode end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.postgres]


def test_the_demo_episode_runs_and_leaves_the_origin_intact(agent_image: str) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "demo"], capture_output=True,
                          text=True, check=False, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for expected in ["refused (budget max_database_rows)",
                     "refused (guardrail sql.delete-without-where)",
                     "refused (guardrail sql.protected-table)",
                     "refused (guardrail shell.recursive-delete)",
                     "refused (guardrail shell.decode-exec)",
                     "2 commit(s) over the budget were reset away",
                     "public.orders", "the origin is intact"]:
        assert expected in out, expected
