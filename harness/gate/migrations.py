"""The SQL a Python migration will run, read from its source without running it: Alembic
operations (`op.execute`, `op.drop_table`, `op.drop_column`, ...), Django operations
(`migrations.RunSQL`, `DeleteModel`, `RemoveField`), and any `.execute(...)` of a string,
so that the gate judges them by the same SQL guardrails as a `.sql` file."""

from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class MigrationStatement:
    """One operation of a migration, as SQL, with the lines its call spans."""

    first_line: int
    last_line: int
    sql: str | None
    """None when the SQL is only known at run time."""
    call: str


_EXECUTES = frozenset({"execute", "exec_driver_sql", "executescript", "RunSQL"})
# Alembic (op.*) and Django (migrations.*) operations that destroy data, as the SQL they run.
def _quoted(name: str) -> str:
    """An identifier as SQL, quoted (a model may be named like a keyword: `order`)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


_DESTRUCTIVE = {
    "drop_table": lambda a: f"DROP TABLE {_quoted(a[0])}",
    "drop_column": lambda a: f"ALTER TABLE {_quoted(a[0])} DROP COLUMN {_quoted(a[1])}",
    # Django names tables in lower case.
    "DeleteModel": lambda a: f"DROP TABLE {_quoted(a[0].lower())}",
    "RemoveField": lambda a: f"ALTER TABLE {_quoted(a[0].lower())} DROP COLUMN {_quoted(a[1])}",
}
_ARGUMENT_NAMES = {
    "drop_table": ("table_name",), "drop_column": ("table_name", "column_name"),
    "DeleteModel": ("name",), "RemoveField": ("model_name", "name"),
    "RunSQL": ("sql",), "execute": ("sqltext",),
}


def migration_statements(source: str) -> list[MigrationStatement]:
    """Every SQL-running call of `source`, in line order. Raises SyntaxError."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _called_name(node.func)
        if name not in _EXECUTES and name not in _DESTRUCTIVE:
            continue
        arguments = _arguments(node, _ARGUMENT_NAMES.get(name, ()))
        last = node.end_lineno or node.lineno
        if name in _DESTRUCTIVE:
            names = [_identifier(a) for a in arguments[:len(_ARGUMENT_NAMES[name])]]
            sql = None if len(names) < len(_ARGUMENT_NAMES[name]) or None in names else \
                _DESTRUCTIVE[name](names)
            found.append(MigrationStatement(node.lineno, last, sql, name))
        elif arguments:
            for text in _sql_texts(arguments[0]):
                found.append(MigrationStatement(node.lineno, last, text, name))
    return sorted(found, key=lambda s: s.first_line)


def _called_name(function: ast.expr) -> str:
    if isinstance(function, ast.Attribute):
        return function.attr
    if isinstance(function, ast.Name):
        return function.id
    return ""


def _arguments(call: ast.Call, names: tuple[str, ...]) -> list[ast.expr]:
    """Positional arguments, then the named ones that fill the remaining positions."""
    given = list(call.args)
    by_name = {k.arg: k.value for k in call.keywords if k.arg}
    for name in names[len(given):]:
        if name not in by_name:
            break
        given.append(by_name[name])
    return given


def _identifier(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _sql_texts(node: ast.expr) -> list[str | None]:
    """The SQL an argument holds: a string (or `text("...")`, `sa.text(...)`), each
    string of a list or tuple (Django's RunSQL), an f-string with its holes as a
    placeholder name; None for anything only known at run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return ["".join(str(part.value) if isinstance(part, ast.Constant) else "_"
                        for part in node.values)]
    if isinstance(node, ast.Call) and _called_name(node.func) == "text" and node.args:
        return _sql_texts(node.args[0])
    if isinstance(node, (ast.List, ast.Tuple)):
        return [text for element in node.elts for text in _sql_texts(element)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _sql_texts(node.left), _sql_texts(node.right)
        if len(left) == len(right) == 1 and left[0] is not None and right[0] is not None:
            return [left[0] + right[0]]
    return [None]
