"""Mutation score of the modules that carry harness's promises (not part of CI's run).

    .venv/bin/python tests/mutation/run.py                 # every module, JSON on stdout
    .venv/bin/python tests/mutation/run.py budget limits   # some of them
    .venv/bin/python tests/mutation/run.py --survivors     # also list surviving mutants

Each module is mutated by mutmut (from PyPI: `pip install -e '.[mutation]'`) in a copy of
a commit of the repository (HEAD, or --revision), and each mutant is tried against the
tests selected for that module, so a module takes minutes, not the whole suite's time.
Tests that need PostgreSQL share one harness home and its servers across mutants
(HARNESS_TEST_KEEP_SERVERS); they are removed at the end. The score is killed / (killed +
survived); mutants judged equivalent (no test could tell them apart from the original) are
listed in equivalent.toml with a reason and counted apart, never as killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

MODULES: dict[str, tuple[str, list[str]]] = {
    "budget": ("harness/limits/budget.py", ["tests/limits/test_budget.py"]),
    "limits": ("harness/limits/changes.py", ["tests/limits/test_changes.py",
                                             "tests/limits/test_effects.py"]),
    "effects": ("harness/limits/effects.py", ["tests/limits/test_effects.py"]),
    "redaction": ("harness/redaction.py", ["tests/test_redaction_forms.py"]),
    "decision": ("harness/guardrails/decision.py", ["tests/guardrails/test_policy.py",
                                                    "tests/guardrails/test_corpus.py"]),
    "policy": ("harness/guardrails/policy.py", ["tests/guardrails/test_policy.py",
                                                "tests/guardrails/test_corpus.py"]),
    "rows": ("harness/promote/rows.py", ["tests/test_rows.py"]),
    "promotion": ("harness/promote/promotion.py", ["tests/test_promote_protocol.py"]),
}
"""Module name -> (the file mutated, the tests that judge its mutants)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    parser.add_argument("--children", type=int, default=2, help="mutants run at once")
    parser.add_argument("--revision", default="HEAD", help="the commit to mutate")
    args = parser.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown modules {unknown}; known: {sorted(MODULES)}")
    equivalent = _equivalent()
    revision = subprocess.run(["git", "rev-parse", args.revision], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="harness-mutation-"))
    home = work / "home"
    home.mkdir()
    report: dict[str, object] = {}
    try:
        for name in args.modules:
            source, tests = MODULES[name]
            report[name] = _score(name, source, tests, work, home, equivalent.get(name, {}),
                                  args.children, args.survivors, revision)
            print(json.dumps({name: report[name]}), file=sys.stderr, flush=True)
    finally:
        _stop_servers(home)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"revision": revision, "modules": report}, indent=2))


def _score(name: str, source: str, tests: list[str], work: Path, home: Path,
           equivalent: dict[str, str], children: int, survivors: bool, revision: str
           ) -> dict[str, object]:
    copy = work / name
    _copy_repository(copy, revision)
    with (copy / "pyproject.toml").open("a") as config:
        config.write("\n[tool.mutmut]\n"
                     f'source_paths = ["harness"]\nonly_mutate = ["{source}"]\n'
                     f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
                     'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
                     'also_copy = ["sandboxes", "fixtures"]\n')
    environment = {**os.environ, "HARNESS_HOME": str(home), "HARNESS_TEST_KEEP_SERVERS": "1",
                   "PYTHONDONTWRITEBYTECODE": "1"}
    mutmut = [PYTHON, "-m", "mutmut"]
    subprocess.run([*mutmut, "run", "--max-children", str(children)], cwd=copy,
                   env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    listed = subprocess.run([*mutmut, "results", "--all", "true"], cwd=copy, env=environment,
                            capture_output=True, text=True, check=False).stdout
    outcomes: dict[str, str] = {}
    for line in listed.splitlines():
        mutant, _, status = line.strip().rpartition(": ")
        if mutant:
            outcomes[mutant] = status
    killed = sum(1 for s in outcomes.values() if s == "killed")
    survived = sorted(m for m, s in outcomes.items() if s == "survived")
    judged = [m for m in survived if m in equivalent]
    alive = [m for m in survived if m not in equivalent]
    other = {s: sum(1 for v in outcomes.values() if v == s) for s in set(outcomes.values())
             if s not in ("killed", "survived")}
    scored = killed + len(alive)
    result: dict[str, object] = {
        "file": source, "tests": tests, "mutants": len(outcomes), "killed": killed,
        "survived": len(alive), "equivalent": len(judged), "other": other,
        "score": round(killed / scored, 4) if scored else None,
        "score_counting_equivalent_as_survived": round(killed / (killed + len(survived)), 4)
        if killed + len(survived) else None}
    if survivors:
        result["survivors"] = {m: _diff(copy, environment, m) for m in alive}
    return result


def _diff(copy: Path, environment: dict[str, str], mutant: str) -> str:
    shown = subprocess.run([PYTHON, "-m", "mutmut", "show", mutant], cwd=copy,
                           env=environment, capture_output=True, text=True, check=False)
    return "\n".join(line for line in shown.stdout.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


def _copy_repository(destination: Path, revision: str) -> None:
    """The files of `revision` (a commit: work in progress elsewhere in the tree cannot
    make every mutant look killed)."""
    destination.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-xf", "-"], cwd=destination, input=archive, check=True)


def _equivalent() -> dict[str, dict[str, str]]:
    path = Path(__file__).with_name("equivalent.toml")
    if not path.exists():
        return {}
    return {module: dict(entries) for module, entries in tomllib.loads(path.read_text()).items()}


def _stop_servers(home: Path) -> None:
    """The database servers the shared home started (its containers and volumes)."""
    code = ("from harness.sandbox.postgres import DatabaseServer, available_versions\n"
            "for v in available_versions():\n"
            "    for instance in ('sandbox', 'target', 'target-2pc'):\n"
            "        DatabaseServer(v, instance=instance).destroy()\n")
    subprocess.run([PYTHON, "-c", code], env={**os.environ, "HARNESS_HOME": str(home)},
                   cwd=ROOT, capture_output=True, check=False)


if __name__ == "__main__":
    main()
