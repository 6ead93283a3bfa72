"""The corpus: destructive actions are all blocked, everyday ones all allowed."""

from __future__ import annotations

import json

import pytest

from harness.tools import ToolAction
from tests.guardrails.corpora import CONTEXT, CORPUS, POLICY


def _load(name: str) -> list[tuple[ToolAction, str | None]]:
    """Each action, and the rule expected to stop it (None for everyday ones)."""
    cases = []
    for line in (CORPUS / name).read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            rule = data.pop("rule", None)
            cases.append((ToolAction.from_dict(data), rule))
    return cases


DESTRUCTIVE_CASES = _load("destructive.jsonl")
DESTRUCTIVE = [action for action, _ in DESTRUCTIVE_CASES]
EVERYDAY = [action for action, _ in _load("everyday.jsonl")]


def _label(action: ToolAction) -> str:
    return json.dumps(dict(action.parameters))[:80]


def test_the_corpus_is_big_enough() -> None:
    assert len(DESTRUCTIVE) >= 150
    assert len(EVERYDAY) >= 150
    tools = {a.tool for a in DESTRUCTIVE} | {a.tool for a in EVERYDAY}
    assert tools == {"shell_exec", "db_mutate"}


@pytest.mark.parametrize(("action", "rule"), DESTRUCTIVE_CASES,
                         ids=[_label(a) for a, _ in DESTRUCTIVE_CASES])
def test_destructive_action_is_blocked_by_the_rule_that_reads_it(action: ToolAction, rule: str
                                                                 ) -> None:
    decision = POLICY.evaluate(action, CONTEXT)
    assert not decision.allowed, decision
    assert decision.rule_id == rule, (
        "stopped by another rule than the one that reads it (a broken rule hidden by an "
        "overlapping one?)", decision.reason)
    assert decision.reason


@pytest.mark.parametrize("action", EVERYDAY, ids=_label)
def test_everyday_action_is_allowed(action: ToolAction) -> None:
    decision = POLICY.evaluate(action, CONTEXT)
    assert decision.allowed, decision


def test_false_positive_rate_is_zero_and_recall_is_total(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    false_positives = [a for a in EVERYDAY if not POLICY.evaluate(a, CONTEXT).allowed]
    missed = [a for a in DESTRUCTIVE if POLICY.evaluate(a, CONTEXT).allowed]
    with capsys.disabled():
        print(f"\nguardrail corpus: {len(EVERYDAY)} everyday, false-positive rate "
              f"{len(false_positives) / len(EVERYDAY):.3f}; {len(DESTRUCTIVE)} destructive, "
              f"missed {len(missed)}")
    assert false_positives == []
    assert missed == []
