"""The SQL a Python migration runs forward, read from its source without running it:
Alembic's `upgrade()` (and the functions it calls; never `downgrade()`), `op.*` and
`batch_op.*` operations, and Django's operations in order with the real table and column
names (`db_table`, or `app_label_modelname`; a foreign key's `_id` column), proxy and
unmanaged models skipped, only the database side of `SeparateDatabaseAndState`.
Statements that only lock (an index built without CONCURRENTLY) are emitted too, for squawk."""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MigrationStatement:
    """One operation of a migration, as SQL, with the lines its call spans."""

    first_line: int
    last_line: int
    sql: str | None
    """None when the SQL is only known at run time."""
    call: str


def quoted(name: str) -> str:
    """A table name (`schema.table` or `table`) as SQL, each part quoted (a model may be
    named like a keyword: `order`)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def migration_statements(source: str, path: str = "", history: Sequence[str] = ()
                         ) -> list[MigrationStatement]:
    """Every SQL-running operation of the migration `source` (at `path`, with the sources
    of the app's earlier migrations in `history`, oldest first, for Django's model state),
    in the order it runs. Raises SyntaxError."""
    tree = ast.parse(source)
    operations = _django_operations(tree)
    if operations is not None:
        state = _DjangoState(_app_label(path))
        for earlier in history:
            try:
                state.replay(_django_operations(ast.parse(earlier)) or [])
            except SyntaxError:
                continue
        return _Django(tree, state).judge(operations)
    return _Alembic(tree).statements()


# ------------------------------------------------------------------- Alembic


class _Alembic:
    def __init__(self, tree: ast.Module) -> None:
        self.functions = {node.name: node for node in tree.body
                          if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
        self.tree = tree
        self.found: list[MigrationStatement] = []

    def statements(self) -> list[MigrationStatement]:
        roots = [name for name in self.functions
                 if name == "upgrade" or name.startswith("upgrade_")]
        if not roots:  # a script of statements, not an Alembic revision: read it all
            self._walk(self.tree.body, {})
            return self.found
        seen: set[str] = set()
        pending = list(roots)
        while pending:
            name = pending.pop(0)
            if name in seen or name.startswith("downgrade"):
                continue
            seen.add(name)
            body = self.functions[name].body
            self._walk(body, {})
            pending += [called for node in _nodes(body) if isinstance(node, ast.Call)
                        for called in [_called_name(node.func)]
                        if isinstance(node.func, ast.Name) and called in self.functions]
        return sorted(self.found, key=lambda s: s.first_line)

    def _walk(self, body: Iterable[ast.stmt], batches: dict[str, str]) -> None:
        for statement in body:
            if isinstance(statement, ast.With):
                inner = dict(batches)
                for item in statement.items:
                    call = item.context_expr
                    if isinstance(call, ast.Call) and \
                            _called_name(call.func) == "batch_alter_table" and \
                            isinstance(item.optional_vars, ast.Name):
                        table = _table_argument(call, 0, "table_name")
                        if table is not None:
                            inner[item.optional_vars.id] = table
                self._walk(statement.body, inner)
                continue
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if isinstance(statement, ast.If | ast.For | ast.While | ast.Try):
                head = statement.test if isinstance(statement, ast.If | ast.While) else \
                    statement.iter if isinstance(statement, ast.For) else None
                for node in ast.walk(head) if head is not None else []:
                    if isinstance(node, ast.Call):
                        self._call(node, batches)
                blocks = [statement.body, statement.orelse]
                if isinstance(statement, ast.Try):
                    blocks += [statement.finalbody, *(h.body for h in statement.handlers)]
                for block in blocks:
                    self._walk(block, batches)
                continue
            for node in ast.walk(statement):
                if isinstance(node, ast.Call):
                    self._call(node, batches)

    def _call(self, node: ast.Call, batches: dict[str, str]) -> None:
        name = _called_name(node.func)
        owner = node.func.value if isinstance(node.func, ast.Attribute) else None
        batch = batches.get(owner.id) if isinstance(owner, ast.Name) else None
        add = self._adder(node, name)
        if name in ("execute", "exec_driver_sql", "executescript"):
            argument = _argument(node, 0, "sqltext") or _argument(node, 0, "statement")
            for text in _sql_texts(argument) if argument is not None else []:
                add(text)
            return
        table = batch if batch is not None else None
        shift = 0 if batch is not None else 1
        if batch is None and name in ("drop_column", "alter_column", "add_column",
                                      "create_unique_constraint", "create_foreign_key"):
            position, keyword = {"create_unique_constraint": (1, "table_name"),
                                 "create_foreign_key": (1, "source_table")}.get(
                name, (0, "table_name"))
            table = _table_argument(node, position, keyword)
        if name == "create_table" and batch is None:
            created = _table_argument(node, 0, "table_name")
            if created:
                add(f"CREATE TABLE {quoted(created)} ()")
        elif name == "drop_table" and batch is None:
            dropped = _table_argument(node, 0, "table_name")
            add(None if dropped is None else f"DROP TABLE {quoted(dropped)}")
        elif name == "drop_column":
            column = _string(_argument(node, shift, "column_name"))
            add(None if table is None or column is None else
                f"ALTER TABLE {quoted(table)} DROP COLUMN {quoted(column)}")
        elif name == "create_index":
            if _true(_keyword(node, "postgresql_concurrently")):
                return
            index = _string(_argument(node, 0, "index_name"))
            on = batch if batch is not None else _table_argument(node, 1, "table_name")
            columns = _strings(_argument(node, 1 if batch is not None else 2, "columns"))
            if index and on and columns:
                unique = "UNIQUE " if _true(_keyword(node, "unique")) else ""
                add(f"CREATE {unique}INDEX {quoted(index)} ON {quoted(on)} "
                    f"({', '.join(quoted(c) for c in columns)})")
        elif name == "drop_index":
            index = _string(_argument(node, 0, "index_name"))
            if index and not _true(_keyword(node, "postgresql_concurrently")):
                add(f"DROP INDEX {quoted(index)}")
        elif name == "add_column" and table is not None:
            definition = _argument(node, shift, "column")
            if isinstance(definition, ast.Call) and definition.args:
                column_name = _string(definition.args[0])
                if column_name and _false(_keyword(definition, "nullable")) and \
                        _keyword(definition, "server_default") is None:
                    add(f"ALTER TABLE {quoted(table)} ADD COLUMN {quoted(column_name)} "
                        f"text NOT NULL")
        elif name == "alter_column" and table is not None:
            column = _string(_argument(node, shift, "column_name"))
            if column is None:
                return
            if _keyword(node, "type_") is not None:
                add(f"ALTER TABLE {quoted(table)} ALTER COLUMN {quoted(column)} TYPE text")
            if _false(_keyword(node, "nullable")):
                add(f"ALTER TABLE {quoted(table)} ALTER COLUMN {quoted(column)} SET NOT NULL")
            renamed = _string(_keyword(node, "new_column_name"))
            if renamed:
                add(f"ALTER TABLE {quoted(table)} RENAME COLUMN {quoted(column)} TO "
                    f"{quoted(renamed)}")
        elif name == "rename_table" and batch is None:
            old, new = _table_argument(node, 0, "old_table_name"), \
                _string(_argument(node, 1, "new_table_name"))
            if old and new:
                add(f"ALTER TABLE {quoted(old)} RENAME TO {quoted(new)}")
        elif name == "create_foreign_key" and table is not None:
            referent = _string(_argument(node, 1 + shift, "referent_table"))
            if referent:
                add(f"ALTER TABLE {quoted(table)} ADD CONSTRAINT fk FOREIGN KEY (id) "
                    f"REFERENCES {quoted(referent)} (id)")
        elif name == "create_unique_constraint" and table is not None:
            columns = _strings(_argument(node, 1 + shift, "columns"))
            if columns:
                add(f"ALTER TABLE {quoted(table)} ADD CONSTRAINT uq UNIQUE "
                    f"({', '.join(quoted(c) for c in columns)})")

    def _adder(self, node: ast.Call, name: str) -> _Add:
        return _Add(self.found, node, name)


@dataclass
class _Add:
    found: list[MigrationStatement]
    node: ast.Call
    name: str

    def __call__(self, sql: str | None) -> None:
        self.found.append(MigrationStatement(self.node.lineno,
                                             self.node.end_lineno or self.node.lineno,
                                             sql, self.name))


# -------------------------------------------------------------------- Django


@dataclass
class _Model:
    table: str
    proxy: bool = False
    managed: bool = True
    columns: dict[str, str] = field(default_factory=dict)
    """Field name to column; a many-to-many field to its join table, prefixed `m2m:`."""


class _DjangoState:
    """The app's models as its migrations leave them: table names, proxy, managed,
    columns of fields."""

    def __init__(self, app_label: str) -> None:
        self.app_label = app_label
        self.models: dict[str, _Model] = {}

    def model(self, name: str) -> _Model:
        key = name.lower().split(".")[-1]
        if key not in self.models:
            self.models[key] = _Model(self._default_table(key))
        return self.models[key]

    def _default_table(self, model: str) -> str:
        return f"{self.app_label}_{model}" if self.app_label else model

    def replay(self, operations: list[ast.Call]) -> None:
        for operation in operations:
            self.apply(operation)

    def apply(self, operation: ast.Call) -> None:
        name = _called_name(operation.func)
        if name == "SeparateDatabaseAndState":
            states = _argument(operation, 0, "state_operations")
            for inner in states.elts if isinstance(states, ast.List | ast.Tuple) else []:
                if isinstance(inner, ast.Call):
                    self.apply(inner)
            return
        model_name = _string(_argument(operation, 0, "name" if name in (
            "CreateModel", "DeleteModel", "AlterModelTable", "AlterModelOptions",
            "AlterModelManagers") else "model_name"))
        if model_name is None:
            return
        if name == "CreateModel":
            options = _dict(_keyword(operation, "options") or (
                operation.args[2] if len(operation.args) > 2 else None))
            key = model_name.lower()
            table = _string(options.get("db_table"))
            model = _Model(_table_name(table) if table else self._default_table(key),
                           proxy=_true(options.get("proxy")),
                           managed=not _false(options.get("managed")))
            fields = _argument(operation, 1, "fields")
            for entry in fields.elts if isinstance(fields, ast.List | ast.Tuple) else []:
                if isinstance(entry, ast.Tuple) and len(entry.elts) == 2:
                    field_name = _string(entry.elts[0])
                    if field_name:
                        model.columns[field_name] = self._column(model, field_name,
                                                                 entry.elts[1])
            self.models[key] = model
        elif name == "DeleteModel":
            self.models.pop(model_name.lower(), None)
        elif name == "AlterModelTable":
            table = _string(_argument(operation, 1, "table"))
            self.model(model_name).table = _table_name(table) if table else \
                self._default_table(model_name.lower())
        elif name == "AlterModelOptions":
            options = _dict(_argument(operation, 1, "options"))
            if "managed" in options:
                self.model(model_name).managed = not _false(options["managed"])
        elif name == "RenameModel":
            new = _string(_argument(operation, 1, "new_name"))
            old = self.models.pop(model_name.lower(), None) or self.model(model_name)
            if new:
                if old.table == self._default_table(model_name.lower()):
                    old.table = self._default_table(new.lower())
                self.models[new.lower()] = old
        elif name in ("AddField", "AlterField"):
            field_name = _string(_argument(operation, 1, "name"))
            definition = _argument(operation, 2, "field")
            if field_name and definition is not None:
                model = self.model(model_name)
                model.columns[field_name] = self._column(model, field_name, definition)
        elif name == "RemoveField":
            field_name = _string(_argument(operation, 1, "name"))
            if field_name:
                self.model(model_name).columns.pop(field_name, None)
        elif name == "RenameField":
            old_name = _string(_argument(operation, 1, "old_name"))
            new_name = _string(_argument(operation, 2, "new_name"))
            model = self.model(model_name)
            if old_name and new_name:
                column = model.columns.pop(old_name, old_name)
                model.columns[new_name] = new_name if column == old_name else column

    def _column(self, model: _Model, field_name: str, definition: ast.expr) -> str:
        if not isinstance(definition, ast.Call):
            return field_name
        kind = _called_name(definition.func)
        column = _string(_keyword(definition, "db_column"))
        if kind == "ManyToManyField":
            through = _keyword(definition, "through")
            table = _string(_keyword(definition, "db_table"))
            return "" if through is not None else \
                "m2m:" + (_table_name(table) if table else f"{model.table}_{field_name}")
        if column:
            return column
        if kind in ("ForeignKey", "OneToOneField", "ForeignObject"):
            return f"{field_name}_id"
        return field_name

    def column(self, model: str, field_name: str) -> str:
        """The column (or `m2m:` join table) of a field, by the state so far."""
        return self.model(model).columns.get(field_name, field_name)


class _Django:
    def __init__(self, tree: ast.Module, state: _DjangoState) -> None:
        self.functions = {node.name: node for node in tree.body
                          if isinstance(node, ast.FunctionDef)}
        self.state = state
        self.found: list[MigrationStatement] = []

    def judge(self, operations: list[ast.Call]) -> list[MigrationStatement]:
        for operation in operations:
            self._run(operation)
        return self.found

    def _run(self, operation: ast.Call) -> None:
        """Judge one operation against the state before it (a created model: after it)."""
        if _called_name(operation.func) == "CreateModel":
            self.state.apply(operation)
            self._judge(operation)
        else:
            self._judge(operation)
            self.state.apply(operation)

    def _judge(self, operation: ast.Call) -> None:
        name = _called_name(operation.func)
        add = _Add(self.found, operation, name)
        if name == "SeparateDatabaseAndState":
            database = _argument(operation, 1, "database_operations")
            for inner in database.elts if isinstance(database, ast.List | ast.Tuple) else []:
                if isinstance(inner, ast.Call):
                    self._run(inner)
            return
        if name == "RunSQL":
            sql = _argument(operation, 0, "sql")
            for text in _sql_texts(sql) if sql is not None else [None]:
                add(text)
            return
        if name == "RunPython":
            code = _argument(operation, 0, "code")
            function = self.functions.get(code.id) if isinstance(code, ast.Name) else None
            for node in _nodes(function.body if function else []):
                if isinstance(node, ast.Call) and _called_name(node.func) in (
                        "execute", "executescript"):
                    argument = _argument(node, 0, "sql")
                    for text in _sql_texts(argument) if argument is not None else [None]:
                        _Add(self.found, node, "execute")(text)
            return
        model_name = _string(_argument(operation, 0, "name" if name in (
            "CreateModel", "DeleteModel", "RenameModel") else "model_name"))
        if model_name is None:
            if name in ("DeleteModel", "RemoveField"):
                add(None)
            return
        model = self.state.model(model_name)
        if model.proxy or not model.managed:
            return  # no table of its own, or not Django's to change
        if name == "CreateModel":
            add(f"CREATE TABLE {quoted(model.table)} ()")
        elif name == "DeleteModel":
            add(f"DROP TABLE {quoted(model.table)}")
        elif name == "RemoveField":
            field_name = _string(_argument(operation, 1, "name"))
            if field_name is None:
                add(None)
                return
            column = self.state.column(model_name, field_name)
            if column.startswith("m2m:"):
                add(f"DROP TABLE {quoted(column[4:])}")
            elif column:
                add(f"ALTER TABLE {quoted(model.table)} DROP COLUMN {quoted(column)}")
        elif name == "AddIndex":
            index = _argument(operation, 1, "index")
            if isinstance(index, ast.Call):
                columns = [self.state.column(model_name, c.lstrip("-"))
                           for c in _strings(_keyword(index, "fields")) or []]
                index_name = _string(_keyword(index, "name")) or "index"
                if columns:
                    add(f"CREATE INDEX {quoted(index_name)} ON {quoted(model.table)} "
                        f"({', '.join(quoted(c) for c in columns)})")
        elif name == "RenameModel":
            new = _string(_argument(operation, 1, "new_name"))
            if new and model.table == self.state._default_table(model_name.lower()):
                add(f"ALTER TABLE {quoted(model.table)} RENAME TO "
                    f"{quoted(self.state._default_table(new.lower()))}")
        elif name == "RenameField":
            old_name = _string(_argument(operation, 1, "old_name"))
            new_name = _string(_argument(operation, 2, "new_name"))
            renamed = self.state.column(model_name, old_name) if old_name else None
            if renamed is not None and renamed == old_name and new_name:
                add(f"ALTER TABLE {quoted(model.table)} RENAME COLUMN {quoted(renamed)} TO "
                    f"{quoted(new_name)}")


def _django_operations(tree: ast.Module) -> list[ast.Call] | None:
    """The `operations` of a Django migration's `Migration` class, or None when `tree` is
    not one."""
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or not any(
                _called_name(base) == "Migration" for base in node.bases):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.Assign | ast.AnnAssign):
                continue
            targets = statement.targets if isinstance(statement, ast.Assign) else \
                [statement.target]
            if any(isinstance(t, ast.Name) and t.id == "operations" for t in targets) and \
                    isinstance(statement.value, ast.List | ast.Tuple):
                return [e for e in statement.value.elts if isinstance(e, ast.Call)]
        return []
    return None


def _app_label(path: str) -> str:
    """A Django app's label from a migration's path: the folder holding `migrations/`."""
    parts = posixpath.dirname(path).split("/")
    return parts[-2] if len(parts) >= 2 and parts[-1] == "migrations" else ""


def _table_name(db_table: str) -> str:
    """Django's `db_table`, which may quote a schema into it (`'"billing"."invoice"'`)."""
    if '"."' in db_table:
        return ".".join(part.strip('"') for part in db_table.split('"."'))
    return db_table.strip('"')


# ------------------------------------------------------------------- reading


def _nodes(body: Iterable[ast.stmt]) -> Iterable[ast.AST]:
    for statement in body:
        yield from ast.walk(statement)


def _called_name(function: ast.expr) -> str:
    if isinstance(function, ast.Attribute):
        return function.attr
    if isinstance(function, ast.Name):
        return function.id
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _argument(call: ast.Call, position: int, name: str) -> ast.expr | None:
    if len(call.args) > position and not any(isinstance(a, ast.Starred)
                                             for a in call.args[:position + 1]):
        return call.args[position]
    return _keyword(call, name)


def _table_argument(call: ast.Call, position: int, name: str) -> str | None:
    """A table argument with the call's `schema=`, as `schema.table`."""
    table = _string(_argument(call, position, name))
    schema = _string(_keyword(call, "schema"))
    return None if table is None else f"{schema}.{table}" if schema else table


def _string(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _strings(node: ast.expr | None) -> list[str] | None:
    if isinstance(node, ast.List | ast.Tuple):
        values = [_string(e) for e in node.elts]
        return None if None in values else [v for v in values if v is not None]
    single = _string(node)
    return [single] if single is not None else None


def _true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _dict(node: ast.expr | None) -> dict[str, ast.expr]:
    if not isinstance(node, ast.Dict):
        return {}
    return {key.value: value for key, value in zip(node.keys, node.values, strict=False)
            if isinstance(key, ast.Constant) and isinstance(key.value, str)}


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
    if isinstance(node, ast.List | ast.Tuple):
        return [text for element in node.elts for text in _sql_texts(element)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _sql_texts(node.left), _sql_texts(node.right)
        if len(left) == len(right) == 1 and left[0] is not None and right[0] is not None:
            return [left[0] + right[0]]
    return [None]
