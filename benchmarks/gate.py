"""Gate time for a 50-commit PR on the generated 10,000-commit repository, without and with
the database rehearsal on Chinook (its migration updates rows of two tables)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.config import parse_config
from harness.fixtures import fixtures_root, generated_repo
from harness.gate import run_gate
from harness.sandbox.postgres import DatabaseServer

CHINOOK = fixtures_root() / "datasets" / "chinook" / "chinook_postgresql.sql"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=bench", "-c",
                    "user.email=bench@example.com", *args], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        subprocess.run(["git", "clone", "-q", str(generated_repo(10_000, 5_000)), str(repo)],
                       check=True)
        git(repo, "checkout", "-q", "-b", "pr")
        for n in range(50):
            target = repo / "src" / f"pkg{n:03d}" / f"mod{n:05d}.py"
            target.write_text(target.read_text() + f"CHANGED = {n}\n")
            if n == 49:
                (repo / "migrations").mkdir()
                (repo / "migrations" / "001_reprice.sql").write_text(
                    "UPDATE track SET unit_price = unit_price + 0.01 WHERE album_id <= 3;\n"
                    "UPDATE invoice SET total = total WHERE invoice_id = 1;\n")
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"change {n}")
        config = parse_config("""
orchestrator:
  blast_radius: {max_commits: 100, max_database_rows: 1000, max_files_changed: 100}
gate:
  migrate: "psql -v ON_ERROR_STOP=1 -q -f migrations/001_reprice.sql"
""")
        without = [timed(lambda: run_gate(repo, "main", "pr", config)) for _ in range(args.runs)]
        server = DatabaseServer(15, instance="bench-gate")
        address = server.ensure()
        try:
            address.run_script(CHINOOK)
            dsn = address.conninfo("chinook")
            report = run_gate(repo, "main", "pr", config, database=dsn)  # builds the baseline
            assert report.passed, report.markdown()
            with_db = [timed(lambda: run_gate(repo, "main", "pr", config, database=dsn))
                       for _ in range(args.runs)]
        finally:
            server.destroy()
        shutil.rmtree(repo, ignore_errors=True)
    a, b = summary(without), summary(with_db)
    print(json.dumps({"pr_commits": 50, "repo_commits": 10_050, "gate_without_db": a,
                      "gate_with_chinook_rehearsal": b,
                      "rehearsal_cost_median_ms": round(b["median_ms"] - a["median_ms"], 1)},
                     indent=2))


if __name__ == "__main__":
    main()
