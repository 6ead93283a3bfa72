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


SANDBOX_RULES = [
    ("hardening:\n    pids_limit: 3", "sandbox.hardening.pids_limit", "greater than or equal to 16"),
    ("hardening:\n    cpus: 0", "sandbox.hardening.cpus", "greater than 0"),
    ("hardening:\n    tmpfs_size: huge", "sandbox.hardening.tmpfs_size", "'huge' is not a size"),
    ("hardening:\n    network: perhaps", "sandbox.hardening.network", "valid boolean"),
    ("hardening:\n    memroy: 2g", "sandbox.hardening.memroy", "unknown key"),
    ("exec_timeout_s: -1", "sandbox.exec_timeout_s", "greater than 0"),
    ("output_limit_bytes: 12", "sandbox.output_limit_bytes", "greater than or equal to 1024"),
    ("disk_limit: 1k", "sandbox.disk_limit", "at least 16m"),
    ("workspace_cow: sometimes", "sandbox.workspace_cow", "'auto' or 'off'"),
    ("database:\n    data_image_size: 100m", "sandbox.database.data_image_size", "at least 1g"),
    ("database:\n    baseline_max_age_s: 0", "sandbox.database.baseline_max_age_s",
     "greater than 0"),
    ("database:\n    mask:\n      nodot: hash", "sandbox.database.mask.nodot", "'nodot' is not"),
    ("database:\n    mask:\n      t.c: scramble", "sandbox.database.mask.t.c", "'hash'"),
    ("database:\n    mask:\n      t.c: {fixed: 1, extra: 2}", "sandbox.database.mask.t.c",
     "unknown key"),
]


@pytest.mark.parametrize(("section", "key", "says"), SANDBOX_RULES,
                         ids=[rule[1] + ":" + rule[0].split()[-1] for rule in SANDBOX_RULES])
def test_every_sandbox_setting_is_checked_and_named_at_its_line(section: str, key: str,
                                                                says: str) -> None:
    """The sandbox's settings are plain dataclasses (opening a sandbox needs no pydantic);
    read from YAML they are checked as strictly, each error naming its key and line."""
    text = "target:\n  repo: .\nsandbox:\n  " + section + "\n"
    line = text.count("\n")  # the last line holds the offending key
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="h.yaml")
    message = str(info.value)
    assert f"h.yaml:{line}: {key}" in message and says in message, message


def test_sandbox_settings_made_in_python_are_checked_too() -> None:
    from harness.sandbox.settings import (
        DatabaseSettings,
        Hardening,
        SandboxSettings,
        SettingError,
    )

    for make in (lambda: Hardening(pids_limit=2), lambda: Hardening(memory="lots"),
                 lambda: Hardening(exec_users=["x; rm"]), lambda: SandboxSettings(disk_limit="1"),
                 lambda: DatabaseSettings(mask={"bad": "hash"})):
        with pytest.raises(SettingError):
            make()
    assert Hardening(memory="2G").memory == "2g"
    assert Hardening(network=True).overrides() == {"network": True}


def test_a_yaml_null_mask_is_the_null_rule_and_settings_round_trip_through_json() -> None:
    config = parse_config("sandbox:\n  database:\n    mask:\n      users.email: null\n"
                          "      users.name: {fixed: anon}\n  hardening:\n    memory: 2G\n")
    assert config.sandbox.database.mask["users.email"] == "null"
    assert config.sandbox.hardening.memory == "2g"
    again = load_config(config.model_dump(mode="json"))
    assert again == config and again.sandbox.database.mask["users.name"].fixed == "anon"
