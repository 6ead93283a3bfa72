"""The red-team corpus (tests/guardrails/corpus/redteam*.jsonl): inputs written to get past
the guard, each with the decision a security reviewer wants, and everyday commands that
must pass. Every destructive case must be stopped (blocked or held for approval) except
the few listed here with the reason they are not; no everyday case may be stopped."""

from __future__ import annotations

import pytest

from tests.guardrails.corpora import CONTEXT, POLICY, action, cases, text

KNOWN_MISSES = {
    # Installing a local package runs its build code; judging every pip install of a path
    # would stop `pip install -e .`, the everyday case.
    "python3 -m pip install --no-deps --no-build-isolation /tmp/pkg",
    # `id IS NOT NULL` selects every row only when id is a primary key, which the guard
    # cannot know from the statement; `deleted_at IS NOT NULL` is an everyday filter.
    "UPDATE orders SET total = 0 WHERE id IS NOT NULL",
    # A startup file the line did not write is a file of the workspace, as `bash s.sh` is.
    "ENV=/tmp/e sh -i < /dev/null",
}


REDTEAM = cases("redteam.jsonl")
EVERYDAY = cases("redteam_everyday.jsonl")


def test_the_corpus_covers_every_family() -> None:
    assert len(REDTEAM) >= 400 and len(EVERYDAY) >= 150
    assert {"shell-obfuscation", "shell-getopt", "shell-wrappers", "shell-interpreters",
            "shell-state", "shell-paths", "git", "sql-lexer", "sql-writes"} <= {
        str(c["family"]) for c in REDTEAM}


@pytest.mark.parametrize("case", REDTEAM, ids=lambda c: text(c)[:70])
def test_a_red_team_input_is_stopped(case: dict[str, object]) -> None:
    decision = POLICY.evaluate(action(case), CONTEXT)
    if text(case) in KNOWN_MISSES:
        assert decision.allowed, "a known miss is now stopped: take it off the list"
        return
    assert not decision.allowed, (case["why"], decision.reason)
    assert decision.reason
    assert decision.rule_id == case["rule"], (
        "stopped by another rule than the one that reads this input; a rule may be broken "
        "and hidden by an overlapping one", case["why"], decision.reason)


@pytest.mark.parametrize("case", EVERYDAY, ids=lambda c: text(c)[:70])
def test_an_everyday_command_passes(case: dict[str, object]) -> None:
    decision = POLICY.evaluate(action(case), CONTEXT)
    assert decision.allowed, (case["why"], decision.rule_id, decision.reason)
