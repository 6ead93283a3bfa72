"""The `harness` command as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fix_git import fingerprint

HARNESS = [sys.executable, "-m", "harness.cli"]


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.docker
def test_exec_json_reports_result_and_commits_and_leaves_origin_alone(
    shop_repo: Path, agent_image: str
) -> None:
    before = fingerprint(shop_repo)
    done = harness("exec", "--repo", str(shop_repo), "--json", "--",
                   "echo hi; echo oops >&2; git commit -q --allow-empty -m wip; exit 3")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == 3
    assert report["stdout"] == "hi\n"
    assert report["stderr"] == "oops\n"
    assert report["timed_out"] is False and report["truncated"] is False
    assert report["duration_s"] > 0
    assert report["workspace"]["commit_count"] == 1
    assert report["workspace"]["commits"][0]["message"] == "wip"
    assert fingerprint(shop_repo) == before


@pytest.mark.docker
def test_exec_with_several_arguments_runs_an_argv(shop_repo: Path, agent_image: str) -> None:
    done = harness("exec", "--repo", str(shop_repo), "--", "echo", "$HOME")
    assert done.returncode == 0
    assert done.stdout == "$HOME\n"
    assert "exit 0" in done.stderr


@pytest.mark.docker
def test_exec_timeout_flag_kills_the_command(shop_repo: Path, agent_image: str) -> None:
    done = harness("exec", "--repo", str(shop_repo), "--json", "--timeout", "1", "--", "sleep 30")
    report = json.loads(done.stdout)
    assert report["timed_out"] is True
    assert done.returncode == 124


@pytest.mark.docker
def test_exec_env_workdir_and_stdin_flags_like_docker_exec(
        shop_repo: Path, agent_image: str) -> None:
    script = 'printf "%s|%s|%s|" "$A" "$FROM_HOST" "$(pwd)"; wc -c; test -z "${UNSET_HERE+x}"'
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    done = subprocess.run(
        [*HARNESS, "exec", "--repo", str(shop_repo), "-e", "A=x=y", "--env", "FROM_HOST",
         "-e", "UNSET_HERE", "-w", "shop", "-i", "--", script],
        input=data, capture_output=True, timeout=300,
        env={**os.environ, "FROM_HOST": "host value"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "x=y|host value|/workspace/shop|1048576\n"


def test_exec_rejects_an_env_item_that_is_not_a_variable(tmp_path: Path) -> None:
    done = harness("exec", "--repo", str(tmp_path), "-e", "1A=b", "--", "true")
    assert done.returncode == 2
    assert "-e '1A=b': expected KEY=VALUE or KEY" in done.stderr


def test_exec_on_a_missing_repo_exits_125_with_a_message(tmp_path: Path) -> None:
    done = harness("exec", "--repo", str(tmp_path / "absent"), "--", "true")
    assert done.returncode == 125
    assert "does not exist" in done.stderr


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "harness.yaml"
    config.write_text("sandbox:\n  hardening:\n    netwrok: true\n")
    done = harness("exec", "--repo", ".", "--config", str(config), "--", "true")
    assert done.returncode == 2
    assert "harness.yaml:3: sandbox.hardening.netwrok: unknown key" in done.stderr


@pytest.mark.docker
def test_doctor_reports_every_check_as_json(agent_image: str) -> None:
    done = harness("doctor", "--json")
    checks = {check["name"]: check for check in json.loads(done.stdout)}
    assert checks["docker engine"]["ok"]
    assert checks["image agent"]["ok"]
    assert done.returncode == (0 if all(c["ok"] for c in checks.values()) else 1)


@pytest.mark.docker
def test_gc_json_lists_what_it_removed(agent_image: str) -> None:
    done = harness("gc", "--json")
    assert done.returncode == 0
    assert set(json.loads(done.stdout)) == {"containers", "volumes", "workspaces", "databases",
                                            "roles", "baselines", "scratch", "data_images",
                                            "pristine", "loop_devices"}


def test_help_documents_the_exit_codes() -> None:
    done = harness("--help")
    assert "Exit codes" in done.stdout and "125" in done.stdout


def test_check_prints_the_decision_and_exits_by_verdict() -> None:
    blocked = harness("check", "--shell", "rm -rf /")
    assert blocked.returncode == 1
    decision = json.loads(blocked.stdout)
    assert decision["decision"] == "block"
    assert decision["rule_id"] == "shell.recursive-delete"
    assert decision["span"] == {"start": 0, "end": 8, "text": "rm -rf /"}
    allowed = harness("check", "--sql", "SELECT * FROM orders WHERE id = 1")
    assert (allowed.returncode, json.loads(allowed.stdout)["decision"]) == (0, "allow")
    assert harness("check", "--write", "/etc/passwd").returncode == 1


def test_check_warn_exits_0_and_config_errors_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "harness.yaml"
    config.write_text("guardrails:\n  builtin: {sql.truncate: warn}\n")
    warned = harness("check", "--config", str(config), "--sql", "TRUNCATE t")
    assert (warned.returncode, json.loads(warned.stdout)["decision"]) == (0, "warn")
    config.write_text("guardrails:\n  rules:\n    - {kind: nope}\n")
    broken = harness("check", "--config", str(config), "--sql", "SELECT 1")
    assert broken.returncode == 2
    assert "harness.yaml:3: guardrails.rules[0]: unknown kind 'nope'" in broken.stderr
    assert harness("check").returncode == 2


def test_check_batch_prints_one_decision_per_line_in_order(tmp_path: Path) -> None:
    batch = tmp_path / "actions.jsonl"
    batch.write_text("\n".join([
        '{"tool": "shell_exec", "command": "git status"}',
        '{"tool": "db_mutate", "sql": "DELETE FROM orders"}',
        "{not json",
        '{"tool": "write_file", "path": ".github/workflows/ci.yml"}',
        '{"tool": "shell_exec", "parameters": {"command": "ls"}}',
    ]) + "\n")
    done = harness("check", "--batch", str(batch))
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["decision"] for line in lines] == ["allow", "block", "block", "allow", "allow"]
    assert lines[1]["rule_id"] == "sql.delete-without-where"
    assert lines[2]["rule_id"] == "tool.bad-parameters"
    assert done.returncode == 1


@pytest.mark.docker
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["TERM", "HUP", "INT"])
def test_exec_ended_by_a_signal_leaves_nothing_behind(
        shop_repo: Path, agent_image: str, harness_home: Path, number: int) -> None:
    """`timeout`, a closed terminal or Ctrl-C: the command's container, its clone, disk and
    mounts go, as after a normal end (SIGTERM once left the command running)."""
    import time
    import uuid

    import docker

    marker = uuid.uuid4().hex
    client = docker.from_env()
    with subprocess.Popen([*HARNESS, "exec", "--repo", str(shop_repo), "--",
                           f"echo {marker}; sleep 120"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        deadline = time.monotonic() + 120
        running = []
        while not running and time.monotonic() < deadline:
            running = [c for c in client.containers.list(filters={"label": "harness.sandbox"})
                       if marker in " ".join(c.attrs["Config"]["Cmd"])]
            time.sleep(0.05)
        assert running, "the command never started"
        sandbox = running[0].labels["harness.sandbox"]
        process.send_signal(number)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == (128 + number if number != signal.SIGINT else 1), stderr
    assert not client.containers.list(all=True, filters={"label": f"harness.sandbox={sandbox}"})
    client.close()
    assert not (harness_home / "workspaces" / sandbox).exists()
    assert sandbox not in Path("/proc/mounts").read_text()
    attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert sandbox not in attached
