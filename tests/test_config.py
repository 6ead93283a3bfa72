"""The configuration: the article's reference file loads as it is; errors name key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import ConfigError, load_config
from harness.config import AuthHeaderSource, DbSchemaSource, EnvVarSource, parse_config
from harness.fixtures import fixtures_root

SEED = fixtures_root() / "configs" / "agent-scaffold-config.yaml"


def test_the_reference_configuration_loads_as_it_is() -> None:
    config = load_config(SEED)
    assert config.orchestrator.blast_radius.max_commits == 5
    assert config.orchestrator.blast_radius.max_database_rows == 10
    assert config.orchestrator.blast_radius.dry_run is True
    assert [(r.pattern, r.action) for r in config.guardrails.rules] == [
        ("rm -rf /", "block"), ("DROP DATABASE", "block")]
    assert config.state_injection.sources == [
        EnvVarSource(type="env_var", prefix="APP_"),
        DbSchemaSource(type="db_schema", tables=["users", "orders"]),
        AuthHeaderSource(type="auth_header", key="X-API-Key"),
    ]
    assert config.observability.tracing.propagate_trace_id
    assert config.observability.logging.level == "debug"


def test_an_empty_file_gives_hardened_defaults() -> None:
    config = parse_config("")
    assert config.sandbox.hardening.network is False
    assert config.sandbox.hardening.overrides() == {}


def test_a_misspelt_key_is_named_with_its_line() -> None:
    text = "orchestrator:\n  blast_radius:\n    max_comits: 3\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="harness.yaml")
    assert "harness.yaml:3: orchestrator.blast_radius.max_comits: unknown key" in str(info.value)


def test_a_wrong_value_in_a_list_item_is_named_with_its_line() -> None:
    text = "state_injection:\n  sources:\n    - type: env_var\n      prefix: A\n    - type: gossip\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="h.yaml")
    assert "h.yaml:5: state_injection.sources[1]" in str(info.value)


def test_every_problem_is_listed_at_once() -> None:
    text = "orchestrator:\n  blast_radius:\n    max_commits: -1\nsandbox:\n  hardening:\n    memory: lots\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="h.yaml")
    message = str(info.value)
    assert "h.yaml:3: orchestrator.blast_radius.max_commits" in message
    assert "h.yaml:6: sandbox.hardening.memory" in message and "'lots' is not a size" in message


@pytest.mark.parametrize("text", ["- just\n- a list\n", "key: [unclosed\n"])
def test_not_a_mapping_or_not_yaml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"h\.yaml"):
        parse_config(text, origin="h.yaml")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_relative_target_paths_are_beside_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "harness.yaml").write_text(
        "target:\n  repo: ../repo\n  database: seeds/app.sql\n")
    config = load_config(folder / "harness.yaml")
    assert config.target.repo == str(folder / "../repo")
    assert config.target.database == str(folder / "seeds/app.sql")
    url = folder / "url.yaml"
    url.write_text("target:\n  repo: https://example.com/r.git\n  database: postgresql:///x\n")
    assert load_config(url).target.repo == "https://example.com/r.git"
    assert load_config(url).target.database == "postgresql:///x"


def test_exec_users_are_user_names_uids_or_a_star_and_the_agent_always_may() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("sandbox:\n  hardening:\n    exec_users: [root, 'x; rm']\n", origin="h.yaml")
    assert "h.yaml:3: sandbox.hardening.exec_users" in str(info.value)
    assert "'x; rm' is not a user name" in str(info.value)
    hardening = parse_config("sandbox:\n  hardening:\n    exec_users: [root, '1001:1001']\n"
                             ).sandbox.hardening
    assert [hardening.may_run_as(u) for u in ("agent", "1000", "root", "1001:1001", "daemon")
            ] == [False, False, True, True, False], "the agent is asked for by naming no one"
    assert parse_config("sandbox:\n  hardening:\n    exec_users: ['*']\n"
                        ).sandbox.hardening.may_run_as("daemon")
    assert not parse_config("").sandbox.hardening.may_run_as("root")
