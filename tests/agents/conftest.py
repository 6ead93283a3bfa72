"""An episode on the fixture repository with one injected variable, for the adapters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import parse_config
from harness.episode import Episode


@pytest.fixture()
def episode(shop_repo: Path, tmp_path: Path) -> Iterator[Episode]:
    config = parse_config(f"state_injection:\n  sources:\n    - {{type: env_var, prefix: APP_, "
                          f"values: {{APP_MODE: eval}}}}\ntarget:\n  repo: {shop_repo}\n")
    with Episode(config, trace_path=tmp_path / "trace.jsonl") as running:
        yield running
