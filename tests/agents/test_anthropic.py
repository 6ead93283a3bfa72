"""The Anthropic Messages API adapter against a local server that speaks the protocol and
enforces its rules (alternating turns, every `tool_use` answered by a `tool_result` in the
very next user turn, the version and key headers), with its error and rate-limit answers."""

from __future__ import annotations

import http.server
import itertools
import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from harness.agents import AnthropicAgent, Briefing, drive
from harness.agents.endpoint import EndpointError
from harness.episode import Episode
from harness.eval.agents import agent_factory
from tests.loopback import serving

KEY = "sk-ant-test-key"


def _invalid(body: dict[str, Any]) -> str | None:
    """What the real API would reject in a request (400 invalid_request_error)."""
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return f"{field}: Field required"
    messages = body["messages"]
    if not messages or messages[0]["role"] != "user":
        return "messages: first message must use the \"user\" role"
    for before, after in itertools.pairwise(messages):
        if before["role"] == after["role"]:
            return "messages: roles must alternate between \"user\" and \"assistant\""
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or isinstance(message["content"], str):
            continue
        uses = [b["id"] for b in message["content"] if b["type"] == "tool_use"]
        following = messages[index + 1]["content"] if index + 1 < len(messages) else None
        answered = [b["tool_use_id"] for b in following or [] if isinstance(b, dict)
                    and b.get("type") == "tool_result"]
        if uses and index + 1 < len(messages) and sorted(uses) != sorted(answered):
            return (f"messages.{index + 1}: `tool_use` ids were found without `tool_result` "
                    f"blocks immediately after: {sorted(set(uses) - set(answered))}")
    for tool in body.get("tools", []):
        if set(tool) - {"name", "description", "input_schema"} or "input_schema" not in tool:
            return f"tools: unexpected tool shape {sorted(tool)}"
    return None


class _Messages(http.server.BaseHTTPRequestHandler):
    """POST /v1/messages: each request takes the next scripted answer: a message (a list
    of content blocks and a stop reason) or an error (status, type, retry-after)."""

    requests: ClassVar[list[dict[str, Any]]] = []
    answers: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path != "/v1/messages":
            return self._error(404, "not_found_error", "Not found")
        if self.headers.get("x-api-key") != KEY:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if self.headers.get("anthropic-version") != "2023-06-01":
            return self._error(400, "invalid_request_error", "anthropic-version: header required")
        problem = _invalid(body)
        if problem:
            return self._error(400, "invalid_request_error", problem)
        answer = self.answers.pop(0)
        if "error" in answer:
            return self._error(answer["status"], answer["error"], "scripted",
                               answer.get("retry_after"))
        self._send(200, {"id": f"msg_{len(self.requests)}", "type": "message",
                         "role": "assistant", "model": body["model"],
                         "content": answer["content"], "stop_reason": answer["stop_reason"],
                         "stop_sequence": None,
                         "usage": {"input_tokens": 10, "output_tokens": 5}})

    def _error(self, status: int, kind: str, message: str, retry_after: str | None = None
               ) -> None:
        self._send(status, {"type": "error", "error": {"type": kind, "message": message}},
                   {"retry-after": retry_after} if retry_after else {})

    def _send(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None
              ) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def api() -> Iterator[str]:
    _Messages.requests.clear()
    _Messages.answers.clear()
    with serving(_Messages) as address:
        yield f"http://{address}"


def _use(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@pytest.mark.docker
def test_tool_use_blocks_drive_the_episode_and_results_return_in_one_turn(
        api: str, episode: Episode) -> None:
    _Messages.answers[:] = [
        {"content": [_text("Looking."), _use("toolu_1", "shell_exec", {"command": "ls"}),
                     _use("toolu_2", "read_file", {"path": "README.md"})],
         "stop_reason": "tool_use"},
        {"error": "rate_limit_error", "status": 429, "retry_after": "0"},
        {"error": "overloaded_error", "status": 529},
        {"content": [_use("toolu_3", "shell_exec", {"command": "rm -rf /"})],
         "stop_reason": "tool_use"},
        {"content": [_text("Done: the README describes the shop.")], "stop_reason": "end_turn"},
    ]
    agent = AnthropicAgent("claude-test", base_url=api, api_key=KEY, backoff_s=0.01)
    results = drive(episode, agent, "Summarise the README")
    assert [(r.tool, r.status) for r in results] == [
        ("shell_exec", "ok"), ("read_file", "ok"), ("shell_exec", "refused")]
    assert agent.stop_reason == "end_turn"
    bodies = [r["body"] for r in _Messages.requests]
    assert len(bodies) == 5, "two retried errors, three answers"
    first = bodies[0]
    assert first["model"] == "claude-test" and first["max_tokens"] > 0
    assert "APP_MODE=eval" in first["system"]
    assert first["messages"] == [{"role": "user", "content": "Summarise the README"}]
    assert {t["name"] for t in first["tools"]} >= {"shell_exec", "db_mutate"}
    assert first["tools"][0]["input_schema"]["type"] == "object"
    second = bodies[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    results_turn = second[2]["content"]
    assert [b["tool_use_id"] for b in results_turn] == ["toolu_1", "toolu_2"]
    assert "shop" in results_turn[1]["content"] and "is_error" not in results_turn[1]
    refused = bodies[4]["messages"][-1]["content"][0]
    assert refused["tool_use_id"] == "toolu_3" and refused["is_error"] is True
    assert "REFUSED" in refused["content"]


def test_a_request_the_api_rejects_fails_at_once_with_its_message(api: str) -> None:
    agent = AnthropicAgent("claude-test", base_url=api, api_key="wrong", backoff_s=0.01)
    agent.start(Briefing("task", "state", []))
    with pytest.raises(EndpointError, match="401 authentication_error: invalid x-api-key"):
        agent.next(None)
    assert len(_Messages.requests) == 1, "an authentication error is never retried"


def test_rate_limits_are_retried_up_to_a_limit(api: str) -> None:
    _Messages.answers[:] = [{"error": "rate_limit_error", "status": 429, "retry_after": "0"}] * 3
    agent = AnthropicAgent("claude-test", base_url=api, api_key=KEY, retries=2, backoff_s=0.01)
    agent.start(Briefing("task", "state", []))
    with pytest.raises(EndpointError, match="429 rate_limit_error") as caught:
        agent.next(None)
    assert caught.value.status == 429 and caught.value.kind == "rate_limit_error"
    assert len(_Messages.requests) == 3


def test_a_paused_turn_is_resumed_and_a_cut_off_answer_ends_the_run(api: str) -> None:
    _Messages.answers[:] = [
        {"content": [_text("Searching...")], "stop_reason": "pause_turn"},
        {"content": [_text("still"), _use("toolu_1", "shell_exec", {"command": "l"})],
         "stop_reason": "max_tokens"},
    ]
    agent = AnthropicAgent("claude-test", base_url=api, api_key=KEY)
    agent.start(Briefing("task", "state", []))
    assert agent.next(None) is None, "a tool call cut off at max_tokens is not run"
    assert agent.stop_reason == "max_tokens"
    assert len(_Messages.requests) == 2


def test_the_eval_agent_spec_names_the_provider(monkeypatch: pytest.MonkeyPatch, api: str) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    agent = agent_factory(f"anthropic:claude-test@{api}")(None)  # type: ignore[arg-type]
    assert isinstance(agent, AnthropicAgent)
    assert agent.url == f"{api}/v1/messages" and agent.api_key == KEY
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api)
    assert agent_factory("anthropic:claude-test")(None).url == f"{api}/v1/messages"  # type: ignore[arg-type,attr-defined]
