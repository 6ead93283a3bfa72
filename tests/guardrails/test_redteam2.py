"""The second red team's probes (corpus/redteam2*.jsonl) and cases of the same classes
(corpus/classes*.jsonl: written before the fixes, and a second batch, `"batch": "after"`,
written after them and measured before any tuning on it): unknown wrappers,
whole-workspace deletes by other spellings, application-level destructive commands,
every-row SQL by resolved names, well-known variables, and the pre-tool hook on a real
host (cases with a `host`: judged through `hook.answer` as Claude Code sends them, with
that host's HOME and CLAUDE_PROJECT_DIR). Every destructive case is stopped by the rule
that reads it, every everyday case passes but the false positives listed here."""

from __future__ import annotations

import json

import pytest

from harness.guardrails import hook
from harness.tools import ToolAction
from tests.guardrails.corpora import CONTEXT, POLICY, cases, text


def _judge(case: dict[str, object]) -> tuple[str, str | None, str]:
    """(decision, rule, reason) for a case: through the hook, as Claude Code sends a Bash
    call, for a case on a host; through the policy otherwise."""
    host = case.get("host")
    if isinstance(host, dict):
        event = {"session_id": "s1", "transcript_path": "/tmp/t.jsonl", "cwd": host["cwd"],
                 "permission_mode": "default", "hook_event_name": "PreToolUse",
                 "tool_name": "Bash", "tool_use_id": "toolu_01",
                 "tool_input": {"command": text(case), "description": "probe",
                                "timeout": 120000}}
        environ = {"HOME": host["home"], **({"CLAUDE_PROJECT_DIR": host["project"]}
                                            if "project" in host else {})}
        reply = hook.answer(POLICY, json.dumps(event), environ)
        if reply is None:
            return "allow", None, ""
        output = reply["hookSpecificOutput"]
        reason = output["permissionDecisionReason"]
        rule = reason.partition("(")[2].partition(")")[0]
        return {"deny": "block", "ask": "require_approval"}[output["permissionDecision"]], \
            rule, reason
    decision = POLICY.evaluate(ToolAction.from_dict(
        {"tool": case["tool"], "parameters": case["parameters"]}), CONTEXT)
    return decision.verdict.label, decision.rule_id, decision.reason


KNOWN_FALSE_POSITIVES = {
    # XDG_RUNTIME_DIR's conventional value (/run/user/UID) lies in a system folder and the
    # variable may be unset: the path is only known at run time, so the delete asks.
    'rm -rf "$XDG_RUNTIME_DIR/myapp.sock"',
}

DESTRUCTIVE = cases("redteam2.jsonl", "classes.jsonl")
EVERYDAY = cases("redteam2_everyday.jsonl", "classes_everyday.jsonl")


def test_the_corpus_covers_every_class() -> None:
    assert len(DESTRUCTIVE) >= 250 and len(EVERYDAY) >= 120
    families = {str(c["family"]) for c in DESTRUCTIVE} & {str(c["family"]) for c in EVERYDAY}
    assert {"host", "wrappers", "wipe-spellings", "app-destructive", "sql",
            "variables"} <= families


@pytest.mark.parametrize("case", DESTRUCTIVE, ids=lambda c: text(c)[:70])
def test_a_destructive_probe_is_stopped_by_the_rule_that_reads_it(case: dict[str, object]
                                                                  ) -> None:
    decision, rule, reason = _judge(case)
    assert decision != "allow", case["why"]
    assert rule == case["rule"], (case["why"], reason)


@pytest.mark.parametrize("case", EVERYDAY, ids=lambda c: text(c)[:70])
def test_an_everyday_command_of_the_same_classes_passes(case: dict[str, object]) -> None:
    decision, rule, reason = _judge(case)
    if text(case) in KNOWN_FALSE_POSITIVES:
        assert decision == "require_approval", "a known false positive passes: unlist it"
        return
    assert decision == "allow", (case["why"], rule, reason)


def test_a_host_reason_names_the_hosts_own_paths() -> None:
    decision, _, reason = _judge({"tool": "shell_exec", "parameters": {
        "command": "rm -rf ~/Documents"}, "host": {"cwd": "/home/alice/proj",
                                                   "home": "/home/alice"}})
    assert decision == "block"
    assert "/home/alice/Documents" in reason and "/home/agent" not in reason
