"""One reader of the trace format: what a Tracer writes reads back as typed records, the
timeline shows every action with its steps, and what is no trace is refused plainly."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.redaction import Redactor
from harness.trace import Tracer, read
from harness.trace.render import timeline


def test_a_written_trace_reads_back_as_actions_with_their_steps(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tracer = Tracer(path, redactor=Redactor(["hunter2-secret"]), root="episode")
    tracer.event("episode.start", config={"x": 1}, sandbox="hx-1")
    for index, (tool, refusal) in enumerate([("shell_exec", None), ("db_mutate", {
            "kind": "guardrail", "rule": "sql.truncate", "reason": "TRUNCATE hunter2-secret"})]):
        with tracer.span("action", index=index) as span:
            span.set(tool=tool, parameters={"command": "ls"}, status="refused" if refusal
                     else "ok", refusal=refusal, counters={"actions": index + 1},
                     result={"stdout_sha256": "ab"})
            with tracer.span("guardrail", span) as check:
                check.set(decision="block" if refusal else "allow",
                          rule_id=refusal and refusal["rule"])
    tracer.event("episode.end", counters={"actions": 2})
    tracer.close()

    trace = read(path)
    assert trace.trace_id == tracer.trace_id and trace.start.attributes["config"] == {"x": 1}
    assert [r.name for r in trace.roots] == ["episode"], "one root: the episode"
    assert [r.name for r in trace.top] == ["episode.start", "action", "action", "episode.end"]
    first, second = trace.actions
    assert (first.index, first.tool, first.status, first.refusal) == (0, "shell_exec", "ok", None)
    assert first.parameters == {"command": "ls"} and first.result == {"stdout_sha256": "ab"}
    assert second.refusal == {"kind": "guardrail", "rule": "sql.truncate",
                              "reason": "TRUNCATE ***"}, "written redacted"
    assert second.counters == {"actions": 2} and [s.name for s in second.steps] == ["guardrail"]
    rows = timeline(trace)
    assert [r.step for r in rows] == ["episode.start", "#0 shell_exec", "  guardrail",
                                      "#1 db_mutate", "  guardrail", "episode.end"]
    assert rows[3].refused and rows[3].details == "refused sql.truncate: TRUNCATE ***"
    assert rows[4].details == "block sql.truncate" and rows[2].offset_ms is None
    assert 0 <= rows[0].offset_ms < 1000, "offsets count from the episode's start"


@pytest.mark.parametrize(("content", "message"), [
    ("", "holds no spans"), ("not json\n", "is not a trace file"),
    ('{"name": "x"}\n', "a trace line lacks"),
])
def test_what_is_no_trace_is_refused_saying_why(tmp_path: Path, content: str,
                                                message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(HarnessError, match=message):
        read(path)


def test_a_trace_without_an_episode_start_says_so(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tracer = Tracer(path)
    tracer.event("other")
    tracer.close()
    with pytest.raises(HarnessError, match=r"no episode\.start record"):
        _ = read(path).start
