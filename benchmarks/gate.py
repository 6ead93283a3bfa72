"""`harness gate` as CI runs it: the wall time of the process (start included) on a 50-commit
PR of the generated 10,000-commit repository, against `git diff` of the same range measured
in the same run (median, p95, ratio); and the secrets check's throughput on a PR that
changes 10,000 lines of a lockfile with registry passwords planted in it (findings per
second, lines per second). With `--rehearsal`, also the gate with the database rehearsal
on Chinook (its migration updates rows of two tables)."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import summary, timed

from harness.config import parse_config
from harness.fixtures import fixtures_root, generated_repo
from harness.gate import run_gate

CHINOOK = fixtures_root() / "datasets" / "chinook" / "chinook_postgresql.sql"
CONFIG = """
orchestrator:
  blast_radius: {max_commits: 100, max_database_rows: 1000, max_files_changed: 100,
                 max_lines_changed: 100000}
gate:
  migrate: "psql -v ON_ERROR_STOP=1 -q -f migrations/001_reprice.sql"
  secrets_max_per_file: 1000
"""
PLANTED = 20
"""Registry URLs with a password in the 10k-line lockfile: the findings to find."""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=bench", "-c",
                    "user.email=bench@example.com", *args], check=True, capture_output=True)


def harness_gate(repo: Path, base: str, head: str, config: Path) -> list[str]:
    harness = Path(sys.executable).with_name("harness")
    command = [str(harness)] if harness.exists() else [sys.executable, "-m", "harness.cli"]
    return [*command, "gate", "--repo", str(repo), "--base", base, "--head", head,
            "--config", str(config), "--json"]


def fifty_commits(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "pr", "main")
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


def lockfile_change(repo: Path) -> int:
    """A PR adding a 10,000-line yarn.lock: hashes, URLs, and PLANTED registry passwords."""
    rng = random.Random(22)
    alnum = string.ascii_letters + string.digits
    lines: list[str] = []
    n = 0
    while len(lines) < 10_000:
        secret = n % (2_000 // PLANTED) == 0 and n // (2_000 // PLANTED) < PLANTED
        host = (f"ci:{''.join(rng.choices(alnum, k=20))}@npm.internal.test" if secret
                else "registry.yarnpkg.com")
        lines += [f"p{n}@^1.{n}.0:", f'  version "1.{n}.0"',
                  f'  resolved "https://{host}/p{n}/-/p{n}-1.{n}.0.tgz#'
                  f'{"".join(rng.choices("0123456789abcdef", k=40))}"',
                  f"  integrity sha512-{''.join(rng.choices(alnum + '+/', k=86))}==", ""]
        n += 1
    git(repo, "checkout", "-q", "-b", "lockfile", "main")
    (repo / "yarn.lock").write_text("\n".join(lines[:10_000]) + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "lockfile")
    return 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--rehearsal", action="store_true",
                        help="Also time the gate with the Chinook database rehearsal.")
    args = parser.parse_args()
    result: dict[str, object] = {"pr_commits": 50, "repo_commits": 10_050}
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        subprocess.run(["git", "clone", "-q", str(generated_repo(10_000, 5_000)), str(repo)],
                       check=True)
        fifty_commits(repo)
        config_file = Path(scratch) / "harness.yaml"
        config_file.write_text(CONFIG)
        gate_argv = harness_gate(repo, "main", "pr", config_file)
        diff_argv = ["git", "-C", str(repo), "diff", "main...pr"]
        for argv in (gate_argv, diff_argv):  # warm: bytecode, page cache
            subprocess.run(argv, capture_output=True, check=False)
        gate_s: list[float] = []
        diff_s: list[float] = []
        for _ in range(args.runs):  # alternated, so both see the same machine
            gate_s.append(timed(lambda: subprocess.run(gate_argv, capture_output=True,
                                                       check=False)))
            diff_s.append(timed(lambda: subprocess.run(diff_argv, capture_output=True,
                                                       check=True)))
        done = subprocess.run(gate_argv, capture_output=True, text=True, check=False)
        assert done.returncode in (0, 1), done.stderr
        g, d = summary(gate_s), summary(diff_s)
        result |= {"gate_process": g, "git_diff_process": d,
                   "ratio_median": round(g["median_ms"] / d["median_ms"], 1),
                   "ratio_p95": round(g["p95_ms"] / d["p95_ms"], 1)}

        lines = lockfile_change(repo)
        lock_argv = harness_gate(repo, "main", "lockfile", config_file)
        lock_s, secrets_s, findings = [], [], 0
        for _ in range(max(3, args.runs // 3)):
            started_report = subprocess.run(lock_argv, capture_output=True, text=True,
                                            check=False)
            report = json.loads(started_report.stdout)
            check = next(c for c in report["checks"] if c["name"] == "secrets")
            findings = len([f for f in check["findings"] if f["line"]])
            secrets_s.append(check["seconds"])
            lock_s.append(timed(lambda: subprocess.run(lock_argv, capture_output=True,
                                                       check=False)))
        assert findings == PLANTED, f"{findings} findings, {PLANTED} planted"
        median_gate = summary(lock_s)["median_ms"] / 1000
        median_check = sorted(secrets_s)[len(secrets_s) // 2]
        result["lockfile_10k_lines"] = {
            "lines": lines, "findings": findings, "gate_process": summary(lock_s),
            "secrets_check_median_ms": round(median_check * 1000, 1),
            "findings_per_s_gate": round(findings / median_gate, 1),
            "findings_per_s_secrets_check": round(findings / max(median_check, 1e-3), 1),
            "lines_per_s_gate": round(lines / median_gate)}

        if args.rehearsal:
            from harness.sandbox.postgres import DatabaseServer

            config = parse_config(CONFIG)
            without = [timed(lambda: run_gate(repo, "main", "pr", config))
                       for _ in range(args.runs)]
            server = DatabaseServer(15, instance="bench-gate")
            address = server.ensure()
            try:
                address.run_script(CHINOOK)
                dsn = address.conninfo("chinook")
                report_db = run_gate(repo, "main", "pr", config, database=dsn)  # the baseline
                assert report_db.passed, report_db.markdown()
                with_db = [timed(lambda: run_gate(repo, "main", "pr", config, database=dsn))
                           for _ in range(args.runs)]
            finally:
                server.destroy()
            a, b = summary(without), summary(with_db)
            result |= {"gate_without_db": a, "gate_with_chinook_rehearsal": b,
                       "rehearsal_cost_median_ms": round(b["median_ms"] - a["median_ms"], 1)}
        shutil.rmtree(repo, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
