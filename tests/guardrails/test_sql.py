"""SQL analysis on PostgreSQL's own parser: statements are classified exactly, whatever the
lexical tricks, and everything a statement runs is seen."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.guardrails.sql import SqlSyntaxError, analyse


def kinds(text: str) -> list[str]:
    return [s.kind for s in analyse(text).statements]


def writes(text: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.kind, s.targets) for top in analyse(text).statements for s in top.walk()
            if s.kind in ("INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "DROP")]


@given(st.text(alphabet=st.characters(blacklist_characters="'\x00",
                                       blacklist_categories=("Cs",)), max_size=200))
def test_any_string_literal_is_one_literal_and_spans_stay_exact(content: str) -> None:
    text = f"SELECT '{content}' AS x; DELETE FROM t WHERE id = 1"
    statements = analyse(text).statements
    assert [s.kind for s in statements] == ["SELECT", "DELETE"]
    assert text[statements[1].span[0] : statements[1].span[1]].strip() == \
        "DELETE FROM t WHERE id = 1"


@pytest.mark.parametrize("text", [
    "SELECT 'a;b' AS x", "SELECT $$ ; DROP TABLE t; $$", "SELECT $tag$ ; $tag$",
    "SELECT 1 -- ; DROP TABLE t", "SELECT /* ; /* nested ; */ ; */ 1", "SELECT E'it\\'s ; x'",
    'SELECT "semi;colon" FROM t', "SELECT a$b FROM t", "SELECT name'x'",
])
def test_semicolons_inside_literals_and_comments_do_not_split(text: str) -> None:
    assert kinds(text) == ["SELECT"]


@pytest.mark.parametrize(("text", "targets"), [
    # An identifier ending in e followed by a quote is not an E'' string.
    ("SELECT name'x'; DELETE FROM users", [("DELETE", ("users",))]),
    # $ inside an identifier does not open a dollar quote.
    ("SELECT a$b$ FROM t; DELETE FROM users", [("DELETE", ("users",))]),
    # U& identifiers are decoded as PostgreSQL decodes them.
    ('UPDATE U&"\\0075sers" SET a = 1', [("UPDATE", ("users",))]),
    ("UPDATE public.\"users\" SET a = 1", [("UPDATE", ("public.users",))]),
    ('UPDATE "Users" SET a = 1', [("UPDATE", ("Users",))]),
    ("DELETE FROM ONLY Users WHERE id = 1", [("DELETE", ("users",))]),
    ("TRUNCATE a, b.c", [("TRUNCATE", ("a", "b.c"))]),
    ("DROP TABLE IF EXISTS x, y CASCADE", [("DROP", ("x", "y"))]),
])
def test_identifiers_are_read_as_postgresql_reads_them(
        text: str, targets: list[tuple[str, tuple[str, ...]]]) -> None:
    assert writes(text) == targets


@pytest.mark.parametrize("text", ["SELECT 'x", "SELECT $$x", "SELECT /* x", 'SELECT "x',
                                  "FROBNICATE x", "DELETE FROM", "((((" * 2000])
def test_what_does_not_parse_raises(text: str) -> None:
    with pytest.raises(SqlSyntaxError):
        analyse(text)


@pytest.mark.parametrize(("text", "every_row"), [
    ("DELETE FROM t WHERE 1=1", True), ("DELETE FROM t WHERE true", True),
    ("DELETE FROM t WHERE id = id", True), ("DELETE FROM t WHERE 1 = 1 OR id = 2", True),
    ("DELETE FROM t WHERE (TRUE) AND 2 > 1", True), ("DELETE FROM t WHERE NOT false", True),
    ("DELETE FROM t WHERE coalesce(true)", True), ("DELETE FROM t WHERE 1 IN (1)", True),
    ("DELETE FROM t WHERE lower('A') = 'a'", True), ("DELETE FROM t WHERE (SELECT true)", True),
    ("DELETE FROM t WHERE s IS NULL OR s IS NOT NULL", True),
    ("DELETE FROM t WHERE id IN (SELECT id FROM t)", True),
    ("DELETE FROM t o USING t o2 WHERE o.id = o2.id", True),
    ("DELETE FROM t WHERE id = 1", False), ("DELETE FROM t WHERE 1 = 1 AND id = 2", False),
    ("DELETE FROM t WHERE 1 = 2 OR id = 2", False), ("DELETE FROM t WHERE a = b", False),
    ("DELETE FROM t WHERE 1 = 0", False), ("DELETE FROM t WHERE id IN (SELECT id FROM u)", False),
    ("DELETE FROM t WHERE deleted_at IS NOT NULL", False),
])
def test_where_clauses_that_select_every_row(text: str, every_row: bool) -> None:
    statement = analyse(text).statements[0]
    assert statement.has_where
    assert statement.where_constant_true is every_row


def test_data_modifying_cte_is_seen_inside_a_select() -> None:
    statement = analyse("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d").statements[0]
    assert statement.kind == "SELECT"
    assert [(n.kind, n.targets, n.has_where) for n in statement.nested] == [
        ("DELETE", ("orders",), False)]
    assert statement.writes


def test_explain_analyze_runs_its_statement_but_plain_explain_does_not() -> None:
    assert analyse("EXPLAIN ANALYZE DELETE FROM t").statements[0].writes
    assert analyse("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t").statements[0].writes
    assert not analyse("EXPLAIN DELETE FROM t").statements[0].writes


def test_merge_that_matches_every_row_deletes_every_row() -> None:
    assert writes("MERGE INTO o USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE") == [
        ("MERGE", ("o",)), ("DELETE", ("o",))]
    assert writes("MERGE INTO o t USING o s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 0"
                  )[1] == ("UPDATE", ("o",))
    assert writes("MERGE INTO o USING s ON o.id = s.id WHEN MATCHED THEN DELETE") == [
        ("MERGE", ("o",))]


def test_bodies_of_do_blocks_and_functions_are_read() -> None:
    do = analyse("DO $$ BEGIN DELETE FROM orders; END $$").statements[0]
    assert [(s.kind, s.has_where, s.deferred) for s in do.walk()][1:] == [
        ("DELETE", False, False)]
    made = analyse("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM o'").statements
    assert [(s.kind, s.deferred) for s in made[0].walk()][1:] == [("DELETE", True)]
    called = analyse("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM o "
                     "RETURNING 1'; SELECT f()").statements
    assert [(s.kind, s.deferred) for s in called[0].walk()][1:] == [("DELETE", False)]


@pytest.mark.parametrize("returns, body, kinds", [
    ("trigger", "BEGIN NEW.seen := now(); RETURN NEW; END", []),
    ("trigger", "BEGIN INSERT INTO audit VALUES (OLD.id); RETURN NULL; END", ["INSERT"]),
    ("int", "BEGIN UPDATE t SET a = 1 WHERE id = 2; RETURN 1; END", ["UPDATE"]),
    ("SETOF int", "BEGIN RETURN NEXT 1; DELETE FROM orders; RETURN; END", ["DELETE"]),
    ("void", "BEGIN DELETE FROM orders WHERE id = 1; END", ["DELETE"]),
])
def test_plpgsql_bodies_parse_whatever_they_return(returns: str, body: str,
                                                   kinds: list[str]) -> None:
    made = analyse(f"CREATE FUNCTION f() RETURNS {returns} LANGUAGE plpgsql "
                   f"AS $$ {body} $$").statements[0]
    walked = list(made.walk())[1:]
    assert [s.kind for s in walked] == kinds
    assert all(s.uncertain is None for s in walked)


def test_dynamic_sql_is_read_with_a_placeholder_and_marked_unknown() -> None:
    do = analyse("DO $$ BEGIN EXECUTE 'DROP TABLE ' || t; END $$").statements[0]
    assert do.uncertain and "run time" in do.uncertain
    assert [(s.kind, s.object_kind) for s in do.walk()][1:] == [("DROP", "TABLE")]
    exact = analyse("DO $$ BEGIN EXECUTE 'TRUNCATE ' || 'orders'; END $$").statements[0]
    assert exact.uncertain is None and [s.kind for s in exact.walk()][1:] == ["TRUNCATE"]


def test_execute_of_a_statement_prepared_elsewhere_is_unknown() -> None:
    here = analyse("PREPARE w AS DELETE FROM o; EXECUTE w").statements
    assert [s.kind for s in here[0].walk()] == ["PREPARE", "DELETE"]
    assert here[1].uncertain is None
    assert analyse("EXECUTE w").statements[0].uncertain


def test_dblink_sql_and_views_are_followed() -> None:
    assert writes("SELECT dblink_exec('dbname=x', 'DELETE FROM users')") == [
        ("DELETE", ("users",))]
    assert writes("CREATE VIEW v AS SELECT * FROM users; DELETE FROM v WHERE id = 1")[0] == (
        "DELETE", ("v", "users"))


def test_statement_kinds() -> None:
    assert kinds("SELECT 1; INSERT INTO t VALUES (1); BEGIN; COMMIT") == [
        "SELECT", "INSERT", "BEGIN", "COMMIT"]
    assert kinds("DO $$ BEGIN END $$") == ["DO"]
    assert kinds("SELECT * INTO t2 FROM t") == ["SELECT INTO"]
    assert kinds("ANALYZE orders; VACUUM t") == ["ANALYZE", "VACUUM"]


@pytest.mark.parametrize("text", [
    "DELETE FROM orders WHERE id IN (SELECT id FROM public.orders)",
    'DELETE FROM public."orders" WHERE id IN (SELECT id FROM ORDERS)',
    "DELETE FROM orders WHERE status IS NOT DISTINCT FROM status",
    "DELETE FROM orders WHERE coalesce(status, 'x') IS NOT NULL",
    "DELETE FROM orders WHERE true AND id IN (SELECT id FROM orders LIMIT ALL OFFSET 0)",
    "DELETE FROM orders WHERE id IN (SELECT k FROM (SELECT id AS k FROM orders) s)",
    "WITH a AS (SELECT id FROM orders) DELETE FROM orders WHERE id IN (SELECT id FROM a)",
    "DELETE FROM orders WHERE id = ANY (ARRAY(SELECT id FROM orders UNION SELECT 0))",
    "DELETE FROM orders o WHERE EXISTS (SELECT 1 FROM orders o2 WHERE o2.id = o.id)",
    "DELETE FROM orders USING public.orders o2 WHERE orders.id = o2.id",
    "MERGE INTO orders t USING (SELECT * FROM orders) s ON t.id = s.id "
    "WHEN MATCHED THEN DELETE",
])
def test_a_where_true_of_every_row_by_another_spelling_is_every_row(text: str) -> None:
    changed = [s for top in analyse(text).statements for s in top.walk()
               if s.kind in ("DELETE", "UPDATE")]
    assert changed and (not changed[0].has_where or changed[0].where_constant_true)


@pytest.mark.parametrize("text", [
    "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE status = 'test')",
    "DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT 10)",
    "DELETE FROM orders WHERE id IN (SELECT id FROM archive.orders)",
    'DELETE FROM orders WHERE id IN (SELECT id FROM "Orders")',
    "DELETE FROM orders o USING orders o2 WHERE o.id < o2.id AND o.ref = o2.ref",
    "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM refunds r WHERE r.order_id = orders.id)",
    "DELETE FROM orders WHERE status IS DISTINCT FROM 'x'",
])
def test_a_where_that_narrows_is_not_every_row(text: str) -> None:
    changed = analyse(text).statements[0]
    assert changed.has_where and not changed.where_constant_true


def test_renames_that_readers_see_are_reported_and_others_are_not() -> None:
    assert analyse("ALTER TABLE orders RENAME COLUMN a TO b").statements[0].renames == \
        "column a of orders"
    assert analyse("ALTER TABLE orders RENAME TO o2").statements[0].renames == "table orders"
    assert analyse("ALTER TABLE orders RENAME CONSTRAINT a TO b").statements[0].renames is None
