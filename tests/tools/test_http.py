"""The http_request tool against real loopback servers: an allow-listed one that redirects in
every way a server can, and one off the list that records whatever reaches it. No
credential may reach the second, and no encoding of it may come back to the agent."""

from __future__ import annotations

import base64
import http.server
import json
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from harness.config import parse_config
from harness.episode import Episode
from harness.errors import ConfigError
from harness.hosts import AllowedHost
from harness.tools.http import RequestRefused, fetch
from harness.trace.reader import read_trace
from tests.leaks import leaks

SECRET = "Bearer tok-Zq8w3Lr1-edge-credential-5521"
TOKEN = SECRET.removeprefix("Bearer ")


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request; replies 200 with what it saw."""

    seen: ClassVar[list[dict[str, Any]]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        record = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                  "body": body}
        self.seen.append(record)
        data = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def do_HEAD(self) -> None:
        self._answer()

    def log_message(self, *args: Any) -> None:
        pass


class _Redirector(_Recorder):
    """/go?to=URL&code=N answers N with Location URL (verbatim); /loop redirects to itself;
    /leak answers with the Authorization header it got, encoded every way a server might;
    anything else is recorded and answered."""

    def _answer(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/go":
            self.seen.append({"method": self.command, "path": self.path,
                              "headers": dict(self.headers)})
            self.send_response(int(query.get("code", "302")))
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/leak":
            value = self.headers.get("Authorization", "")
            raw = value.encode()
            bare = value.removeprefix("Bearer ")
            leaks = {
                "b64": base64.b64encode(raw).decode(),
                "b64_nopad": base64.b64encode(raw).decode().rstrip("="),
                "b64_reversed": base64.b64encode(raw).decode()[::-1],
                "urlsafe": base64.urlsafe_b64encode(raw).decode(),
                "embedded": [base64.b64encode((p + f"auth={bare};x").encode()).decode()
                             for p in ("", "a", "ab")],
                "url": urllib.parse.quote(value, safe=""),
                "url_lower_escapes": re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(),
                                            urllib.parse.quote(value, safe="")),
                "hex": raw.hex(), "HEX": raw.hex().upper(),
                "bare": bare, "reversed": value[::-1], "bare_b64": base64.b64encode(
                    bare.encode()).decode(),
            }
            data = json.dumps(leaks).encode()
            self.send_response(200)
            self.send_header("X-Echo", base64.b64encode(raw).decode())
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            super()._answer()


def _serve(handler: type[_Recorder]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    kind = type(handler.__name__, (handler,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), kind)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture()
def allowed() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from _serve(_Redirector)


@pytest.fixture()
def second_allowed() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from _serve(_Redirector)


@pytest.fixture()
def outsider() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    yield from _serve(_Recorder)


def _go(to: str, code: int = 302) -> str:
    return "/go?" + urllib.parse.urlencode({"to": to, "code": code})


def _fetch(url: str, allow: list[str], method: str = "GET", **kwargs: Any) -> Any:
    return fetch(method, url, allow=[AllowedHost.parse(a) for a in allow],
                 headers=kwargs.pop("headers", {}), edge_headers={"Authorization": SECRET},
                 **kwargs)


def _leaked(seen: list[dict[str, Any]]) -> bool:
    return any(TOKEN in json.dumps(record) for record in seen)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "HEAD"])
def test_a_redirect_off_the_list_is_refused_before_anything_is_sent(
        allowed: Any, outsider: Any, code: int, method: str) -> None:
    host, _ = allowed
    other, other_seen = outsider
    with pytest.raises(RequestRefused) as refused:
        _fetch(f"http://{host}{_go(f'http://{other}/collect', code)}", [host], method,
               body=b"payload" if method in ("POST", "PUT") else None)
    assert refused.value.rule == "http.host-not-allowed"
    assert "hop 2" in str(refused.value) and other in str(refused.value)
    assert other_seen == []


@pytest.mark.parametrize("location", [
    "//{other}/protocol-relative",
    "http://{other}/absolute",
    "HTTP://{other}/upper-case-scheme",
    "https://{other}/scheme-change",
    "http://{host_only}:{other_port}/port-change",
    "http://{host}@{other}/userinfo-trick",
    "http://{other}./trailing-dot",
    " http://{other}/leading-space",
    "http://[::ffff:127.0.0.1]:{other_port}/mapped-v6",
    "ftp://{other}/other-scheme",
    "file:///etc/passwd",
])
def test_no_redirect_variant_reaches_the_outsider(allowed: Any, outsider: Any,
                                                  location: str) -> None:
    host, _ = allowed
    other, other_seen = outsider
    target = location.format(other=other, host=host, host_only=host.split(":")[0],
                             other_port=other.split(":")[1])
    with pytest.raises(RequestRefused) as refused:
        _fetch(f"http://{host}{_go(target)}", [host])
    assert "hop 2" in str(refused.value)
    assert other_seen == []


def test_a_chain_through_allowed_hosts_is_refused_at_the_hop_that_leaves_the_list(
        allowed: Any, second_allowed: Any, outsider: Any) -> None:
    host, seen = allowed
    second, second_seen = second_allowed
    other, other_seen = outsider
    last = f"http://{second}{_go(f'http://{other}/end', 307)}"
    middle = f"http://{host}{_go(last, 301)}"
    with pytest.raises(RequestRefused) as refused:
        _fetch(f"http://{host}{_go(middle, 308)}", [host, second])
    assert "hop 4" in str(refused.value) and other in str(refused.value)
    assert [h.status for h in refused.value.hops] == [308, 301, 307]
    assert other_seen == []
    assert not _leaked(second_seen), "another allowed origin never gets the edge headers"
    assert len(seen) == 2 and all(TOKEN in json.dumps(r) for r in seen)


def test_a_redirect_to_another_allowed_host_drops_every_credential(
        allowed: Any, second_allowed: Any) -> None:
    host, _ = allowed
    second, second_seen = second_allowed
    reply = _fetch(f"http://{host}{_go(f'http://{second}/landing', 307)}", [host, second],
                   "POST", body=b"data", headers={"Cookie": "session=agent-own",
                                                   "Authorization": "agent tries its own",
                                                   "X-Trace": "kept"})
    assert reply.status == 200 and reply.url == f"http://{second}/landing"
    landed = second_seen[-1]
    assert landed["method"] == "POST" and landed["body"] == "data", "307 keeps the method"
    names = {k.lower() for k in landed["headers"]}
    assert "authorization" not in names and "cookie" not in names
    assert landed["headers"]["X-Trace"] == "kept"


def test_a_relative_redirect_on_the_same_origin_keeps_the_edge_header(allowed: Any) -> None:
    host, seen = allowed
    reply = _fetch(f"http://{host}{_go('/final?x=1', 303)}", [host], "POST", body=b"b")
    assert reply.status == 200 and [h.status for h in reply.hops] == [303, 200]
    assert seen[-1]["method"] == "GET" and seen[-1]["path"] == "/final?x=1"
    assert seen[-1]["headers"]["Authorization"] == SECRET


def test_the_port_of_an_entry_is_checked_on_every_hop(allowed: Any, outsider: Any) -> None:
    host, _ = allowed
    other, other_seen = outsider
    with pytest.raises(RequestRefused):
        _fetch(f"http://{host}{_go(f'http://{other}/x')}", [host, "https://127.0.0.1"])
    assert other_seen == []
    reply = _fetch(f"http://{host}{_go(f'http://{other}/x')}", [host, "127.0.0.1"])
    assert reply.status == 200 and not _leaked(other_seen), \
        "a bare host allows any port, but a new origin never gets the credential"


def test_redirects_are_capped(allowed: Any) -> None:
    host, _ = allowed
    with pytest.raises(RequestRefused) as refused:
        _fetch(f"http://{host}/loop", [host], max_redirects=3)
    assert refused.value.rule == "http.too-many-redirects"
    assert len(refused.value.hops) == 4


def test_proxies_from_the_environment_do_not_apply(allowed: Any, outsider: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    host, seen = allowed
    other, other_seen = outsider
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://{other}")
    monkeypatch.setenv("NO_PROXY", "")
    reply = _fetch(f"http://{host}/direct", [host])
    assert reply.status == 200 and seen[-1]["path"] == "/direct"
    assert other_seen == []


@pytest.mark.parametrize(("headers", "edge"), [
    ({"X-Note": "a\r\nInjected: 1"}, SECRET), ({"X-Note": "caf\u00e9 \u2713"}, SECRET),
    ({"Bad Name": "x"}, SECRET), ({}, SECRET + "\r\nX-Evil: 1")])
def test_a_header_http_cannot_carry_is_refused_naming_it_but_not_its_value(
        allowed: Any, headers: dict[str, str], edge: str) -> None:
    host, seen = allowed
    with pytest.raises(RequestRefused) as refused:
        fetch("GET", f"http://{host}/x", allow=[AllowedHost.parse(host)], headers=headers,
              edge_headers={"Authorization": edge})
    assert refused.value.rule == "http.bad-header" and seen == []
    assert TOKEN not in str(refused.value)


def test_allow_list_entries_are_validated_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="allow_hosts"):
        parse_config("tools:\n  http:\n    allow_hosts: ['http://a/path']\n")
    with pytest.raises(ConfigError, match="only http and https"):
        parse_config("tools:\n  http:\n    allow_hosts: ['ftp://a']\n")
    assert AllowedHost.parse("HTTPS://Api.Example.com") == AllowedHost("api.example.com", 443,
                                                                        "https")


# ----------------------------------------------------------- through an episode


@pytest.mark.docker
def test_an_episode_never_shows_or_records_the_secret_in_any_form(
        shop_repo: Path, tmp_path: Path, allowed: Any, outsider: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    host, seen = allowed
    other, other_seen = outsider
    cfg = parse_config(f"""
state_injection:
  sources:
    - {{type: auth_header, key: Authorization, value_env: EDGE_TOKEN}}
    - {{type: env_var, prefix: "DEPLOY_", secret: true}}
    - {{type: env_var, prefix: "APP_", values: {{APP_MODE: demo}}}}
observability:
  logging: {{level: debug, include_tool_io: true}}
tools:
  http: {{allow_hosts: ['{host}']}}
target:
  repo: {shop_repo}
""")
    deploy_key = "dk-9f8e7d6c5b4a-deploy-key"
    actions = [
        {"tool": "http_request", "parameters": {"method": "GET", "url": f"http://{host}/leak"}},
        {"tool": "http_request", "parameters": {
            "method": "POST", "url": f"http://{host}{_go(f'http://{other}/steal', 307)}",
            "body": "x"}},
        {"tool": "shell_exec", "parameters": {
            "command": "echo $DEPLOY_KEY; printf %s $DEPLOY_KEY | base64; printf %s "
                       "$DEPLOY_KEY | od -An -tx1 | tr -d ' \\n'; echo; echo $DEPLOY_KEY | "
                       "rev; echo $APP_MODE"}},
        {"tool": "shell_exec", "parameters": {"command": f"echo {deploy_key[::-1]} | rev"}},
    ]
    trace = tmp_path / "trace.jsonl"
    host_env = {"EDGE_TOKEN": SECRET, "DEPLOY_KEY": deploy_key}
    with caplog.at_level("DEBUG", logger="harness"), \
            Episode(cfg, trace_path=trace, host_env=host_env) as episode:
        assert episode.state.secret_env == ["DEPLOY_KEY"]
        assert deploy_key not in episode.state.prompt_text()
        assert "DEPLOY_KEY" in episode.state.prompt_text()
        assert episode.state.env == {"APP_MODE": "demo"}
        results = [episode.act(action) for action in actions]
    assert seen[0]["headers"]["Authorization"] == SECRET, "the edge added it"
    assert results[0].status == "ok" and "***" in results[0].output["body"]
    assert results[1].status == "refused" and results[1].refusal.kind == "http"
    assert other in results[1].refusal.reason and other_seen == []
    assert results[2].output["stdout"].splitlines()[-1] == "demo"
    recorded = [json.dumps([r.to_dict() for r in results]), trace.read_text(), caplog.text,
                *(r.observation() for r in results)]
    assert leaks([SECRET, deploy_key], {str(i): t for i, t in enumerate(recorded)}) == []
    assert next(s["name"] for s in read_trace(trace)) == "episode.start"


@pytest.mark.docker
def test_the_json_output_of_a_run_carries_no_form_of_the_secret(
        shop_repo: Path, tmp_path: Path, allowed: Any) -> None:
    host, _ = allowed
    config_file = tmp_path / "harness.yaml"
    config_file.write_text(f"""
state_injection:
  sources:
    - {{type: auth_header, key: Authorization, value_env: EDGE_TOKEN}}
tools:
  http: {{allow_hosts: ['{host}']}}
target:
  repo: {shop_repo}
""")
    actions = tmp_path / "actions.jsonl"
    actions.write_text(json.dumps({"tool": "http_request", "parameters": {
        "method": "GET", "url": f"http://{host}/leak"}}) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--config", str(config_file),
         "--actions", str(actions), "--json", "--trace", str(tmp_path / "t.jsonl")],
        capture_output=True, text=True, env={**_environ(), "EDGE_TOKEN": SECRET}, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["actions"][0]["output"]["status"] == 200
    assert leaks([SECRET], {"stdout": done.stdout, "stderr": done.stderr,
                            "trace": (tmp_path / "t.jsonl").read_text()}) == []


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
