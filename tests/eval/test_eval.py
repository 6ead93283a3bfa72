"""Scenarios and the evaluation: every bundled scenario separates a careful agent from a
reckless one, perturbations are reproducible, and the reports say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.agents import ScriptedAgent
from harness.errors import ConfigError
from harness.eval.report import html_page, markdown, summarise
from harness.eval.runner import RunResult, evaluate, run_once
from harness.eval.scenario import load_scenario, scenarios_in

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
ALL = scenarios_in([SCENARIOS])


def scripted(name: str):  # type: ignore[no-untyped-def]
    return lambda scenario: ScriptedAgent(scenario.agents[name])


@pytest.fixture(scope="module")
def runs(agent_image: str) -> list[RunResult]:
    # From a warm pool: every scenario's hidden state, planted files and perturbations
    # must reach a sandbox made before its run was known.
    return evaluate(ALL, {"good": scripted("good"), "reckless": scripted("reckless")},
                    parallel=2, pool=1)


def test_at_least_nine_scenarios_cover_every_failure_mode() -> None:
    assert len(ALL) >= 9
    assert {s.failure_mode for s in ALL} == {
        "benchmark_mirage", "environmental_overtrust", "guardrail_bypass",
        "hidden_runtime_state", "unbounded_tool_execution", "non_deterministic_traces",
        "model_tool_swap", "success"}


@pytest.mark.parametrize("scenario", [s.name for s in ALL])
def test_the_good_agent_passes_and_the_reckless_one_fails_what_is_targeted(
        runs: list[RunResult], scenario: str) -> None:
    good = next(r for r in runs if r.scenario == scenario and r.agent == "good")
    reckless = next(r for r in runs if r.scenario == scenario and r.agent == "reckless")
    assert good.error is None and reckless.error is None
    assert good.success, good.checks
    assert good.safety_violations == []
    failed = {name for name, ok in reckless.checks.items() if not ok} | \
        set(reckless.safety_violations)
    targets = next(s for s in ALL if s.name == scenario).targets
    assert targets and set(targets) <= failed, (targets, failed)


def test_the_report_shows_exactly_that(runs: list[RunResult]) -> None:
    summary = summarise(runs)
    good, reckless = summary["table"]["good"], summary["table"]["reckless"]
    assert good["(overall)"]["success_rate"] == 1.0
    assert good["(overall)"]["safety_violations"] == 0
    assert reckless["(overall)"]["safety_violations"] > 0
    assert reckless["mass-delete"]["blast_radius_events"] == 1
    text = markdown(summary)
    assert "| **(overall)** | 11 | 1.0 | 1.0 | 0 | 0 |" in text
    page = html_page(summary)
    assert page.startswith("<!doctype html>") and "<svg" in page and "mass-delete" in page


def test_perturbations_are_reproducible_from_the_seed(agent_image: str) -> None:
    flaky = next(s for s in ALL if s.name == "flaky-tools")

    def statuses(seed: int) -> tuple[int, list[str]]:
        result = run_once(flaky, "good", scripted("good"), run=0, seed=seed)
        spans = [json.loads(line) for line in Path(result.trace).read_text().splitlines()]
        return result.perturbations, [s["name"] for s in spans
                                      if s["name"] in ("perturbation", "action")]

    first, again = statuses(7), statuses(7)
    assert first == again
    assert first[0] > 0, "the seed made some calls fail"


def test_pass_k_needs_every_repetition(agent_image: str) -> None:
    flaky = next(s for s in ALL if s.name == "flaky-tools")
    once = evaluate([flaky], {"reckless": scripted("reckless")}, repeat=3, seed=1)
    summary = summarise(once)["table"]["reckless"]["flaky-tools"]
    assert summary["runs"] == 3
    assert summary["pass_k"] == float(all(r.success for r in once))


def test_a_bad_scenario_names_the_key_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfailure_mode: success\ntask: t\nperturbations:\n"
                   "  - {type: tool_failure, tool: shell_exec, probability: 2}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:5: perturbations\[0\]\.probability"):
        load_scenario(bad)


def test_harness_eval_writes_json_markdown_and_html(tmp_path: Path, agent_image: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "eval", str(SCENARIOS / "mass-delete.yaml"),
         str(SCENARIOS / "hidden-runtime-state.yaml"), "--agent", "good", "--agent", "reckless",
         "--repeat", "2", "--parallel", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["table"]["good"]["(overall)"]["runs"] == 4
    assert report["table"]["reckless"]["(overall)"]["success_rate"] == 0.0
    assert "## reckless" in (tmp_path / "report.md").read_text()
    assert "<svg" in (tmp_path / "report.html").read_text()


def test_an_agent_spec_holding_a_path_names_one_trace_file(tmp_path: Path,
                                                          agent_image: str) -> None:
    actions = tmp_path / "sub dir" / "agent.jsonl"
    actions.parent.mkdir()
    actions.write_text('{"tool": "list_files", "parameters": {"path": "."}}\n')
    scenario = next(s for s in ALL if s.name == "success")
    from harness.eval.agents import agent_factory
    result = run_once(scenario, f"scripted:{actions}", agent_factory(f"scripted:{actions}"),
                      run=0, seed=0)
    trace = Path(result.trace)
    assert trace.exists() and trace.parent.name == "eval-traces"
    assert "/" not in trace.name and " " not in trace.name
