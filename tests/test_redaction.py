"""No secret the harness knows of (auth header values, secret env_var values, the sandbox
database's own password) reaches anything it shows or writes: observations, refusals,
logs, `--json` output, and every file under the harness home, in any redacted form."""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.config import parse_config
from harness.episode import Episode
from harness.fixtures import fixture_seed
from harness.home import harness_home
from tests.leaks import leaks
from tests.loopback import serving

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

HEADER = "Bearer hdr-4bQ9xZ2mT7-edge"
DEPLOY = "dk-Wq3nR8vL5pY1-secret-env"
VAULT = "vt-Hc6sK1gE9uA4-from-config"
"""A secret value written in the config itself (recorded with the config in the trace)."""

# The agent does everything it can to print what it holds or can reach.
LEAKY = [
    "env", "cat /proc/self/environ | tr '\\0' '\\n'", "echo $DATABASE_URL",
    "echo -n $PGPASSWORD | base64", "echo $VAULT_TOKEN | base64", "echo $PGPASSWORD | rev",
    "printf %s \"$DEPLOY_KEY\" | od -An -tx1",
    "psql -Atc 'SELECT current_user'",
    "echo $PGPASSWORD > leaked.txt && git add leaked.txt && git commit -qm \"pw $DEPLOY_KEY\"",
]


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(dict(self.headers)).encode()
        self.send_response(200)
        self.send_header("X-Seen", self.headers.get("Authorization", ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def echo() -> Iterator[str]:
    with serving(_Echo) as address:
        yield address


def _config_text(repo: Path, host: str) -> str:
    return f"""
orchestrator:
  blast_radius: {{max_database_rows: 50, max_commits: 5, dry_run: true}}
state_injection:
  sources:
    - {{type: auth_header, key: Authorization, value_env: EDGE_TOKEN}}
    - {{type: env_var, prefix: DEPLOY_, secret: true}}
    - {{type: env_var, prefix: VAULT_, secret: true, values: {{VAULT_TOKEN: {VAULT}}}}}
observability:
  logging: {{level: debug, include_tool_io: true}}
tools:
  http: {{allow_hosts: ['{host}']}}
target:
  repo: {repo}
  database: {fixture_seed('shop')}
"""


def _actions(host: str) -> list[dict[str, Any]]:
    return [*({"tool": "shell_exec", "parameters": {"command": c}} for c in LEAKY),
            {"tool": "http_request", "parameters": {"method": "GET", "url": f"http://{host}/"}},
            {"tool": "db_query", "parameters": {"sql": "SELECT current_setting('is_superuser')"}},
            {"tool": "shell_exec", "parameters": {"command": "rm -rf /"}}]


def _files_since(started: float) -> dict[str, str]:
    found = {}
    for path in harness_home().rglob("*"):
        if path.is_file() and path.stat().st_mtime >= started and "postgres" not in path.parts:
            found[str(path)] = path.read_bytes().decode("latin-1")
    return found


def test_no_form_of_any_secret_is_shown_logged_or_written(
        shop_repo: Path, echo: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    started = time.time() - 1
    config = parse_config(_config_text(shop_repo, echo))
    with caplog.at_level(logging.DEBUG, logger="harness"), Episode(
            config, host_env={"EDGE_TOKEN": HEADER, "DEPLOY_KEY": DEPLOY}) as episode:
        assert episode.sandbox.database is not None
        password = episode.sandbox.database.password
        results = [episode.act(action) for action in _actions(echo)]
        changes = episode.close()
        prompt = episode.state.prompt_text()
    assert results[0].status == "ok" and "PGPASSWORD=***" in results[0].output["stdout"]
    assert results[-1].status == "refused"
    assert changes.secrets == ["commit message"], "the env secret, not the sandbox password"
    assert changes.bundle is None, "the commits of a change carrying a credential are not kept"
    texts = {"results": json.dumps([r.to_dict() for r in results], default=str),
             "observations": "\n".join(r.observation() for r in results),
             "logs": caplog.text, "prompt": prompt,
             "changeset": json.dumps([changes.summary(), changes.workspace.to_dict()],
                                     default=str) + changes.markdown(),
             **_files_since(started)}
    assert any(path.endswith(".jsonl") for path in texts), "the trace was scanned"
    assert leaks([HEADER, DEPLOY, VAULT, password], texts) == []


def test_the_json_output_and_every_file_of_a_run_hold_no_secret(
        shop_repo: Path, echo: str, tmp_path: Path) -> None:
    started = time.time() - 1
    config_file = tmp_path / "harness.yaml"
    config_file.write_text(_config_text(shop_repo, echo))
    actions = tmp_path / "actions.jsonl"
    actions.write_text("\n".join(json.dumps(a) for a in _actions(echo)) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--config", str(config_file), "--actions",
         str(actions), "--json"], capture_output=True, text=True, check=False,
        env={**os.environ, "EDGE_TOKEN": HEADER, "DEPLOY_KEY": DEPLOY})
    assert done.returncode == 3, done.stderr  # refused: the change carries a secret
    report = json.loads(done.stdout)
    assert [v["limit"] for v in report["promotion"]["violations"]] == ["secrets"]
    texts = {"stdout": done.stdout, "stderr": done.stderr, **_files_since(started)}
    assert leaks([HEADER, DEPLOY, VAULT], texts) == []
