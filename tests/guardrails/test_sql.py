"""SQL analysis: masking keeps offsets, statements are classified exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.guardrails.sql import SqlSyntaxError, analyse, fold, mask


def kinds(text: str) -> list[str]:
    return [s.kind for s in analyse(text).statements]


@given(st.text(alphabet=st.characters(blacklist_characters="'\x00"), max_size=200))
def test_masking_keeps_every_offset_and_hides_literal_contents(content: str) -> None:
    text = f"SELECT '{content.replace(chr(39), '')}' AS x; DELETE FROM t WHERE id = 1"
    masked = mask(text)
    assert len(masked) == len(text)
    statements = analyse(text).statements
    assert [s.kind for s in statements] == ["SELECT", "DELETE"]
    assert text[statements[1].span[0] : statements[1].span[1]] == "DELETE FROM t WHERE id = 1"


@given(st.lists(st.integers(min_value=-10**6, max_value=10**6), min_size=2, max_size=300))
def test_folding_a_values_list_keeps_the_statement(values: list[int]) -> None:
    rows = ", ".join(f"({v}, 'x', NULL)" for v in values)
    text = f"INSERT INTO t (a, b, c) VALUES {rows}"
    assert len(fold(mask(text))) < 60
    statement = analyse(text).statements[0]
    assert (statement.kind, statement.targets) == ("INSERT", ("t",))


@pytest.mark.parametrize("text", [
    "SELECT 'a;b' AS x", "SELECT $$ ; DROP TABLE t; $$", "SELECT $tag$ ; $tag$",
    "SELECT 1 -- ; DROP TABLE t", "SELECT /* ; /* nested ; */ ; */ 1", "SELECT E'it\\'s ; x'",
    'SELECT "semi;colon" FROM t',
])
def test_semicolons_inside_literals_and_comments_do_not_split(text: str) -> None:
    assert kinds(text) == ["SELECT"]


@pytest.mark.parametrize("text", ["SELECT 'x", "SELECT $$x", "SELECT /* x", 'SELECT "x'])
def test_unterminated_literals_raise(text: str) -> None:
    with pytest.raises(SqlSyntaxError):
        analyse(text)


@pytest.mark.parametrize(("text", "constant"), [
    ("DELETE FROM t WHERE 1=1", True), ("DELETE FROM t WHERE true", True),
    ("DELETE FROM t WHERE id = id", True), ("DELETE FROM t WHERE 1 = 1 OR id = 2", True),
    ("DELETE FROM t WHERE (TRUE) AND 2 > 1", True), ("DELETE FROM t WHERE NOT false", True),
    ("DELETE FROM t WHERE id = 1", False), ("DELETE FROM t WHERE 1 = 1 AND id = 2", False),
    ("DELETE FROM t WHERE 1 = 2 OR id = 2", False), ("DELETE FROM t WHERE a = b", False),
])
def test_constant_true_where_clauses(text: str, constant: bool) -> None:
    statement = analyse(text).statements[0]
    assert statement.has_where
    assert statement.where_constant_true is constant


def test_data_modifying_cte_is_seen_inside_a_select() -> None:
    statement = analyse("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d").statements[0]
    assert statement.kind == "SELECT"
    assert [(n.kind, n.targets, n.has_where) for n in statement.nested] == [
        ("DELETE", ("orders",), False)]
    assert statement.writes


def test_explain_analyze_runs_its_statement_but_plain_explain_does_not() -> None:
    assert analyse("EXPLAIN ANALYZE DELETE FROM t").statements[0].writes
    assert not analyse("EXPLAIN DELETE FROM t").statements[0].writes


@pytest.mark.parametrize(("text", "targets"), [
    ('UPDATE "Users" SET a = 1 WHERE id = 1', ("Users",)),
    ("UPDATE public.users SET a = 1 WHERE id = 1", ("public.users",)),
    ("DELETE FROM ONLY Users WHERE id = 1", ("users",)),
    ("TRUNCATE a, b.c", ("a", "b.c")),
    ("DROP TABLE IF EXISTS x, y CASCADE", ("x", "y")),
    ("INSERT INTO s.t (a) VALUES (1)", ("s.t",)),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", ("t",)),
    ("COPY t FROM STDIN", ("t",)),
])
def test_targets_are_schema_qualified_and_quoted_names_keep_case(
        text: str, targets: tuple[str, ...]) -> None:
    assert analyse(text).statements[0].targets == targets


def test_statement_kinds() -> None:
    assert kinds("SELECT 1; INSERT INTO t VALUES (1); BEGIN; COMMIT") == [
        "SELECT", "INSERT", "BEGIN", "COMMIT"]
    assert kinds("DO $$ BEGIN END $$") == ["DO"]
    assert kinds("SELECT * INTO t2 FROM t") == ["SELECT INTO"]
    assert kinds("FROBNICATE x") == ["UNKNOWN"]
