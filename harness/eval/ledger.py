"""The record of one evaluation in the driver's output folder: each finished run once
(the first result for a (scenario, agent, repeat) wins), with its trace and change set;
what `--resume RUN_ID` reads to skip runs already done."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.eval.runner import RunResult

INFRASTRUCTURE = "infrastructure"
"""How the error of a run that failed for its nodes' sake on every attempt begins: such a
run is run again on --resume (an agent's failure is not)."""
RunKey = tuple[str, str, int]
"""(scenario, agent, repeat index): what a run is, whichever node or attempt ran it."""


def new_run_id() -> str:
    """A fresh evaluation id: its time and a random suffix."""
    return f"ev-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


class Ledger:
    """`<out>/runs/<run_id>/`: runs.jsonl (one line per finished run), traces/, changesets/."""

    def __init__(self, out: Path, run_id: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
            raise ConfigError(f"run id {run_id!r}: letters, digits, '.', '_' and '-' only")
        self.run_id = run_id
        self.folder = out / "runs" / run_id
        self.done: dict[RunKey, RunResult] = {}
        self.duplicates = 0
        """Results that arrived for a run already recorded (and were dropped)."""

    @classmethod
    def start(cls, out: Path, *, seed: int) -> Ledger:
        """A new evaluation's record."""
        ledger = cls(out, new_run_id())
        ledger.folder.mkdir(parents=True)
        (ledger.folder / "evaluation.json").write_text(json.dumps({"seed": seed}))
        return ledger

    @classmethod
    def resume(cls, out: Path, run_id: str, *, seed: int) -> Ledger:
        """An earlier evaluation's record, with the runs it finished."""
        ledger = cls(out, run_id)
        meta = ledger.folder / "evaluation.json"
        if not meta.is_file():
            raise ConfigError(f"no evaluation {run_id} to resume in {ledger.folder.parent}")
        recorded = json.loads(meta.read_text()).get("seed")
        if recorded != seed:
            raise ConfigError(f"evaluation {run_id} ran with --seed {recorded}, not {seed}: "
                              "resume it with the same seed")
        records = ledger.folder / "runs.jsonl"
        text = records.read_text() if records.is_file() else ""
        if text and not text.endswith("\n"):  # a line cut short when the driver died
            text = text[:text.rfind("\n") + 1]
            records.write_text(text)
        for line in text.splitlines():
            data = json.loads(line)
            result = RunResult(**data)
            if not (result.error or "").startswith(INFRASTRUCTURE):
                ledger.done.setdefault(key_of(result), result)  # else: run it again
        return ledger

    def record(self, result: RunResult, trace: bytes, changeset: str | None) -> RunResult | None:
        """Keep a finished run, its trace and change set, unless the run is recorded
        already; returns the run as kept (its trace path in this folder) or None."""
        key = key_of(result)
        if key in self.done:
            self.duplicates += 1
            return None
        stem = f"{result.scenario}-{result.agent}-{result.run}"
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)
        trace_path = ""
        if trace:
            (self.folder / "traces").mkdir(parents=True, exist_ok=True)
            path = self.folder / "traces" / f"{stem}.jsonl"
            path.write_bytes(trace)
            trace_path = str(path)
        if changeset is not None:
            (self.folder / "changesets").mkdir(parents=True, exist_ok=True)
            (self.folder / "changesets" / f"{stem}.json").write_text(changeset)
        kept = RunResult(**{**_fields(result), "trace": trace_path})
        with (self.folder / "runs.jsonl").open("a") as handle:
            handle.write(json.dumps(_fields(kept), default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.done[key] = kept
        return kept


def key_of(result: RunResult) -> RunKey:
    """The run a result is of."""
    return (result.scenario, result.agent, result.run)


def _fields(result: RunResult) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(result)
