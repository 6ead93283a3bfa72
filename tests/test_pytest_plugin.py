"""The pytest plugin as a team uses it: installed through its entry point, configured by a
harness.yaml, its fixtures driving real sandboxes and its assertions reading change sets."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.fixtures import fixture_seed

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

CONFIG = """
guardrails:
  protected_tables: [users]
observability:
  tracing: {{path: "{traces}"}}
target:
  repo: {repo}
  database: {database}
"""

TESTS = '''
import pytest
from harness.testing import assert_untouched, assert_within, changes


def test_episode_rows_commits_and_refusals(harness_episode, harness_changes):
    harness_episode.act({"tool": "db_mutate",
                         "parameters": {"sql": "UPDATE orders SET status = 'void' WHERE id = 2"}})
    harness_episode.act({"tool": "db_mutate", "parameters": {"sql": "DELETE FROM users"}})
    harness_episode.act({"tool": "write_file",
                         "parameters": {"path": "NOTES.md", "content": "notes\\n"}})
    harness_episode.act({"tool": "git_commit", "parameters": {"message": "Add notes"}})
    change = harness_changes(harness_episode)
    assert change.rows["public.orders"].updated == 1
    assert change.rows["orders"].keys["updated"] == [2]
    assert change.rows["orders"].deleted == 0
    assert change.rows["users"].total == 0, "refused: nothing changed"
    assert change.rows.total == 1 and change.ddl == []
    assert change.commits == 1 and change.messages == ["Add notes"]
    assert change.files == ["NOTES.md"]
    assert change.refusals == ["guardrail sql.delete-without-where"]
    assert_untouched(change, "users", "public.customers")
    assert_within(change, rows=1, commits=1, files=1, ddl=False)
    with pytest.raises(AssertionError, match=r"2 rows changed \\(limit 1\\)"):
        harness_episode.act({"tool": "db_mutate",
                             "parameters": {"sql": "UPDATE orders SET total = 0 WHERE id = 3"}})
        assert_within(changes(harness_episode), rows=1)


def test_a_bare_sandbox(harness_sandbox):
    result = harness_sandbox.exec("echo x > f && git add f && git commit -qm wip")
    assert result.exit_code == 0, result.stderr
    change = changes(harness_sandbox)
    assert change.commits == 1 and change.files == ["f"] and change.rows.total == 0


def test_caught_deleting(harness_episode):
    harness_episode.act({"tool": "db_mutate", "parameters": {
        "sql": "DELETE FROM order_lines WHERE order_id = 1 AND line = 1"}})
    assert_untouched(changes(harness_episode), "orders", "order_lines")
'''


@pytest.fixture()
def project(pytester: pytest.Pytester, shop_repo: Path, tmp_path: Path) -> Path:
    config = CONFIG.format(traces=tmp_path / "traces", repo=shop_repo,
                           database=fixture_seed("shop"))
    (pytester.path / "harness.yaml").write_text(config)
    pytester.makepyfile(test_agent=TESTS)
    return pytester.path


def test_fixtures_and_assertions_drive_real_sandboxes(pytester: pytest.Pytester, project: Path,
                                                      tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--junitxml={junit}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*changed, though they must stay untouched: public.order_lines +0 ~0 -1*"])
    cases = {case.get("name"): case for case in ET.parse(junit).iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in
                  cases["test_caught_deleting"].iter("property")}
    assert '"public.order_lines": {"inserted": 0, "updated": 0, "deleted": 1}' in properties[
        "harness_changes"]
    traces = list((tmp_path / "traces").glob("*.jsonl"))
    assert len(traces) == 2, "each episode closed, its trace written"
    assert {t.stem for t in traces} == {
        p.get("value") for case in cases.values() for p in case.iter("property")
        if p.get("name") == "harness_trace_id"}


def test_the_option_wins_over_the_working_folders_file(pytester: pytest.Pytester,
                                                       project: Path) -> None:
    (project / "chosen.yaml").write_text((project / "harness.yaml").read_text())
    (project / "harness.yaml").write_text("guardrails:\n  protected_tabels: []\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--harness-config",
                                           "chosen.yaml", "-k", "bare_sandbox")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "bare_sandbox")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*harness.yaml:2: guardrails.protected_tabels: unknown key*"])


def test_without_a_configuration_the_tests_error_and_never_skip(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.delenv("HARNESS_CONFIG", raising=False)
    pytester.makepyfile(test_agent="def test_needs_it(harness_episode):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*harness: no configuration at*pass --harness-config*"])
