"""The record of a distributed evaluation: each run kept once whichever result arrives
first, with its trace and change set; --resume skips what is recorded, except runs whose
nodes failed them on every attempt."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.eval.ledger import Ledger
from harness.eval.runner import RunResult

RUN = RunResult("success", "good", 0, 7, True, {"tests-pass": True}, [], 0, 3, 0, 0, 1.5,
                "/node/trace.jsonl", node="node-a", attempt=1)


def test_a_run_is_kept_once_with_its_trace_and_change_set(tmp_path: Path) -> None:
    ledger = Ledger.start(tmp_path, seed=7)
    kept = ledger.record(RUN, b'{"span": 1}\n', '{"workspace": {}}')
    assert kept is not None and kept.node == "node-a" and kept.attempt == 1
    assert Path(kept.trace).read_bytes() == b'{"span": 1}\n'
    assert Path(kept.trace).parent == ledger.folder / "traces"
    assert (ledger.folder / "changesets" / "success-good-0.json").is_file()
    late = replace(RUN, node="node-b", attempt=2)  # its node died before the first arrived
    assert ledger.record(late, b"other", None) is None
    assert ledger.duplicates == 1
    lines = (ledger.folder / "runs.jsonl").read_text().splitlines()
    assert [json.loads(line)["node"] for line in lines] == ["node-a"]


def test_resume_skips_recorded_runs_but_not_those_the_infrastructure_failed(
        tmp_path: Path) -> None:
    ledger = Ledger.start(tmp_path, seed=7)
    ledger.record(RUN, b"", None)
    ledger.record(replace(RUN, run=1, success=False, error="AgentError: it gave up"), b"", None)
    ledger.record(replace(RUN, run=2, success=False, node="", attempt=3,
                          error="infrastructure, 3 attempt(s): NodeDiedError"), b"", None)
    with (ledger.folder / "runs.jsonl").open("a") as handle:
        handle.write('{"scenario": "succ')  # the driver died mid-line
    again = Ledger.resume(tmp_path, ledger.run_id, seed=7)
    assert sorted(again.done) == [("success", "good", 0), ("success", "good", 1)]
    assert again.record(replace(RUN, run=2, attempt=1), b"", None) is not None
    third = Ledger.resume(tmp_path, ledger.run_id, seed=7)
    assert sorted(third.done) == [("success", "good", n) for n in range(3)]


def test_resume_refuses_another_seed_or_an_unknown_evaluation(tmp_path: Path) -> None:
    ledger = Ledger.start(tmp_path, seed=7)
    with pytest.raises(ConfigError, match="--seed 7"):
        Ledger.resume(tmp_path, ledger.run_id, seed=8)
    with pytest.raises(ConfigError, match="no evaluation ev-nope"):
        Ledger.resume(tmp_path, "ev-nope", seed=7)
    with pytest.raises(ConfigError, match="letters, digits"):
        Ledger.resume(tmp_path, "../elsewhere", seed=7)
