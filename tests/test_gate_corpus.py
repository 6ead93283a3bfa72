"""The gate on a corpus of realistic pull requests (tests/gate_corpus.py): every case finds
what a reviewer expects, precision and recall per check stay above their floors, and the
reports (JUnit read by a JUnit consumer, markdown) carry file and line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import Attr, IntAttr, JUnitXml, TestCase

from harness.config import parse_config
from harness.gate import GateError, GateReport, run_gate
from tests import gate_corpus
from tests.gate_corpus import CONFIG, Case, Expect

CASES = gate_corpus.corpus()
HARD = {case.name for case in gate_corpus.hard_cases()}
FLOORS = {"secrets": (0.95, 0.85), "destructive-sql": (0.95, 0.9), "lock-safety": (0.9, 0.9)}


@pytest.fixture(scope="module")
def corpus_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gate_corpus.build(tmp_path_factory.mktemp("gate-corpus"), CASES)


@pytest.fixture(scope="module")
def reports(corpus_repo: Path) -> dict[str, GateReport]:
    return {case.name: run_gate(corpus_repo, "main", f"pr/{index}",
                                parse_config(CONFIG + case.config))
            for index, case in enumerate(CASES)}


def found(report: GateReport) -> set[Expect]:
    return {Expect(check.name, f.path, f.line) for check in report.checks
            if check.name in gate_corpus.KINDS for f in check.findings if f.path and f.line}


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in HARD], ids=lambda c: c.name)
def test_each_case_finds_exactly_what_a_reviewer_expects(case: Case,
                                                          reports: dict[str, GateReport]) -> None:
    assert found(reports[case.name]) == case.expected


def test_precision_and_recall_per_check_stay_above_their_floors(
        corpus_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = gate_corpus.score(corpus_repo, CASES)
    with capsys.disabled():
        print("\n" + json.dumps({kind: {"precision": round(s.precision, 3),
                                        "recall": round(s.recall, 3)}
                                 for kind, s in scores.items()}))
    for kind, (precision, recall) in FLOORS.items():
        assert scores[kind].precision >= precision, scores[kind].to_dict()
        assert scores[kind].recall >= recall, scores[kind].to_dict()


def details(report: GateReport, check: str) -> list[str]:
    return next(c.details for c in report.checks if c.name == check)


def test_django_findings_name_real_tables_and_columns(reports: dict[str, GateReport]) -> None:
    dropped = details(reports["django migration that drops columns and tables"],
                      "destructive-sql")
    assert [d.split(": ", 1)[1] for d in dropped] == [
        "sql.drop-column: ALTER TABLE shop_order drops a column and its data "
        '(runs ALTER TABLE "shop_order" DROP COLUMN "customer_id")',
        "sql.drop-column: ALTER TABLE shop_order drops a column and its data "
        '(runs ALTER TABLE "shop_order" DROP COLUMN "legacy")',
        'sql.drop-table: DROP TABLE shop_order_tags (runs DROP TABLE "shop_order_tags")',
        'sql.drop-table: DROP TABLE billing.invoice (runs DROP TABLE "billing"."invoice")',
        "sql.truncate: TRUNCATE shop_tag",
    ]
    assert details(reports["a NetBox-like app's migration"], "destructive-sql") == [
        "dcim/migrations/0002_bays.py:8: sql.drop-table: DROP TABLE dcim_modulebay "
        '(runs DROP TABLE "dcim_modulebay")']


def test_alembic_is_judged_by_upgrade_and_what_it_calls_not_downgrade(
        reports: dict[str, GateReport]) -> None:
    judged = details(reports["alembic upgrade that destroys data"], "destructive-sql")
    lines = [int(d.split(":")[1]) for d in judged]
    assert lines == [13, 14, 15, 18, 23]  # 18: batch_op.drop_column; 23: in _cleanup()
    assert "ALTER TABLE customers drops a column" in judged[3]
    assert not details(reports["alembic create with its downgrade"], "destructive-sql")


def test_squawk_findings_need_approval_with_rule_and_line(
        reports: dict[str, GateReport]) -> None:
    report = reports["SQL migration that locks"]
    check = next(c for c in report.checks if c.name == "lock-safety")
    assert not check.passed
    rules = [(f.line, f.rule) for f in check.findings]
    assert rules[0] == (1, "squawk.require-concurrent-index-creation")
    assert (3, "squawk.changing-column-type") in rules
    assert all(f.message.startswith("require_approval: ") for f in check.findings)


def test_lock_safety_can_warn_or_be_switched_off(corpus_repo: Path) -> None:
    index = next(i for i, c in enumerate(CASES) if c.name == "SQL migration that locks")
    warn = run_gate(corpus_repo, "main", f"pr/{index}",
                    parse_config(CONFIG + "  lock_safety: warn\n"))
    check = next(c for c in warn.checks if c.name == "lock-safety")
    assert check.passed and check.findings
    assert check.findings[0].message.startswith("warning: squawk.")
    off = run_gate(corpus_repo, "main", f"pr/{index}", parse_config(CONFIG + "  lock_safety: off\n"))
    assert next(c for c in off.checks if c.name == "lock-safety").findings == []


def test_a_prs_own_baseline_cannot_allow_its_secret_but_the_bases_can(
        reports: dict[str, GateReport]) -> None:
    flagged = details(reports["a key the PR's own baseline tries to allow"], "secrets")
    assert len(flagged) == 1 and flagged[0].startswith("src/new.py:1: Stripe Access Key")
    assert details(reports["a key the base's baseline accepted"], "secrets") == []


def test_findings_beyond_the_cap_are_counted_per_file(corpus_repo: Path) -> None:
    index = next(i for i, c in enumerate(CASES) if c.name == "provider keys in settings")
    report = run_gate(corpus_repo, "main", f"pr/{index}",
                      parse_config(CONFIG.replace("50", "3")))
    assert details(report, "secrets")[3:] == [
        "shop/prod_settings.py: 8 more likely secret(s) in this file"]


# ------------------------------------------------------------- the CLI's output


class FileCase(TestCase):
    """A JUnit test case with the `file` and `line` attributes CI annotators read."""

    file = Attr()
    line = IntAttr()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "gate", *args],
                          capture_output=True, text=True, check=False)


def test_junit_has_file_and_line_per_finding_and_the_rehearsal_skipped(
        corpus_repo: Path, tmp_path: Path) -> None:
    index = next(i for i, c in enumerate(CASES) if c.name == "SQL migration that destroys data")
    config = tmp_path / "gate.yaml"
    config.write_text(CONFIG + "guardrails:\n  protected_paths: ['migrations/**']\n")
    junit, markdown = tmp_path / "gate.xml", tmp_path / "gate.md"
    done = cli("--repo", str(corpus_repo), "--base", "main", "--head", f"pr/{index}",
               "--config", str(config), "--junit", str(junit), "--markdown", str(markdown))
    assert done.returncode == 1, done.stderr
    xml = JUnitXml.fromfile(str(junit))
    cases = [FileCase.fromelem(case) for suite in xml for case in suite]
    located = {(c.file, c.line) for c in cases if c.file and c.line}
    assert located == {("migrations/002_prune.sql", 2), ("migrations/002_prune.sql", 4),
                       ("migrations/002_prune.sql", 5)}
    protected = next(c for c in cases if c.classname == "harness.gate.limits")
    assert protected.file == "migrations/002_prune.sql" and not protected.is_passed
    rehearsal = next(c for c in cases if c.classname == "harness.gate.database-rehearsal")
    assert rehearsal.is_skipped
    text = markdown.read_text()
    assert "`migrations/**` is protected (no change allowed there)" in text
    assert "- `migrations/002_prune.sql:5`: sql.update-without-where:" in text
    assert "| database-rehearsal | skipped |" in text


@pytest.mark.parametrize("failure", ["unknown ref", "bad config", "shallow clone"])
def test_an_error_exits_2_and_still_writes_junit_with_one_error_case(
        failure: str, corpus_repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "gate.yaml"
    config.write_text(CONFIG if failure != "bad config" else "gate: {no_such_key: 1}\n")
    repo, base = corpus_repo, "main"
    if failure == "shallow clone":
        repo = tmp_path / "shallow"
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "pr/0",
                        f"file://{corpus_repo}", str(repo)], check=True)
        base = "HEAD~1"
    head = "no-such-branch" if failure == "unknown ref" else "HEAD" \
        if failure == "shallow clone" else "pr/0"
    junit = tmp_path / "gate.xml"
    done = cli("--repo", str(repo), "--base", base, "--head", head, "--config", str(config),
               "--junit", str(junit))
    assert done.returncode == 2, done.stdout
    cases = [case for suite in JUnitXml.fromfile(str(junit)) for case in suite]
    assert len(cases) == 1 and cases[0].is_error
    message = cases[0].result[0].message
    assert message and message.split()[0] in " ".join(done.stderr.split())
    if failure == "shallow clone":
        assert "shallow" in message and "fetch-depth: 0" in message
        assert "git fetch --unshallow" in message and "--deepen" in message


def test_a_shallow_clone_whose_history_misses_the_merge_base_says_what_to_fetch(
        corpus_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--no-single-branch",
                    f"file://{corpus_repo}", str(repo)], check=True)
    with pytest.raises(GateError, match="shallow clone and its history does not reach the "
                                        "merge base of origin/main and origin/pr/0"):
        run_gate(repo, "origin/main", "origin/pr/0", parse_config(CONFIG))


def test_protected_tables_named_as_in_the_database_match_django_models(corpus_repo: Path) -> None:
    index = next(i for i, c in enumerate(CASES) if c.name == "a NetBox-like app's migration")
    report = run_gate(corpus_repo, "main", f"pr/{index}", parse_config(
        CONFIG + "guardrails:\n  protected_tables: [dcim_modulebay]\n"))
    assert "dcim/migrations/0002_bays.py:8: sql.protected-table: DROP writes dcim_modulebay, a " \
           "protected table (dcim_modulebay) (runs DROP TABLE \"dcim_modulebay\")" in \
           details(report, "destructive-sql")
