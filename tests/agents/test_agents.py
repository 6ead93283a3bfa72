"""Agent adapters driving real episodes: scripted, a JSON-lines program, and an
OpenAI-compatible endpoint (a local server speaking the real protocol)."""

from __future__ import annotations

import http.server
import json
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.agents import Briefing, OpenAIAgent, ScriptedAgent, SubprocessAgent, drive
from harness.episode import ActionResult, Episode

pytestmark = pytest.mark.docker


def test_a_scripted_list_is_played_in_order(episode: Episode) -> None:
    agent = ScriptedAgent([{"tool": "shell_exec", "parameters": {"command": "echo $APP_MODE"}},
                           {"tool": "shell_exec", "parameters": {"command": "rm -rf /"}}])
    results = drive(episode, agent, "say the mode")
    assert [r.status for r in results] == ["ok", "refused"]
    assert results[0].output["stdout"] == "eval\n"


def test_a_scripted_callable_reacts_to_refusals(episode: Episode) -> None:
    seen: list[str] = []

    def policy(briefing: Briefing, last: ActionResult | None) -> dict[str, Any] | None:
        seen.append(briefing.task)
        if last is None:
            return {"tool": "shell_exec", "parameters": {"command": "rm -rf /"}}
        if last.refusal is not None:
            return {"tool": "shell_exec", "parameters": {"command": "rm -rf build/"}}
        return None

    results = drive(episode, ScriptedAgent(policy), "clean up")
    assert [r.status for r in results] == ["refused", "ok"]
    assert set(seen) == {"clean up"}


AGENT_PROGRAM = textwrap.dedent("""
    import json, sys
    start = json.loads(sys.stdin.readline())
    assert start["type"] == "start" and start["tools"] and "APP_MODE=eval" in start["state"]
    print(json.dumps({"tool": "shell_exec", "parameters": {"command": "echo " + start["task"]}}),
          flush=True)
    reply = json.loads(sys.stdin.readline())
    assert reply["result"]["status"] == "ok"
    print("this is not json", flush=True)
    reply = json.loads(sys.stdin.readline())
    assert "REFUSED" in reply["observation"]
    print(json.dumps({"tool": "write_file",
                      "parameters": {"path": "out.txt", "content": reply["result"]["tool"]}}),
          flush=True)
    sys.stdin.readline()
    print(json.dumps({"done": True}), flush=True)
""")


def test_a_json_lines_program_is_an_agent(episode: Episode, tmp_path: Path) -> None:
    program = tmp_path / "agent.py"
    program.write_text(AGENT_PROGRAM)
    results = drive(episode, SubprocessAgent([sys.executable, str(program)]), "hello")
    assert [r.status for r in results] == ["ok", "refused", "ok"]
    assert results[0].output["stdout"] == "hello\n"
    assert results[1].refusal is not None and results[1].refusal.rule == "bad-action"
    assert episode.sandbox.read_file("/workspace/out.txt") == b"?"


class _FakeModel(http.server.BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions with scripted assistant messages."""

    requests: ClassVar[list[dict[str, Any]]] = []
    answers: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeModel.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                    "body": body})
        message = _FakeModel.answers.pop(0)
        reply = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "message": message,
                                         "finish_reason": "tool_calls" if message.get("tool_calls")
                                         else "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def test_an_openai_compatible_endpoint_drives_the_episode(episode: Episode) -> None:
    _FakeModel.requests.clear()
    _FakeModel.answers[:] = [
        {"role": "assistant", "content": None, "tool_calls": [
            _call("call_1", "shell_exec", {"command": "ls"}),
            _call("call_2", "read_file", {"path": "README.md"})]},
        {"role": "assistant", "content": None, "tool_calls": [
            _call("call_3", "shell_exec", {"command": "rm -rf /"})]},
        {"role": "assistant", "content": "Done: the README describes the shop."},
    ]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        agent = OpenAIAgent(f"http://127.0.0.1:{server.server_address[1]}/v1", "local-model",
                            api_key="sk-test")
        results = drive(episode, agent, "Summarise the README")
    finally:
        server.shutdown()
        server.server_close()
    assert [(r.tool, r.status) for r in results] == [
        ("shell_exec", "ok"), ("read_file", "ok"), ("shell_exec", "refused")]
    first, second, third = (r["body"] for r in _FakeModel.requests)
    assert _FakeModel.requests[0]["path"] == "/v1/chat/completions"
    assert _FakeModel.requests[0]["auth"] == "Bearer sk-test"
    assert first["model"] == "local-model"
    assert {t["function"]["name"] for t in first["tools"]} >= {"shell_exec", "db_mutate"}
    assert first["messages"][0]["role"] == "system" and "APP_MODE=eval" in \
        first["messages"][0]["content"]
    assert first["messages"][1] == {"role": "user", "content": "Summarise the README"}
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_1", "call_2"]
    assert "shop" in tool_messages[1]["content"]
    assert "REFUSED" in third["messages"][-1]["content"]
    assert third["messages"][-1]["tool_call_id"] == "call_3"
