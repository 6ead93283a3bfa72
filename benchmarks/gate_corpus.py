"""Precision and recall of the gate's checks (secrets, destructive-sql, lock-safety) on the
generated corpus of realistic pull requests in tests/gate_corpus.py, scored over (check,
file, line), with the misses and false alarms named, and the time the corpus took."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import gate_corpus  # noqa: E402


def main() -> None:
    cases = gate_corpus.corpus()
    with tempfile.TemporaryDirectory() as scratch:
        repo = gate_corpus.build(Path(scratch), cases)
        started = time.perf_counter()
        scores = gate_corpus.score(repo, cases)
        seconds = time.perf_counter() - started
    print(json.dumps({"cases": len(cases), "gate_seconds_total": round(seconds, 2),
                      **{kind: score.to_dict() for kind, score in scores.items()}}, indent=2))


if __name__ == "__main__":
    main()
