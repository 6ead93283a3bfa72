"""OpenTelemetry export seen by a real OTLP/HTTP receiver: one root span per episode with
every tool span under it, spans sent while the episode still runs, and tool arguments and
results as GenAI attributes (redacted) only when asked for."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from harness.config import parse_config
from harness.episode import Episode

pytestmark = [pytest.mark.docker]
SECRET = "s3cr3t-deploy-key-4711"


class _Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP endpoint: decodes each ExportTraceServiceRequest as it arrives."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def received(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        assert self.path == "/v1/traces"
        assert self.headers["Content-Type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.spans += [s for rs in request.resource_spans
                                  for ss in rs.scope_spans for s in ss.spans]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _config(repo: Path, endpoint: str, *, tool_io: bool) -> Any:
    return parse_config(f"""
state_injection:
  sources:
    - {{type: env_var, prefix: DEPLOY_, secret: true}}
observability:
  tracing: {{otlp_endpoint: '{endpoint}'}}
  logging: {{include_tool_io: {str(tool_io).lower()}}}
target:
  repo: {repo}
""")


def _attributes(span: Span) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


def test_each_episode_is_one_root_span_with_its_tool_calls_under_it_sent_as_they_end(
        shop_repo: Path, receiver: _Receiver, tmp_path: Path) -> None:
    config = _config(shop_repo, receiver.endpoint, tool_io=True)
    traces = []
    for number in range(2):
        with Episode(config, trace_path=tmp_path / f"{number}.jsonl",
                     host_env={"DEPLOY_KEY": SECRET}) as episode:
            episode.act({"tool": "shell_exec", "parameters": {
                "command": "echo hello; echo $DEPLOY_KEY; echo $TRACEPARENT"}})
            deadline = time.monotonic() + 10
            while not any(s.name == "execute_tool shell_exec" and
                          s.trace_id.hex() == episode.trace_id for s in receiver.received()):
                assert time.monotonic() < deadline, "the tool span was not sent while the " \
                                                    "episode ran"
                time.sleep(0.05)
            episode.act({"tool": "shell_exec", "parameters": {"command": "rm -rf /"}})
        traces.append(episode.trace_id)
    spans = receiver.received()
    assert {s.trace_id.hex() for s in spans} == set(traces)
    for trace_id in traces:
        mine = [s for s in spans if s.trace_id.hex() == trace_id]
        roots = [s for s in mine if not s.parent_span_id]
        assert [r.name for r in roots] == ["invoke_agent harness"], "one root per episode"
        root = roots[0].span_id
        tools = [s for s in mine if s.name == "execute_tool shell_exec"]
        assert len(tools) == 2 and {t.parent_span_id for t in tools} == {root}
        by_id = {s.span_id: s for s in mine}
        for span in mine:  # every span descends from the root
            while span.parent_span_id:
                span = by_id[span.parent_span_id]
            assert span.span_id == root
        ran, refused = sorted(tools, key=lambda s: s.start_time_unix_nano)
        arguments = _attributes(ran)["gen_ai.tool.call.arguments"]
        result = _attributes(ran)["gen_ai.tool.call.result"]
        assert "echo hello" in arguments and "hello" in result
        assert f"00-{trace_id}-{root.hex()}-01" in result, "TRACEPARENT names the episode span"
        assert SECRET not in result and "***" in result, "results are redacted"
        assert "rm -rf /" in _attributes(refused)["gen_ai.tool.call.arguments"]
        assert "refusal" in _attributes(refused)["gen_ai.tool.call.result"]
        assert refused.status.code == 2
    assert not any(SECRET in str(s) for s in spans)


def test_tool_arguments_and_results_are_not_sent_unless_asked_for(
        shop_repo: Path, receiver: _Receiver, tmp_path: Path) -> None:
    config = _config(shop_repo, receiver.endpoint, tool_io=False)
    with Episode(config, trace_path=tmp_path / "t.jsonl") as episode:
        episode.act({"tool": "shell_exec", "parameters": {"command": "echo hello"}})
    tool = next(s for s in receiver.received() if s.name == "execute_tool shell_exec")
    assert "gen_ai.tool.call.arguments" not in _attributes(tool)
    assert "gen_ai.tool.call.result" not in _attributes(tool)
    assert _attributes(tool)["gen_ai.tool.name"] == "shell_exec"
    assert "echo hello" not in str(tool), "nor under the harness's own attributes"
