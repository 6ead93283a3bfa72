"""Promotion to a real git remote and a real PostgreSQL, all or nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.config import Config, parse_config
from harness.episode import Episode
from harness.fixtures import fixture_seed
from harness.promote import promote, revert
from harness.sandbox.postgres import ServerAddress
from harness.sandbox.snapshot import table_fingerprints
from tests.fix_git import git
from tests.fix_pg import application_role

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

WORK = [
    {"tool": "shell_exec", "parameters": {"command": "echo 'RATE = 1' >> shop/orders.py"}},
    {"tool": "git_commit", "parameters": {"message": "Add a rate"}},
    {"tool": "db_mutate", "parameters": {"sql": "UPDATE orders SET status = 'void' WHERE id IN (3, 4)"}},
    {"tool": "db_mutate", "parameters": {"sql": "INSERT INTO users (email) VALUES ('new@example.com')"}},
    {"tool": "db_mutate", "parameters": {"sql": "DELETE FROM order_lines WHERE order_id = 7 AND line = 3"}},
]


@pytest.fixture()
def remote(shop_repo: Path, tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(path)], check=True)
    return path


@pytest.fixture()
def target_db(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    """The shop database on the stock target server, reached as an application role that
    may only read and write rows (as teams promote)."""
    name = "promo_" + request.node.name[:40].replace("[", "_").replace("]", "").replace("-", "_")
    target_server.fresh_database(name)
    target_server.run_script(fixture_seed("shop"), name)
    return application_role(target_server, name)


@pytest.fixture()
def owner_db(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    """The shop database reached as its owner, who may also change its schema."""
    name = "owner_" + request.node.name[:40]
    target_server.fresh_database(name)
    target_server.run_script(fixture_seed("shop"), name)
    return target_server.conninfo(name)


def make_config(remote: Path, dsn: str, *, protect: bool = True, **blast: Any) -> Config:
    limits = {"max_commits": 3, "max_database_rows": 10, "dry_run": False, **blast}
    protected = ("protected_tables: [audit_log]\n  protected_paths: ['.github/workflows/**']"
                 if protect else "protected_tables: []")
    return parse_config(f"""
orchestrator:
  blast_radius: {json.dumps(limits)}
guardrails:
  {protected}
target:
  repo: {remote}
  database: "{dsn}"
promotion:
  fast_forward: true
""")


def tables_of(dsn: str) -> dict[str, tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return {k: v for k, v in table_fingerprints(conn).items() if not k.startswith("sequence")}


def refs_of(remote: Path) -> str:
    return git(remote, "for-each-ref", "--format=%(refname) %(objectname)")


def run_episode(config: Config, actions: list[Any]) -> tuple[Episode, dict[str, Any]]:
    episode = Episode(config).open()
    for action in actions:
        result = episode.act(action)
        assert result.status == "ok", result
    assert episode.sandbox.database is not None
    with episode.sandbox.database.connect_as_owner() as conn:
        final = {k: v for k, v in table_fingerprints(conn).items()
                 if not k.startswith("sequence")}
    return episode, final


def test_within_limits_the_real_systems_end_exactly_as_the_sandbox(
        remote: Path, target_db: str) -> None:
    base = git(remote, "rev-parse", "main")
    episode, sandbox_tables = run_episode(make_config(remote, target_db), WORK)
    result = episode.promote()
    assert result.outcome == "promoted", result
    assert tables_of(target_db) == sandbox_tables
    branch = f"refs/heads/harness/{episode.trace_id}"
    head = git(remote, "rev-parse", branch)
    assert git(remote, "rev-list", "--count", f"{base}..{head}") == "1"
    assert git(remote, "rev-parse", "main") == head, "main was fast-forwarded"
    assert git(remote, "log", "-1", "--format=%s", head) == "Add a rate"
    with psycopg.connect(target_db) as conn:  # the sequence moved past the inserted id
        conn.execute("INSERT INTO users (email) VALUES ('after@example.com')")
    receipt = json.loads(Path(result.receipt or "").read_text())
    assert receipt["trace_id"] == episode.trace_id and receipt["rows"]["tables"]


@pytest.mark.parametrize(("blast", "extra_action", "limit"), [
    ({"max_commits": 0}, None, "max_commits"),
    ({"max_database_rows": 2}, None, "max_database_rows"),
    ({"max_rows_per_table": {"orders": 1}}, None, "max_rows_per_table[orders]"),
    ({}, {"tool": "shell_exec", "parameters": {
        "command": "psql -c \"INSERT INTO audit_log (message) VALUES ('x')\""}},
     "protected_tables"),
    ({}, {"tool": "shell_exec", "parameters": {
        "command": "mkdir -p .github/workflows && echo x > .github/workflows/ci.yml && "
                   "git add -A && git commit -qm ci"}}, "protected_paths"),
    ({}, {"tool": "shell_exec", "parameters": {
        "command": "psql -c 'CREATE TABLE extra (id int)'"}}, "allow_ddl"),
])
def test_over_a_limit_nothing_reaches_either_system(
        remote: Path, target_db: str, blast: dict[str, Any], extra_action: Any,
        limit: str) -> None:
    before_db, before_refs = tables_of(target_db), refs_of(remote)
    generous = make_config(remote, target_db, protect=False, max_commits=10,
                           max_database_rows=100, allow_ddl=True)
    with Episode(generous) as episode:
        for action in WORK + ([extra_action] if extra_action else []):
            assert episode.act(action).status == "ok"
    changeset = episode.close()
    # The same change set, judged by the configured limits (the episode's own budget would
    # have stopped most of these before they happened).
    result = promote(changeset, make_config(remote, target_db, **blast))
    assert result.outcome == "refused"
    assert limit in [v.limit for v in result.violations]
    assert tables_of(target_db) == before_db
    assert refs_of(remote) == before_refs


def test_a_change_carrying_a_credential_of_the_edge_is_refused(
        remote: Path, target_db: str) -> None:
    config = make_config(remote, target_db)
    config = config.model_copy(update={"state_injection": parse_config(
        "state_injection:\n  sources:\n    - {type: env_var, prefix: DEPLOY_, secret: true}\n"
    ).state_injection})
    key = "dk-live-7f6e5d4c3b2a19"
    with Episode(config, host_env={"DEPLOY_KEY": key},
                 approver=lambda action, decision: True) as episode:
        for command in ["printf 'token = %s\\n' \"$DEPLOY_KEY\" > deploy.cfg",
                        "printf %s \"$DEPLOY_KEY\" | base64 > shop/key.b64",
                        "echo plain > notes.txt",
                        "printf 'BIN\\0%s\\0' \"$DEPLOY_KEY\" > blob.bin",
                        "echo 'hidden.txt -diff' > .gitattributes && "
                        "printf %s \"$DEPLOY_KEY\" > hidden.txt",
                        "git add -A && git commit -qm \"deploy with $DEPLOY_KEY\"",
                        "psql -qc \"UPDATE users SET email = '$DEPLOY_KEY@x.y' WHERE id = 1\""]:
            action = episode.act({"tool": "shell_exec", "parameters": {"command": command}})
            assert action.status == "ok", action
        before = git(remote, "for-each-ref")
        result = episode.promote()
    assert result.outcome == "refused"
    secrets = [v for v in result.violations if v.limit == "secrets"]
    assert secrets and secrets[0].actual == ["blob.bin", "deploy.cfg", "hidden.txt",
                                             "shop/key.b64", "commit message", "public.users"]
    assert key not in json.dumps(result.to_dict(), default=str)
    assert git(remote, "for-each-ref") == before


def test_a_concurrent_writer_makes_promotion_fail_naming_the_row(
        remote: Path, target_db: str) -> None:
    before_refs = refs_of(remote)
    episode, _ = run_episode(make_config(remote, target_db), WORK)
    with psycopg.connect(target_db) as conn:
        conn.execute("UPDATE orders SET total = 1.00 WHERE id = 4")
    before_db = tables_of(target_db)
    result = episode.promote()
    assert result.outcome == "conflict"
    assert [(c.table, c.key) for c in result.conflicts] == [("public.orders", {"id": 4})]
    assert result.conflicts[0].found["total"] == 1.00  # type: ignore[index]
    assert tables_of(target_db) == before_db
    assert refs_of(remote) == before_refs


@pytest.mark.parametrize(("meanwhile", "table", "key", "reason"), [
    # A row the change set updates was deleted on the target.
    ("DELETE FROM order_lines WHERE order_id = 4; DELETE FROM orders WHERE id = 4",
     "public.orders", {"id": 4}, "the row was deleted"),
    # A row the change set deletes was deleted already.
    ("DELETE FROM order_lines WHERE order_id = 7 AND line = 3",
     "public.order_lines", {"order_id": 7, "line": 3}, "the row was deleted"),
    # A row the change set deletes was changed.
    ("UPDATE order_lines SET quantity = quantity + 1 WHERE order_id = 7 AND line = 3",
     "public.order_lines", {"order_id": 7, "line": 3}, "changed since the snapshot"),
    # The key the change set inserts was taken on the target.
    ("INSERT INTO users (email) VALUES ('first@example.com')",
     "public.users", {"id": 51}, "a row with this key exists already"),
])
def test_each_kind_of_change_on_the_target_since_the_snapshot_is_a_conflict_naming_the_row(
        remote: Path, target_db: str, meanwhile: str, table: str, key: dict[str, Any],
        reason: str) -> None:
    episode, _ = run_episode(make_config(remote, target_db), WORK)
    try:
        with psycopg.connect(target_db) as conn:
            conn.execute(meanwhile)
        before_db, before_refs = tables_of(target_db), refs_of(remote)
        result = episode.promote()
    finally:
        episode.close()
    assert result.outcome == "conflict"
    assert [(c.table, c.key) for c in result.conflicts] == [(table, key)]
    assert reason in result.conflicts[0].reason
    assert tables_of(target_db) == before_db and refs_of(remote) == before_refs


def test_dry_run_shows_the_plan_and_changes_nothing(remote: Path, target_db: str) -> None:
    before_db, before_refs = tables_of(target_db), refs_of(remote)
    episode, _ = run_episode(make_config(remote, target_db), WORK)
    result = episode.promote(dry_run=True)
    assert result.outcome == "dry-run"
    assert result.plan["database"]["total"] == {"inserted": 1, "updated": 2, "deleted": 1,
                                                "rows": 4}
    assert result.plan["git"]["commits"] == 1
    assert tables_of(target_db) == before_db and refs_of(remote) == before_refs


def test_revert_restores_the_database_and_the_refs(remote: Path, target_db: str) -> None:
    before_db, before_refs = tables_of(target_db), refs_of(remote)
    episode, _ = run_episode(make_config(remote, target_db), WORK)
    result = episode.promote()
    assert result.outcome == "promoted"
    assert tables_of(target_db) != before_db
    undone = revert(Path(result.receipt or ""))
    assert undone.outcome == "reverted"
    assert tables_of(target_db) == before_db
    assert refs_of(remote) == before_refs


def test_revert_meeting_a_row_changed_since_the_promotion_is_a_conflict_and_changes_nothing(
        remote: Path, target_db: str) -> None:
    episode, _ = run_episode(make_config(remote, target_db), WORK)
    result = episode.promote()
    assert result.outcome == "promoted"
    with psycopg.connect(target_db) as conn:
        conn.execute("UPDATE orders SET total = 999.00 WHERE id = 3")
    promoted_db, promoted_refs = tables_of(target_db), refs_of(remote)
    undone = revert(Path(result.receipt or ""))
    assert undone.outcome == "conflict"
    assert [(c.table, c.key) for c in undone.conflicts] == [("public.orders", {"id": 3})]
    assert tables_of(target_db) == promoted_db, "nothing of the revert was applied"
    assert refs_of(remote) == promoted_refs, "the refs stay where the promotion put them"


@pytest.fixture()
def keyless_db(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    """The shop database with a table that has no key, as the application role."""
    name = "keyless_" + request.node.name[:30]
    target_server.fresh_database(name)
    target_server.run_script(fixture_seed("shop"), name)
    with target_server.connect(name) as conn:
        conn.execute("CREATE TABLE stock_moves (sku text, qty int, note text); "
                     "INSERT INTO stock_moves VALUES ('a', 1, 'x'), ('a', 1, 'x'), "
                     "('b', 2, 'y'), ('c', 3, NULL)")
    return application_role(target_server, name)


KEYLESS_WORK = [{"tool": "db_mutate", "parameters": {"sql": sql}} for sql in [
    "DELETE FROM stock_moves WHERE ctid = (SELECT ctid FROM stock_moves WHERE sku = 'a' "
    "LIMIT 1)",
    "UPDATE stock_moves SET qty = 5 WHERE sku = 'b'",
    "INSERT INTO stock_moves VALUES ('d', 4, NULL), ('d', 4, NULL)",
    "DELETE FROM stock_moves WHERE sku = 'c'",
]]


def _multiset(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return sorted(conn.execute("SELECT sku, qty, note FROM stock_moves").fetchall(),
                      key=repr)


def test_a_table_without_a_key_is_promoted_row_for_row_and_reverted(
        remote: Path, keyless_db: str) -> None:
    before = _multiset(keyless_db)
    episode, _ = run_episode(make_config(remote, keyless_db), KEYLESS_WORK)
    result = episode.promote()
    assert result.outcome == "promoted", result
    assert _multiset(keyless_db) == sorted([("a", 1, "x"), ("b", 5, "y"), ("d", 4, None),
                                            ("d", 4, None)], key=repr)
    assert revert(Path(result.receipt or "")).outcome == "reverted"
    assert _multiset(keyless_db) == before


def test_a_keyless_row_gone_from_the_target_is_a_conflict(remote: Path, keyless_db: str
                                                          ) -> None:
    episode, _ = run_episode(make_config(remote, keyless_db), KEYLESS_WORK)
    try:
        with psycopg.connect(keyless_db) as conn:
            conn.execute("DELETE FROM stock_moves WHERE sku = 'c'")
        before = _multiset(keyless_db)
        result = episode.promote()
    finally:
        episode.close()
    assert result.outcome == "conflict"
    assert [(c.table, c.expected) for c in result.conflicts] == [
        ("public.stock_moves", {"sku": "c", "qty": 3, "note": None})]
    assert "1 such row(s) expected, 0 found" in result.conflicts[0].reason
    assert _multiset(keyless_db) == before


def test_run_exit_codes(remote: Path, target_db: str, tmp_path: Path) -> None:
    import yaml

    def run(*flags: str, follow_source: bool = True, **blast: Any
            ) -> subprocess.CompletedProcess[str]:
        config = make_config(remote, target_db, **blast).model_dump(mode="json")
        config["sandbox"]["database"]["refresh_on_source_change"] = follow_source
        config_file = tmp_path / "harness.yaml"
        config_file.write_text(yaml.safe_dump(config))
        actions = tmp_path / "actions.jsonl"
        through_shell = {"tool": "shell_exec", "parameters": {
            "command": "psql -c 'UPDATE orders SET total = total + 1 WHERE id <= 20'"}}
        actions.write_text("\n".join(json.dumps(a) for a in [*WORK, through_shell]) + "\n")
        return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--config",
                               str(config_file), "--actions", str(actions), "--json", *flags],
                              capture_output=True, text=True, check=False)

    within = run(max_database_rows=30)
    assert within.returncode == 0
    assert json.loads(within.stdout)["promotion"]["outcome"] == "dry-run", "no --promote"
    refused = run(max_database_rows=10)
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["promotion"]["violations"][0]["limit"] == \
        "max_database_rows"
    promoted = run("--promote", max_database_rows=30)
    assert (promoted.returncode, json.loads(promoted.stdout)["promotion"]["outcome"]) == (
        0, "promoted")
    # A snapshot kept fixed is now older than the real rows, so the same work meets them
    # changed: a conflict, exit 4, nothing changed.
    with psycopg.connect(target_db) as conn:
        before = conn.execute("SELECT sum(total) FROM orders").fetchone()
    conflicted = run("--promote", follow_source=False, max_database_rows=30)
    assert conflicted.returncode == 4
    assert json.loads(conflicted.stdout)["promotion"]["conflicts"]
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT sum(total) FROM orders").fetchone() == before
    # Following the source (the default), the next episode starts from the promoted rows.
    again = run("--promote", max_database_rows=30)
    assert (again.returncode, json.loads(again.stdout)["promotion"]["outcome"]) == (
        0, "promoted"), again.stdout[-2000:]


def test_allowed_ddl_is_replayed_before_the_rows(remote: Path, owner_db: str) -> None:
    target_db = owner_db
    config = make_config(remote, target_db, allow_ddl=True)
    with Episode(config) as episode:
        assert episode.act({"tool": "db_mutate", "parameters": {
            "sql": "CREATE TABLE coupons (code text PRIMARY KEY, percent int)"}}).status == "ok"
        assert episode.act({"tool": "db_mutate", "parameters": {
            "sql": "INSERT INTO coupons VALUES ('TEN', 10), ('TWENTY', 20)"}}).status == "ok"
    changeset = episode.close()
    markdown = changeset.markdown()
    assert "| `public.coupons` | 2 | 0 | 0 |" in markdown
    assert "CREATE TABLE coupons" in markdown
    assert promote(changeset, config).outcome == "promoted"
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT code, percent FROM coupons ORDER BY code").fetchall() == [
            ("TEN", 10), ("TWENTY", 20)]


def test_fast_forward_is_refused_when_the_target_moved_and_nothing_changes(
        remote: Path, target_db: str, shop_repo: Path, tmp_path: Path) -> None:
    episode, _ = run_episode(make_config(remote, target_db), WORK)
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(remote), str(other)], check=True)
    git(other, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "--allow-empty",
        "-m", "someone else")
    git(other, "push", "-q", "origin", "main")
    before_db, before_refs = tables_of(target_db), refs_of(remote)
    result = episode.promote()
    assert result.outcome == "failed"
    assert "nothing changed" in (result.error or "")
    assert tables_of(target_db) == before_db, "the prepared transaction was rolled back"
    assert refs_of(remote) == before_refs, "the atomic push moved no ref"
    with psycopg.connect(target_db) as conn:
        assert conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() == (0,)


def test_parents_are_inserted_before_children_and_a_taken_key_is_a_conflict(
        remote: Path, target_db: str) -> None:
    config = make_config(remote, target_db)
    work = [{"tool": "db_mutate", "parameters": {"sql": (
        "WITH u AS (INSERT INTO users (id, email) VALUES (900, 'p@example.com') RETURNING id) "
        "INSERT INTO orders (id, user_id, total) SELECT 900, id, 1.00 FROM u")}}]
    episode, sandbox_tables = run_episode(config, work)
    result = episode.promote()
    assert result.outcome == "promoted", result
    assert tables_of(target_db) == sandbox_tables
    second, _ = run_episode(config, [{"tool": "db_mutate", "parameters": {
        "sql": "INSERT INTO users (id, email) VALUES (901, 'q@example.com')"}}])
    with psycopg.connect(target_db) as conn:
        conn.execute("INSERT INTO users (id, email) VALUES (901, 'someone@example.com')")
    conflict = second.promote()
    assert conflict.outcome == "conflict"
    assert conflict.conflicts[0].key == {"id": 901}
    assert conflict.conflicts[0].reason == "a row with this key exists already"
