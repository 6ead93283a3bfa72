"""Table names: parsed as PostgreSQL reads them, written as its catalogue does, matched
against configured entries one way everywhere."""

from __future__ import annotations

import pytest

from harness.tables import TableName


@pytest.mark.parametrize(("text", "schema", "name"), [
    ("orders", None, "orders"), ("Orders", None, "orders"), ("public.orders", "public", "orders"),
    ('"Sales"."Order.Items"', "Sales", "Order.Items"), (' app . "x""y" ', "app", 'x"y'),
    ("db.public.orders", "public", "orders"), ('"order"', None, "order"),
])
def test_names_parse_as_postgresql_reads_them(text: str, schema: str | None, name: str) -> None:
    assert TableName.parse(text) == TableName(schema, name)


@pytest.mark.parametrize("text", ["", ".", "a..b", '"open', "a b", "a.", "a.b c"])
def test_what_is_no_table_name_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a table name"):
        TableName.parse(text)


@pytest.mark.parametrize(("name", "qualified", "display"), [
    (TableName(None, "orders"), "public.orders", "public.orders"),
    (TableName("sales", "order"), 'sales."order"', "sales.order"),
    (TableName("Sales", "order.items"), '"Sales"."order.items"', "Sales.order.items"),
    (TableName("app", 'x"y'), 'app."x""y"', 'app.x"y'),
    (TableName("app", "user_2$"), "app.user_2$", "app.user_2$"),
    (TableName("app", "2fa"), 'app."2fa"', "app.2fa"),
])
def test_the_canonical_form_is_the_catalogues(name: TableName, qualified: str,
                                              display: str) -> None:
    assert (name.qualified, name.display) == (qualified, display)


@pytest.mark.parametrize(("table", "entries", "entry"), [
    ("public.users", ["users"], "users"),
    ("billing.users", ["users"], "users"),
    ("billing.users", ["public.users"], None),
    ("users", ["public.users"], "public.users"),
    ('"Users"', ["users"], "users"),
    ("public.users", ["USERS"], "USERS"),
    ('sales."Audit Log"', ["Audit Log"], "Audit Log"),
    ('sales."Audit Log"', ["sales.Audit Log"], "sales.Audit Log"),
    ('sales."Audit Log"', ["other.Audit Log"], None),
    ("public.orders", ["users", "orders"], "orders"),
    ("public.orders", [], None),
])
def test_a_table_falls_under_a_bare_entry_in_any_schema_and_a_qualified_one_in_its_own(
        table: str, entries: list[str], entry: str | None) -> None:
    assert TableName.parse(table).under(entries) == entry
