"""Masking: the real values of masked columns never reach a sandbox (rows, statistics,
materialized views, a dump of the whole database), the masks are deterministic and keep
the columns' formats, bad rules are refused by name, and promotion neither writes a mask
to the target nor trips over masked before-images."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.config import parse_config
from harness.episode import Episode
from harness.errors import SandboxError
from harness.promote import promote, revert
from harness.sandbox.database import SandboxDatabase, open_baseline
from harness.sandbox.masking import MASKED
from harness.sandbox.postgres import ServerAddress, client_environment, client_tool
from tests.fix_pg import application_role

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

SCHEMA = """
CREATE TABLE customers (
    id int PRIMARY KEY,
    email text NOT NULL UNIQUE CHECK (email LIKE '%@%.%'),
    phone varchar(20),
    ssn char(11),
    born date,
    salary numeric(10, 2),
    pin int4,
    note text,
    token uuid,
    photo bytea,
    profile jsonb,
    credit int NOT NULL DEFAULT 0,
    email_lower text GENERATED ALWAYS AS (lower(email)) STORED
);
CREATE TABLE contacts (id serial PRIMARY KEY, customer int REFERENCES customers,
                       email text);
CREATE TABLE audit (id serial PRIMARY KEY, what text);
CREATE FUNCTION audit_customers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (what) VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER customers_audit AFTER UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION audit_customers();
CREATE TABLE payments (id int, paid date, card text, PRIMARY KEY (id, paid))
    PARTITION BY RANGE (paid);
CREATE TABLE payments_2024 PARTITION OF payments
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE payments_2025 PARTITION OF payments
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE people (id int PRIMARY KEY, name text);
CREATE TABLE staff (badge text) INHERITS (people);
CREATE MATERIALIZED VIEW customer_emails AS SELECT id, email FROM customers;
INSERT INTO customers (id, email, phone, ssn, born, salary, pin, note, token, photo,
                       profile, credit)
SELECT i, 'person' || i || '@realmail.example.org', '+1-555-' || lpad(i::text, 4, '0'),
       lpad(i::text, 3, '0') || '-44-' || lpad(i::text, 4, '0'),
       date '1980-01-01' + i, 1000.50 + i, 1000 + i, 'private note ' || i,
       md5(i::text)::uuid, convert_to('photo' || i, 'UTF8'),
       jsonb_build_object('secret', 'profile' || i), i
FROM generate_series(1, 300) i;
INSERT INTO contacts (customer, email) SELECT i, 'person' || i || '@realmail.example.org'
FROM generate_series(1, 50) i;
INSERT INTO payments SELECT i, date '2024-06-01' + i, '4111-1111-1111-' || lpad(i::text, 4, '0')
FROM generate_series(1, 300) i;
INSERT INTO people VALUES (1, 'Alice Realname');
INSERT INTO staff VALUES (2, 'Bob Realname', 'B-7');
ANALYZE;
"""

MASK = """
      customers.email: fake
      customers.phone: fake
      customers.ssn: hash
      customers.born: fake
      customers.salary: fake
      customers.pin: fake
      customers.note: null
      customers.token: hash
      customers.photo: hash
      customers.profile: hash
      contacts.email: fake
      public.payments.card: fake
      people.name: {fixed: "A. Person"}
"""
REAL = re.compile(r"realmail|\+1-555-0[0-3]\d\d|private note|4111-1111|Realname|profile\d")


@pytest.fixture(autouse=True)
def _fixed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """One key for every run: the masks (and so these assertions) are the same each time."""
    monkeypatch.setenv("HARNESS_MASK_KEY", "test-key-0f1e2d3c")


@pytest.fixture()
def database(target_server: ServerAddress, request: pytest.FixtureRequest) -> str:
    name = "mask_" + re.sub(r"\W", "_", request.node.name[:40].lower())
    target_server.fresh_database(name)
    with target_server.connect(name) as conn:
        conn.execute(SCHEMA)
    return name


@pytest.fixture()
def source(target_server: ServerAddress, database: str) -> str:
    """The database as its superuser: what the baseline is copied from."""
    return target_server.conninfo(database)


@pytest.fixture()
def target(target_server: ServerAddress, database: str) -> str:
    """The same database as an application role: what promotion writes with."""
    return application_role(target_server, database, replication_role=True)


def _settings(mask: str = MASK) -> Any:
    return parse_config(f"sandbox:\n  database:\n    mask:\n{mask}").sandbox.database


def _dump(server: ServerAddress, dbname: str) -> str:
    done = subprocess.run([client_tool("pg_dump"), "-h", str(server.socket_dir), "-U",
                           server.user, "-d", dbname], capture_output=True, text=True,
                          env=client_environment(server.password), check=True)
    return done.stdout


def test_no_real_value_of_a_masked_column_reaches_the_sandbox(source: str) -> None:
    server, baseline = open_baseline(source, _settings(), refresh=True)
    assert baseline.masked["public.customers"] == sorted(
        ["email", "phone", "ssn", "born", "salary", "pin", "note", "token", "photo", "profile",
         "email_lower"])
    assert "public.staff" in baseline.masked, "an inheritance child is masked with its parent"
    sandbox = SandboxDatabase(server, baseline, "hx-mask-test").create()
    try:
        with sandbox.connect() as conn:
            everything = json.dumps([conn.execute(f"SELECT json_agg(t) FROM {t} t").fetchone()
                                     for t in ("customers", "contacts", "payments", "people",
                                               "staff", "customer_emails")])
            statistics = json.dumps(conn.execute(
                "SELECT json_agg(s) FROM pg_stats s WHERE schemaname = 'public'").fetchone(),
                default=str)
            assert conn.execute("SELECT count(*) FROM audit").fetchone() == (0,), \
                "the user's triggers did not fire while masking"
            rows = conn.execute("SELECT email, phone, ssn, born, salary, pin, note, token, "
                                "credit, email_lower FROM customers ORDER BY id").fetchall()
            contact = conn.execute("SELECT email FROM contacts WHERE customer = 7").fetchone()
            people = conn.execute("SELECT name FROM people ORDER BY id").fetchall()
        assert not REAL.search(everything), REAL.search(everything)
        assert not REAL.search(statistics), "pg_stats was renewed after masking"
        assert not REAL.search(_dump(server, sandbox.name))
        assert _files_with_real_values(server, sandbox.name) == [], \
            "no old row version, index entry or TOAST chunk keeps a real value on disk"
        email, phone, ssn, born, salary, pin, note, token, credit, lower = rows[6]
        assert re.fullmatch(r"[a-z]+\d+@[a-z]+\.[a-z]+\.[a-z]+", email), email
        assert len(email) == len("person7@realmail.example.org")
        assert re.fullmatch(r"\+\d-\d{3}-\d{4}", phone), phone
        assert re.fullmatch(r"[0-9a-f]{11}", ssn)
        assert born != "1980-01-08" and 1000 <= salary < 10000 and 1000 <= pin <= 9999
        assert note is None and credit == 7 and lower == email.lower()
        assert str(token) != "8f14e45f-ceea-167a-5a36-dedd4bea2543", "md5('7') is masked"
        assert contact == (email,), "the same value masks the same way in every table"
        assert people == [("A. Person",), ("A. Person",)]
        assert len({r[0] for r in rows}) == 300, "a unique column stays unique"
    finally:
        sandbox.drop()
    _, again = open_baseline(source, _settings(), refresh=True)
    again_db = SandboxDatabase(server, again, "hx-mask-again").create()
    try:
        with again_db.connect() as conn:
            assert conn.execute("SELECT email FROM customers WHERE id = 7").fetchone() == (email,), \
                "masking is deterministic across builds"
    finally:
        again_db.drop()
    _, unmasked = open_baseline(source)
    assert unmasked.dbname != baseline.dbname and unmasked.masked == {}


def _files_with_real_values(server: ServerAddress, dbname: str) -> list[str]:
    """The database's relation files (tables, indexes, TOAST) whose bytes hold a real value."""
    found = []
    with server.connect(dbname) as conn:
        paths = conn.execute("""
            SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('public', 'pg_toast') AND c.relkind IN ('r', 'i', 't', 'm')
              AND pg_relation_filepath(c.oid) IS NOT NULL""").fetchall()
        for name, path in paths:
            data = conn.execute("SELECT pg_read_binary_file(%s, 0, 1 << 28, true)",
                                (path,)).fetchone()[0] or b""
            if re.search(rb"realmail|4111-1111|private note|Realname", data):
                found.append(name)
    return found


@pytest.mark.parametrize(("mask", "message"), [
    ("      customers.id: hash", "primary or foreign key"),
    ("      contacts.customer: fake", "primary or foreign key"),
    ("      customers.email: \"null\"", "NOT NULL"),
    ("      customers.born: hash", "hash cannot keep the type date"),
    ("      customers.nope: fake", "has no column nope"),
    ("      nowhere.email: fake", "there is no table public.nowhere"),
    ("      payments_2024.card: fake", "is a partition"),
    ("      customers.email_lower: fake", "generated column"),
    ("      customers.credit: {fixed: lots}", "do not fit"),
])
def test_a_rule_that_cannot_apply_is_refused_by_name(source: str, mask: str, message: str
                                                     ) -> None:
    with pytest.raises(SandboxError, match=message) as refused:
        open_baseline(source, _settings(mask), refresh=True)
    assert "sandbox.database.mask" in str(refused.value)


def _episode(tmp_path: Path, repo: Path, source: str, target: str, actions: list[Any],
             **blast: Any) -> Any:
    limits = {"max_commits": 3, "max_database_rows": 50, "dry_run": False, **blast}
    config = parse_config(f"""
orchestrator:
  blast_radius: {json.dumps(limits)}
guardrails:
  builtin: {{sql.rename: warn}}  # renames ask for approval; these tests give it
sandbox:
  database:
    mask:
{MASK}
target:
  repo: {repo}
  database: "{target}"
""")
    config = config.model_copy(update={"target": config.target.model_copy(
        update={"database": source})})
    with Episode(config, trace_path=tmp_path / "trace.jsonl") as episode:
        results = [episode.act({"tool": "db_mutate", "parameters": {"sql": a}})
                   for a in actions]
        assert all(r.status == "ok" for r in results), [r.to_dict() for r in results]
        changes = episode.close()
    promoting = config.model_copy(update={"target": config.target.model_copy(
        update={"database": target})})
    return changes, promoting


def test_promotion_ignores_masked_before_images_and_never_writes_a_mask(
        source: str, target: str, shop_repo: Path, tmp_path: Path) -> None:
    changes, config = _episode(tmp_path, shop_repo, source, target, [
        "UPDATE customers SET credit = credit + 100 WHERE id IN (1, 2)",
        "DELETE FROM contacts WHERE customer = 3",
        "INSERT INTO customers (id, email, credit) VALUES (1000, 'placeholder@x.y', 5)",
    ])
    table = changes.rows.tables["public.customers"]
    assert "email" in table.masked
    refused = promote(changes, config)
    assert refused.outcome == "refused"
    assert [v.limit for v in refused.violations] == ["masked_columns"]
    assert "1 row(s) of public.customers write the masked column(s) email" in \
        refused.violations[0].detail

    changes, config = _episode(tmp_path, shop_repo, source, target, [
        "UPDATE customers SET credit = credit + 100 WHERE id IN (1, 2)",
        "DELETE FROM contacts WHERE customer = 3",
    ])
    with psycopg.connect(target) as conn:
        before = conn.execute("SELECT id, email, phone, note FROM customers WHERE id IN (1, 2) "
                              "ORDER BY id").fetchall()
        contact = conn.execute("SELECT * FROM contacts WHERE customer = 3").fetchall()
    done = promote(changes, config)
    assert done.outcome == "promoted", json.dumps(done.to_dict()["conflicts"], default=str)
    with psycopg.connect(target) as conn:
        after = conn.execute("SELECT id, email, phone, note, credit FROM customers "
                             "WHERE id IN (1, 2) ORDER BY id").fetchall()
        assert [r[:4] for r in after] == before, "the real values stay; no mask was written"
        assert [r[4] for r in after] == [101, 102]
        assert conn.execute("SELECT count(*) FROM contacts WHERE customer = 3").fetchone() == (0,)
    reverted = revert(Path(done.receipt or ""))
    assert reverted.outcome == "reverted", reverted.to_dict()
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT * FROM contacts WHERE customer = 3").fetchall() == contact, \
            "the deleted row comes back with its real (unmasked) values"


def test_renaming_a_masked_column_does_not_unmask_it(
        source: str, target: str, shop_repo: Path, tmp_path: Path) -> None:
    changes, config = _episode(tmp_path, shop_repo, source, target, [
        "ALTER TABLE customers RENAME COLUMN phone TO telephone",
        "ALTER TABLE customers RENAME TO clients",
        "UPDATE clients SET telephone = '+1-555-0000' WHERE id = 4",
    ], allow_ddl=True)
    table = changes.rows.tables["public.clients"]
    assert "telephone" in table.masked
    result = promote(changes, config)
    assert result.outcome == "refused"
    assert any(v.limit == "masked_columns" for v in result.violations)


def test_a_conflict_never_shows_a_masked_columns_real_value(
        source: str, target: str, shop_repo: Path, tmp_path: Path) -> None:
    changes, config = _episode(tmp_path, shop_repo, source, target, [
        "UPDATE customers SET credit = 0 WHERE id = 5"])
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE customers SET credit = 77 WHERE id = 5")
    result = promote(changes, config)
    assert result.outcome == "conflict"
    shown = json.dumps(result.to_dict(), default=str)
    assert "realmail" not in shown and MASKED in shown
