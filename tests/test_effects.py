"""Effect policies on real PostgreSQL, real git and a real sandbox: what an action did is
judged whatever command did it, every changed row names the action that changed it
(through psql in the shell, triggers and cascades too), a blocked action is undone without
a trace, and one policy file gives one verdict in an episode, at promotion and in the gate."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.config import Config, parse_config
from harness.episode import Episode
from harness.fixtures import fixture_seed
from harness.limits import check as check_limits
from harness.promote import promote
from harness.sandbox.postgres import ServerAddress
from harness.trace.otel import to_otel
from harness.trace.reader import read
from tests.fix_git import fingerprint, git

PUBLIC = "-c search_path=public"
"""For the tests' own superuser reads of the user's tables by bare name (the harness's
reads resolve names in pg_catalog alone)."""

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

PAID_ORDERS_STAY = """
  - id: paid-orders-stay
    rows: {table: orders, op: delete, where: {status: paid}}
    message: paid orders are never deleted
"""

# Order lines (ON DELETE CASCADE) and an audit trigger: rows no statement named.
CASCADING = """
CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL, tier text NOT NULL);
CREATE TABLE invoices (id int PRIMARY KEY,
                       customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE,
                       status text NOT NULL);
CREATE TABLE invoice_lines (invoice_id int REFERENCES invoices ON DELETE CASCADE,
                            line int, amount numeric(10, 2), PRIMARY KEY (invoice_id, line));
CREATE TABLE history (id serial PRIMARY KEY, what text NOT NULL);
CREATE FUNCTION remember() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO history (what) VALUES (TG_OP || ' ' || TG_TABLE_NAME || ' ' || OLD.id);
    RETURN OLD;
END $$;
CREATE TRIGGER remember AFTER DELETE ON invoices FOR EACH ROW EXECUTE FUNCTION remember();
INSERT INTO customers SELECT g, 'c' || g || '@example.com', CASE WHEN g % 2 = 0 THEN 'gold'
                                                                  ELSE 'basic' END
FROM generate_series(1, 10) g;
INSERT INTO invoices SELECT g, 1 + g % 10, CASE WHEN g % 7 = 0 THEN 'paid' ELSE 'open' END
FROM generate_series(1, 40) g;
INSERT INTO invoice_lines SELECT i, l, i + l FROM generate_series(1, 40) i,
                                                  generate_series(1, 2) l;
CREATE TABLE events (id int, at date NOT NULL, kind text NOT NULL, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, DATE '2025-06-01' + g * 7, CASE WHEN g % 4 = 0 THEN 'payment'
                                                             ELSE 'view' END
FROM generate_series(1, 60) g;
"""


def config(repo: Path, database: str, effects: str = "", **blast: Any) -> Config:
    limits = {"max_commits": 5, "max_database_rows": 5000, "dry_run": True, **blast}
    return parse_config(f"""
orchestrator:
  blast_radius: {json.dumps(limits)}
target:
  repo: {repo}
  database: "{database}"
{"effects:" + effects if effects else ""}
""")


def behind_python(episode: Episode, command: str) -> Any:
    """Run a shell command from a Python script written first, the command encoded: the
    guardrails read neither (a red team's way past them); only its effects can judge it."""
    encoded = base64.b64encode(command.encode()).decode()
    script = ("import base64, subprocess\n"
              f"subprocess.run(['bash', '-c', base64.b64decode('{encoded}').decode()], "
              "check=True)\n")
    written = episode.act({"tool": "write_file", "parameters": {"path": "tools/run.py",
                                                                "content": script}})
    assert written.status == "ok", written.output
    return episode.act({"tool": "shell_exec", "parameters": {"command": "python3 tools/run.py"}})


def psql_behind_python(episode: Episode, sql: str) -> Any:
    """Run `sql` through psql, past the guardrails (see behind_python)."""
    return behind_python(episode, f"psql -q -c {shlex.quote(sql)}")


def count(episode: Episode, sql: str) -> int:
    database = episode.sandbox.database
    assert database is not None
    with database.connect_as_owner(options=PUBLIC) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture()
def cascading(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    return target_server.fresh_database("effects_" + request.node.name[:40], CASCADING)


def test_a_destructive_statement_hidden_behind_an_interpreter_is_undone_and_refused(
        shop_repo: Path, tmp_path: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), PAID_ORDERS_STAY)
    trace = tmp_path / "trace.jsonl"
    script = ("import subprocess\n"
              "verb = 'DEL' + 'ETE'\n"
              "sql = f\"{verb} FROM order_lines WHERE order_id > 0; \"\n"
              "sql += f\"{verb} FROM orders WHERE total >= 0\"\n"
              "subprocess.run(['psql', '-q', '-c', sql], check=True)\n")
    with Episode(cfg, trace_path=trace) as episode:
        paid = count(episode, "SELECT count(*) FROM orders WHERE status = 'paid'")
        lines = count(episode, "SELECT count(*) FROM order_lines")
        written = episode.act({"tool": "write_file",
                               "parameters": {"path": "tools/tidy.py", "content": script}})
        assert written.status == "ok", written.output
        # The guardrails let it through: nothing in `python3 tools/tidy.py` says DELETE.
        result = episode.act({"tool": "shell_exec",
                              "parameters": {"command": "python3 tools/tidy.py && echo ran"}})
        assert result.output["stdout"] == "ran\n", result.output
        assert result.status == "refused"
        assert result.refusal is not None
        assert (result.refusal.kind, result.refusal.rule) == ("effect", "paid-orders-stay")
        assert result.refusal.reason.startswith("paid orders are never deleted (")
        assert "the action's effects were undone" in result.refusal.reason
        assert result.output["undone"]["rows"] > paid
        # Every row is back, the agent's earlier file stays, and it may try another way.
        assert count(episode, "SELECT count(*) FROM orders WHERE status = 'paid'") == paid
        assert count(episode, "SELECT count(*) FROM order_lines") == lines
        assert episode.act({"tool": "shell_exec", "parameters": {
            "command": "test -f tools/tidy.py"}}).status == "ok"
        fine = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "DELETE FROM order_lines WHERE order_id = 3"}})
        assert fine.status == "ok", fine.output
        changes = episode.close()
    # The change set has no trace of the undone action: only the later, allowed delete.
    assert changes.rows is not None
    assert changes.rows.summary()["tables"] == {
        "public.order_lines": {"inserted": 0, "updated": 0, "deleted": 3}}
    assert {entry["action"] for entry in changes.attribution["public.order_lines"]} == {3}
    spans = read(trace)
    refused = next(a for a in spans.actions if a.index == 1)
    assert refused.status == "refused"


def test_rows_changed_through_psql_in_the_shell_are_attributed_to_that_shell_action(
        shop_repo: Path, tmp_path: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")))
    trace = tmp_path / "trace.jsonl"
    with Episode(cfg, trace_path=trace) as episode:
        episode.act({"tool": "db_query", "parameters": {"sql": "SELECT 1"}})
        shell = episode.act({"tool": "shell_exec", "parameters": {"command": (
            "psql -q -c \"UPDATE orders SET total = total + 1 WHERE id IN (1, 2)\"")}})
        assert shell.status == "ok", shell.output
        episode.act({"tool": "db_mutate", "parameters": {
            "sql": "INSERT INTO users (email) VALUES ('new@example.com')"}})
        episode.act({"tool": "db_mutate", "parameters": {
            "sql": "UPDATE orders SET total = total + 1 WHERE id = 2"}})
        changes = episode.close()
    summary = changes.summary()
    spans = {a.index: a.span.span_id for a in read(trace).actions}
    orders = {row["key"]["id"]: row for row in summary["rows"]["tables"]["public.orders"]["rows"]}
    # Order 1: the shell's. Order 2: changed by both, named by the last that changed it.
    assert (orders[1]["op"], orders[1]["action"], orders[1]["span_id"]) == ("update", 1,
                                                                           spans[1])
    assert (orders[2]["action"], orders[2]["span_id"]) == (3, spans[3])
    users = summary["rows"]["tables"]["public.users"]["rows"]
    assert [(u["op"], u["action"], u["span_id"]) for u in users] == [("insert", 2, spans[2])]
    # The trace shows each action's rows under it, and the CLI's JSON has them too.
    timeline = subprocess.run([sys.executable, "-m", "harness.cli", "trace", "show",
                               str(trace)], capture_output=True, text=True, check=True).stdout
    assert "public.orders" in timeline
    shell_span = next(a for a in read(trace).actions if a.index == 1)
    assert shell_span.span.attributes["rows"] == {
        "public.orders": {"inserted": 0, "updated": 2, "deleted": 0}}
    # The OpenTelemetry span of the tool call carries the counts as numbers.
    exported = to_otel(shell_span.span).attributes or {}
    assert (exported["harness.rows.public.orders.updated"],
            exported["harness.rows.public.orders.deleted"]) == (2, 0)
    assert exported["gen_ai.tool.name"] == "shell_exec"


def test_a_cascade_and_a_trigger_are_attributed_to_the_statement_that_caused_them(
        shop_repo: Path, cascading: str) -> None:
    cfg = config(shop_repo, cascading)
    with Episode(cfg) as episode:
        episode.act({"tool": "db_mutate", "parameters": {
            "sql": "UPDATE customers SET tier = 'gold' WHERE id = 1"}})
        deleted = episode.act({"tool": "shell_exec", "parameters": {
            "command": "psql -q -c 'DELETE FROM customers WHERE id = 3'"}})
        assert deleted.status == "ok", deleted.output
        changes = episode.close()
    rows = changes.attribution
    assert {(e["op"], e["action"]) for e in rows["public.customers"]} == {
        ("update", 0), ("delete", 1)}
    # Customer 3 had invoices 2, 12, 22, 32 with two lines each, and each invoice's
    # deletion wrote a history row: all of them the shell action's.
    assert sorted(e["key"]["id"] for e in rows["public.invoices"]) == [2, 12, 22, 32]
    assert {(e["op"], e["action"]) for e in rows["public.invoices"]} == {("delete", 1)}
    assert len(rows["public.invoice_lines"]) == 8
    assert {e["action"] for e in rows["public.invoice_lines"]} == {1}
    assert [(e["op"], e["action"]) for e in rows["public.history"]] == [("insert", 1)] * 4


def test_a_cascade_that_breaks_a_policy_is_undone_whole(shop_repo: Path, cascading: str
                                                        ) -> None:
    cfg = config(shop_repo, cascading, """
  - id: paid-invoices-stay
    rows: {table: invoices, op: delete, where: {status: paid}}
""")
    with Episode(cfg) as episode:
        before = {table: count(episode, f"SELECT count(*) FROM {table}")
                  for table in ("customers", "invoices", "invoice_lines", "history")}
        # Customer 2's invoice 21 is paid: deleting the customer cascades to it.
        result = episode.act({"tool": "db_mutate", "parameters": {
            "sql": "DELETE FROM customers WHERE id = 2"}})
        assert result.refusal is not None and result.refusal.rule == "paid-invoices-stay"
        assert "delete public.invoices (id=21)" in result.refusal.reason
        after = {table: count(episode, f"SELECT count(*) FROM {table}") for table in before}
        assert after == before
        # A customer without paid invoices may go.
        assert episode.act({"tool": "db_mutate", "parameters": {
            "sql": "DELETE FROM customers WHERE id = 3"}}).status == "ok"
        changes = episode.close()
    assert changes.rows is not None
    assert sorted(changes.rows.tables) == ["public.customers", "public.history",
                                           "public.invoice_lines", "public.invoices"]
    assert {e["action"] for entries in changes.attribution.values() for e in entries} == {1}
    deleted = [row["id"] for row in changes.rows.tables["public.customers"].deleted]
    assert deleted == [3]


def test_column_predicates_fire_on_before_and_after_images(shop_repo: Path, cascading: str
                                                           ) -> None:
    cfg = config(shop_repo, cascading, """
  - id: email-never-updated
    rows: {table: customers, changes: [email]}
  - id: no-downgrade
    rows: {table: customers, op: update, where: {tier: gold}, where_after: {tier: basic}}
  - id: few-gold
    decision: warn
    rows: {table: customers, where_after: {tier: gold}, more_than: 1}
""")
    with Episode(cfg) as episode:
        def mutate(sql: str) -> Any:
            return episode.act({"tool": "db_mutate", "parameters": {"sql": sql}})

        assert mutate("UPDATE customers SET tier = 'basic' WHERE id = 1").status == "ok"
        email = mutate("UPDATE customers SET email = 'x@example.com' WHERE id = 2")
        assert email.refusal is not None and email.refusal.rule == "email-never-updated"
        downgrade = mutate("UPDATE customers SET tier = 'basic' WHERE id IN (3, 4)")
        assert downgrade.refusal is not None and downgrade.refusal.rule == "no-downgrade"
        assert "customers (id=4)" in downgrade.refusal.reason
        assert "id=3" not in downgrade.refusal.reason  # 3 was basic already
        upgrade = mutate("UPDATE customers SET tier = 'gold' WHERE id IN (1, 3)")
        assert upgrade.status == "ok"
        assert [w["policy"] for w in upgrade.output["effects_warned"]] == ["few-gold"]
        assert count(episode, "SELECT count(*) FROM customers WHERE email = 'x@example.com'"
                     ) == 0
        assert count(episode, "SELECT count(*) FROM customers WHERE tier = 'gold'") == 7
        changes = episode.close()
    updated = sorted(u.key["id"] for u in changes.rows.tables["public.customers"].updated
                     ) if changes.rows else []
    assert updated == [1, 3]


def test_an_undone_action_leaves_no_file_commit_or_branch_behind(shop_repo: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), """
  - id: no-ci
    files: {path: ".github/**"}
  - id: no-release
    commits: {branch: "^release/"}
""")
    with Episode(cfg) as episode:
        kept = episode.act({"tool": "write_file", "parameters": {"path": "NOTES.md",
                                                                 "content": "keep\n"}})
        assert kept.status == "ok"
        assert episode.act({"tool": "git_commit", "parameters": {"message": "notes"}}
                           ).status == "ok"
        episode.act({"tool": "write_file", "parameters": {"path": "draft.txt",
                                                          "content": "draft\n"}})
        head = episode.sandbox.workspace.head()
        ci = episode.act({"tool": "shell_exec", "parameters": {"command": (
            "mkdir -p .github/workflows && echo x > .github/workflows/ci.yml && "
            "echo y > shop/new.py && chmod +x shop/orders.py && git add -A && "
            "git commit -qm ci && git branch side && git tag t1 && rm README.md")}})
        assert ci.refusal is not None and ci.refusal.rule == "no-ci", ci.output
        state = episode.act({"tool": "shell_exec", "parameters": {"command": (
            "git rev-parse HEAD; git branch --format='%(refname:short)'; git tag; "
            "git status --porcelain; test -x shop/orders.py && echo exec; "
            "test -f README.md && echo readme")}})
        lines = state.output["stdout"].splitlines()
        assert lines[0] == head
        assert "side" not in lines and "t1" not in lines
        assert "?? draft.txt" in lines and "exec" not in lines and "readme" in lines
        other = episode.act({"tool": "shell_exec", "parameters": {"command": (
            "git checkout -q -b release/1 && echo z > z.txt && git add z.txt && "
            "git commit -qm z")}})
        assert other.refusal is not None and other.refusal.rule == "no-release", other.output
        assert "release/1" in json.dumps(other.output["effects"])
        back = episode.act({"tool": "shell_exec", "parameters": {
            "command": "git branch --show-current; git branch --list 'release/*'"}})
        assert back.output["stdout"].splitlines() == [episode.sandbox.workspace.branch]
        changes = episode.close()
    assert [c.message for c in changes.workspace.commits] == ["notes"]
    assert [f.path for f in changes.workspace.files] == ["NOTES.md"]


def test_the_same_policy_file_gives_the_same_verdict_in_an_episode_at_promotion_and_in_the_gate(
        shop_repo: Path, tmp_path: Path, target_server: ServerAddress) -> None:
    policy = PAID_ORDERS_STAY
    delete = ("DELETE FROM order_lines WHERE order_id = 1; "  # order 1 is paid
              "DELETE FROM orders WHERE id = 1;")
    seeded = target_server.fresh_database("effects_verdict")
    target_server.run_script(fixture_seed("shop"), "effects_verdict")
    before = fingerprint(shop_repo)
    # In an episode: refused and undone.
    with Episode(config(shop_repo, seeded, policy)) as episode:
        refused = episode.act({"tool": "db_mutate", "parameters": {"sql": delete}})
        assert refused.refusal is not None and refused.refusal.rule == "paid-orders-stay"
        episode.close()
    # At promotion: the same delete, made where no policy judged it, is refused by it.
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(shop_repo), str(remote)], check=True)
    unjudged = config(remote, seeded, dry_run=False)
    judged = config(remote, seeded, policy, dry_run=False)
    with Episode(unjudged) as episode:
        assert episode.act({"tool": "db_mutate", "parameters": {"sql": delete}}).status == "ok"
        changes = episode.close()
        result = promote(changes, judged)
    assert result.outcome == "refused"
    assert [v.limit for v in result.violations] == ["effects[paid-orders-stay]"]
    with psycopg.connect(seeded) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE id = 1").fetchone() == (1,)
    # In the gate with --db: a migration doing it fails the rehearsal naming the policy.
    repo = tmp_path / "pr"
    subprocess.run(["git", "clone", "-q", str(shop_repo), str(repo)], check=True)
    git(repo, "checkout", "-q", "-b", "agent/pr")
    (repo / "migrations").mkdir(exist_ok=True)
    (repo / "migrations" / "009_prune.sql").write_text(delete + "\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "prune")
    gate_config = tmp_path / "gate.yaml"
    gate_config.write_text(f"""
orchestrator: {{blast_radius: {{max_database_rows: 5000, max_commits: 5}}}}
gate:
  migrate: "psql -v ON_ERROR_STOP=1 -q -f migrations/009_prune.sql"
effects:{policy}""")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "gate", "--repo", str(repo),
                           "--base", "main", "--head", "agent/pr", "--config", str(gate_config),
                           "--db", seeded, "--json"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert not checks["database-rehearsal"]["passed"]
    assert any(d.startswith("effects[paid-orders-stay]: paid orders are never deleted")
               for d in checks["database-rehearsal"]["details"])
    assert checks["limits"]["passed"]
    assert fingerprint(shop_repo) == before


def test_undo_puts_back_the_state_before_the_action_not_the_snapshot(
        shop_repo: Path, cascading: str) -> None:
    cfg = config(shop_repo, cascading, """
  - id: no-platinum
    rows: {table: customers, where_after: {tier: platinum}}
""")
    with Episode(cfg) as episode:
        def mutate(sql: str) -> Any:
            return episode.act({"tool": "db_mutate", "parameters": {"sql": sql}})

        assert mutate("UPDATE customers SET tier = 'silver' WHERE id = 1").status == "ok"
        assert mutate("INSERT INTO customers VALUES (11, 'n@example.com', 'basic')"
                      ).status == "ok"
        refused = mutate("UPDATE customers SET tier = 'platinum', email = 'p@example.com' "
                         "WHERE id IN (1, 11); INSERT INTO customers VALUES "
                         "(12, 'q@example.com', 'platinum')")
        assert refused.refusal is not None and refused.refusal.rule == "no-platinum"
        database = episode.sandbox.database
        assert database is not None
        with database.connect_as_owner(options=PUBLIC) as conn:
            rows = conn.execute("SELECT id, email, tier FROM customers WHERE id IN (1, 11, 12) "
                                "ORDER BY id").fetchall()
        assert rows == [(1, "c1@example.com", "silver"), (11, "n@example.com", "basic")]
        changes = episode.close()
    assert {e["action"] for e in changes.attribution["public.customers"]} == {0, 1}


def test_a_truncate_and_a_write_through_a_partition_are_caught_and_undone(
        shop_repo: Path, cascading: str) -> None:
    cfg = config(shop_repo, cascading, """
  - id: payments-stay
    rows: {table: events, op: delete, where: {kind: payment}}
  - id: lines-stay
    rows: {table: invoice_lines, op: delete, more_than: 10}
""")
    with Episode(cfg) as episode:
        before = count(episode, "SELECT count(*) FROM events")
        # A partition named directly: the rows are the partitioned table's.
        through = episode.act({"tool": "shell_exec", "parameters": {
            "command": "psql -q -c \"DELETE FROM events_2025 WHERE id < 20\""}})
        assert through.refusal is not None and through.refusal.rule == "payments-stay", \
            through.output
        assert "public.events" in through.refusal.reason
        assert count(episode, "SELECT count(*) FROM events_2025") == \
            count(episode, "SELECT count(*) FROM events WHERE at < '2026-01-01'")
        assert count(episode, "SELECT count(*) FROM events") == before
        truncated = psql_behind_python(episode, "TRUNCATE invoice_lines")
        assert truncated.refusal is not None and truncated.refusal.rule == "lines-stay", \
            truncated.output
        assert count(episode, "SELECT count(*) FROM invoice_lines") == 80
        changes = episode.close()
    assert changes.rows is not None and changes.rows.tables == {}


def test_a_dropped_table_breaks_a_row_policy_and_the_refusal_says_the_drop_stays(
        shop_repo: Path, cascading: str) -> None:
    cfg = config(shop_repo, cascading, """
  - id: invoices-stay
    rows: {table: invoice_lines, op: delete, more_than: 1000}
""", allow_ddl=True)
    with Episode(cfg) as episode:
        dropped = psql_behind_python(episode, "DROP TABLE invoice_lines")
        assert dropped.refusal is not None and dropped.refusal.rule == "invoices-stay", \
            dropped.output
        assert "drop public.invoice_lines (every row)" in dropped.refusal.reason
        assert "its schema changes stay" in dropped.refusal.reason
        assert dropped.output["undone"]["schema_changes"] == ["DROP TABLE invoice_lines"]
        # Without the undo of the drop, the script stays (it was its own action).
        assert count(episode, "SELECT count(*) FROM pg_tables WHERE tablename = "
                              "'invoice_lines'") == 0
        episode.close()


def test_git_configuration_planted_by_the_agent_neither_hides_effects_nor_runs_on_the_host(
        shop_repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "filter-ran-on-the-host"
    cfg = config(shop_repo, str(fixture_seed("shop")), """
  - id: no-ci
    files: {path: ".github/**"}
""")
    with Episode(cfg) as episode:
        planted = behind_python(episode, (
            f"git config filter.hide.clean 'touch {marker}; cat /dev/null' && "
            f"git config filter.hide.smudge 'touch {marker}; cat' && "
            "git config core.fsmonitor 'printf \"\"' && "
            "echo '* filter=hide' > .git/info/attributes && "
            "echo '.github/' >> .git/info/exclude && echo ok"))
        assert planted.output["stdout"] == "ok\n", planted.output
        assert episode.act({"tool": "git_commit", "parameters": {"message": "runner"}}
                           ).status == "ok"
        hidden = behind_python(episode, (
            "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/ci.yml && "
            "git add -f .github && git commit -qm ci && echo 'RATE = 9' >> shop/orders.py"))
        assert hidden.refusal is not None and hidden.refusal.rule == "no-ci", hidden.output
        assert hidden.output["undone"]["workspace"] == "restored"
        after = episode.act({"tool": "shell_exec", "parameters": {"command": (
            "test -e .github/workflows/ci.yml && echo present; git log --format=%s -1; "
            "grep -c 'RATE = 9' shop/orders.py || true")}})
        assert after.output["stdout"].splitlines() == ["runner", "0"], after.output
        episode.close()
    assert not marker.exists()


# ---------------------------------------------------------------- red team

PLANTED = """
CREATE TABLE escalations (who text);
CREATE FUNCTION probe() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        INSERT INTO escalations VALUES (current_user);
    END IF;
    RETURN true;
END $$;
ALTER TABLE orders ADD CONSTRAINT planted CHECK (probe());
CREATE FUNCTION noisy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM probe(); RETURN NEW; END $$;
CREATE TRIGGER noisy BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION noisy();
ALTER TABLE orders ENABLE ALWAYS TRIGGER noisy;
"""


def test_what_the_agent_planted_runs_with_its_own_rights_when_its_action_is_undone(
        shop_repo: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), PAID_ORDERS_STAY, allow_ddl=True)
    with Episode(cfg) as episode:
        planted = psql_behind_python(episode, PLANTED)
        assert planted.status == "ok", planted.output
        paid = count(episode, "SELECT count(*) FROM orders WHERE status = 'paid'")
        refused = psql_behind_python(episode, "DELETE FROM order_lines WHERE order_id = 1; "
                                              "DELETE FROM orders WHERE id = 1")
        assert refused.refusal is not None and refused.refusal.rule == "paid-orders-stay"
        assert refused.output["undone"]["rows"] == 4, refused.output
        # The CHECK and the ALWAYS trigger ran during the undo, as the undo role.
        assert count(episode, "SELECT count(*) FROM orders WHERE status = 'paid'") == paid
        assert count(episode, "SELECT count(*) FROM escalations") == 0
        episode.close()


def test_a_cast_to_json_cannot_be_made_so_the_capture_never_runs_agent_code(
        shop_repo: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), PAID_ORDERS_STAY, allow_ddl=True)
    with Episode(cfg) as episode:
        cast = behind_python(episode, "psql -v ON_ERROR_STOP=1 -q -c " + shlex.quote(
            "CREATE TYPE mood AS ENUM ('ok'); CREATE FUNCTION mood_json(mood) RETURNS json "
            "LANGUAGE sql AS $$ SELECT to_json(current_user) $$; "
            "CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood)") +
            " 2>&1; echo exit=$?")
        assert "a cast to json or jsonb through a function cannot be made" in \
            cast.output["stdout"], cast.output
        database = episode.sandbox.database
        assert database is not None
        with database.connect_as_owner(options=PUBLIC) as conn:
            assert conn.execute("SELECT count(*) FROM pg_cast WHERE casttarget = "
                                "'json'::regtype AND castsource >= 16384").fetchone() == (0,)
        episode.close()


def test_a_lock_or_a_process_left_behind_cannot_hold_the_undo_or_act_later(
        shop_repo: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), PAID_ORDERS_STAY)
    with Episode(cfg) as episode:
        paid = count(episode, "SELECT count(*) FROM orders WHERE status = 'paid'")
        started = time.monotonic()
        held = behind_python(episode, (
            "psql -q -c \"DELETE FROM order_lines WHERE order_id = 1; "
            "DELETE FROM orders WHERE id = 1\" && "
            "(setsid nohup psql -q -c 'BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; "
            "SELECT pg_sleep(120)' >/dev/null 2>&1 &) && "
            "(setsid nohup bash -c 'while [ ! -e /tmp/go ]; do sleep 0.2; done; "
            "psql -q -c \"DELETE FROM order_lines; "
            "DELETE FROM orders WHERE status <> \\x27open\\x27\"' >/dev/null 2>&1 &) && "
            "sleep 1"))
        assert held.refusal is not None and held.refusal.rule == "paid-orders-stay", \
            held.output
        assert held.output["undone"]["rows"] == 4
        assert held.output["sessions_ended"] >= 1 and held.output["background_ended"] >= 1
        assert time.monotonic() - started < 60
        # The background writer waits for this file: had it survived, it would strike now
        # (and this action would be refused for it).
        go = episode.act({"tool": "shell_exec", "parameters": {"command": "touch /tmp/go"}})
        assert go.refusal is None, go.output
        time.sleep(2)
        assert count(episode, "SELECT count(*) FROM orders WHERE status = 'paid'") == paid
        prepared = behind_python(episode, "psql -q -c " + shlex.quote(
            "BEGIN; DELETE FROM order_lines WHERE order_id = 1; PREPARE TRANSACTION 'x'") +
            " 2>&1")
        assert "prepared transactions are disabled" in prepared.output["stdout"]
        changes = episode.close()
    assert changes.rows is not None and changes.rows.rows == 0


def test_a_nested_repository_neither_breaks_the_recorder_nor_survives_an_undo(
        shop_repo: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), PAID_ORDERS_STAY)
    with Episode(cfg) as episode:
        assert episode.act({"tool": "shell_exec", "parameters": {
            "command": "mkdir -p keep/repo && git -C keep/repo init -q"}}).status == "ok"
        nested = psql_behind_python(episode, "DELETE FROM order_lines WHERE order_id = 1; "
                                             "DELETE FROM orders WHERE id = 1")
        assert nested.refusal is not None, nested.output
        both = behind_python(episode, (
            "mkdir -p vendor/x && git -C vendor/x init -q && "
            "psql -q -c \"DELETE FROM order_lines WHERE order_id = 1; "
            "DELETE FROM orders WHERE id = 1\""))
        assert both.refusal is not None and both.refusal.rule == "paid-orders-stay", \
            both.output
        assert both.output["undone"]["workspace"] == "restored", both.output
        left = episode.act({"tool": "shell_exec", "parameters": {
            "command": "test -d vendor/x && echo vendor; test -d keep/repo/.git && echo keep"}})
        assert left.output["stdout"] == "keep\n"
        episode.close()


def test_paths_git_would_quote_are_judged_as_they_are_in_the_episode_and_at_promotion(
        shop_repo: Path) -> None:
    policy = """
  - id: no-ci
    files: {path: ".github/**"}
"""
    make = ("mkdir -p .github/workflows && echo 'on: push' > .github/workflows/déploy.yml && "
            "printf 'x\\n' > .github/workflows/t$'\\t'ab.yml && git add -A && git commit -qm ci")
    with Episode(config(shop_repo, str(fixture_seed("shop")), policy)) as episode:
        caught = behind_python(episode, make)
        assert caught.refusal is not None and caught.refusal.rule == "no-ci", caught.output
        assert "déploy.yml" in caught.refusal.reason
        episode.close()
    with Episode(config(shop_repo, str(fixture_seed("shop")))) as episode:
        assert behind_python(episode, make).status == "ok"
        changes = episode.close()
    paths = sorted(f.path for f in changes.workspace.files)
    assert paths[:2] == [".github/workflows/déploy.yml", ".github/workflows/t\tab.yml"]
    found = check_limits(changes, config(shop_repo, str(fixture_seed("shop")), policy))
    assert [(v.limit, v.actual) for v in found] == [("effects[no-ci]", 2)]


def test_the_agents_git_settings_do_not_shape_the_change_set(shop_repo: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), """
  - id: no-wip
    commits: {message: "^WIP"}
  - id: small
    files: {lines_more_than: 50}
""")
    with Episode(cfg) as episode:
        setup = behind_python(episode, (
            "echo '* -diff' >> .git/info/attributes && echo '* -diff' > .gitattributes && "
            "git config i18n.logOutputEncoding IBM037 && git add .gitattributes && "
            "git commit -qm attributes"))
        assert setup.status == "ok", setup.output
        big = behind_python(episode, "seq 1 90 > numbers.txt && git add numbers.txt && "
                                     "git commit -qm 'WIP: numbers'")
        assert big.refusal is not None and big.refusal.rule in ("no-wip", "small"), big.output
        assert {b["policy"] for b in big.output["effects"]} == {"no-wip", "small"}
        episode.close()
    with Episode(config(shop_repo, str(fixture_seed("shop")))) as episode:
        behind_python(episode, (
            "echo '* -diff' >> .git/info/attributes && echo '* -diff' > .gitattributes && "
            "git config i18n.logOutputEncoding IBM037 && seq 1 90 > numbers.txt && "
            "git add -A && git commit -qm 'WIP: numbers'"))
        changes = episode.close()
    counted = {f.path: (f.added, f.binary) for f in changes.workspace.files}
    assert counted["numbers.txt"] == (90, False)
    assert [c.message for c in changes.workspace.commits] == ["WIP: numbers"]
    assert "+90" in changes.workspace.diff or "\n+90\n" in changes.workspace.diff


def test_a_renamed_table_or_a_changed_key_does_not_dodge_a_policy(shop_repo: Path) -> None:
    cfg = config(shop_repo, str(fixture_seed("shop")), PAID_ORDERS_STAY + """
  - id: email-never-updated
    rows: {table: users, changes: [email]}
""", allow_ddl=True)
    with Episode(cfg) as episode:
        renamed = psql_behind_python(episode, "ALTER TABLE orders RENAME TO orders_archive")
        assert renamed.status == "ok", renamed.output
        deleted = psql_behind_python(episode, "DELETE FROM order_lines WHERE order_id = 1; "
                                              "DELETE FROM orders_archive WHERE id = 1")
        assert deleted.refusal is not None and deleted.refusal.rule == "paid-orders-stay", \
            deleted.output
        added = psql_behind_python(episode, "INSERT INTO users (id, email) "
                                            "VALUES (999, 'new@example.com')")
        assert added.status == "ok", added.output
        rekeyed = psql_behind_python(episode, "UPDATE users SET id = 5000, "
                                              "email = 'evil@example.com' WHERE id = 999")
        assert rekeyed.refusal is not None, rekeyed.output
        assert rekeyed.refusal.rule == "email-never-updated"
        episode.close()
