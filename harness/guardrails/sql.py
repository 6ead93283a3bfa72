"""SQL analysis on PostgreSQL's own parser: what each statement would do, without running it.

The text is parsed by libpg_query (through pglast), PostgreSQL's real grammar, so there
is no lexer of ours to differ from the server's: quoting, `U&"..."` identifiers, `E''`
strings, dollar quotes and nested comments are read exactly as PostgreSQL reads them, and
identifiers come back folded the way it folds them. Every statement is walked for what it
writes: its target tables, data-modifying CTEs, MERGE actions, COPY to or from programs
and files, EXPLAIN ANALYZE, PREPARE, rules, SQL and PL/pgSQL bodies of DO blocks and
functions (parsed too), SQL strings given to dblink. Whether an UPDATE or DELETE touches
every row is decided on its WHERE tree. What cannot be seen (SQL built at run time, code
in other languages, procedures defined elsewhere) is said in `Statement.uncertain`.
Text that does not parse fails closed (`SqlSyntaxError`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

MAX_DEPTH = 8
"""Bodies nested deeper than this (a DO block running a DO block ...) are not followed."""

WRITE_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "ALTER", "DROP",
                         "COPY", "CREATE", "GRANT", "REVOKE", "COMMENT", "REINDEX", "CLUSTER",
                         "VACUUM", "REFRESH", "SELECT INTO", "DO", "CALL", "LOCK", "SECURITY",
                         "IMPORT", "LOAD", "UNKNOWN"})
DANGEROUS_FUNCTIONS = frozenset({
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export",
    "lo_unlink", "dblink_exec", "dblink", "dblink_send_query", "pg_drop_replication_slot",
    "pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_file_write",
    "pg_file_unlink", "pg_file_rename", "pg_logical_emit_message", "pg_ls_logdir",
    "pg_ls_waldir", "pg_log_backend_memory_contexts", "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot", "pg_replication_origin_create",
})
"""Server administration, file access and sessions on other connections."""
WRITING_FUNCTIONS = frozenset({"setval", "nextval", "lo_import", "lo_unlink", "lo_create",
                               "lo_from_bytea", "lo_put", "pg_advisory_xact_lock",
                               "set_config", "txid_current", "pg_current_xact_id"})
"""Functions that write (a sequence, a large object, a setting) when a SELECT calls them."""
SQL_TEXT_FUNCTIONS = {"dblink": 1, "dblink_exec": 1, "dblink_send_query": 1}
"""Functions whose argument at this position is SQL run elsewhere (analysed too)."""
TRIGGER_SILENCING = frozenset({"session_replication_role"})


class SqlSyntaxError(ValueError):
    """The SQL text does not parse as PostgreSQL."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Statement:
    """One statement: what it does and to which tables."""

    kind: str
    """SELECT, INSERT, UPDATE, DELETE, MERGE, TRUNCATE, CREATE, ALTER, DROP, COPY, GRANT,
    DO, CALL, SELECT INTO, EXPLAIN, SET, PREPARE, EXECUTE, ... or UNKNOWN."""
    span: tuple[int, int]
    text: str
    object_kind: str | None = None
    """For CREATE, ALTER, DROP, GRANT: TABLE, DATABASE, SCHEMA, FUNCTION, ..."""
    targets: tuple[str, ...] = ()
    """Tables (or databases, schemas) the statement writes, as PostgreSQL names them:
    folded unless quoted, `schema.table` when qualified."""
    has_where: bool = True
    where_constant_true: bool = False
    copy_program: bool = False
    copy_file: str | None = None
    """COPY to or from a file on the database server."""
    copy_from: bool = False
    drops_column: bool = False
    renames: str | None = None
    """What an ALTER ... RENAME renames that readers name (`column total of orders`)."""
    rewrites_column: str | None = None
    """ALTER COLUMN ... TYPE ... USING an expression that reads no column: every value of
    the column is replaced."""
    functions: tuple[str, ...] = ()
    nested: tuple[Statement, ...] = ()
    """Statements this one runs: data-modifying CTEs, EXPLAIN ANALYZE's statement, a
    PREPAREd statement, rule actions, DO and function bodies, dblink SQL."""
    deferred: bool = False
    """A statement of a function or rule body: it runs when that code is called, not now."""
    reads: tuple[str, ...] = ()
    """For CREATE VIEW: the tables the view reads (writes through it reach them)."""
    runs: str | None = None
    """For CREATE TRIGGER: the function it runs."""
    fires_on: str | None = None
    """For CREATE RULE: the kind of statement on its table that runs its actions."""
    settings: tuple[tuple[str, str], ...] = ()
    """SET name = value, and set_config(name, value) calls (and the defaults ALTER ROLE
    and ALTER DATABASE ... SET give every later session)."""
    locks: str | None = None
    """What an exclusive lock held while the statement scans or rewrites a table keeps
    out (VACUUM FULL, CLUSTER, REINDEX without CONCURRENTLY, LOCK TABLE)."""
    silences: str | None = None
    """Triggers or rules an ALTER TABLE switches off."""
    detaches: str | None = None
    """Rows an ALTER TABLE takes away from the table's readers (DETACH PARTITION, NO
    INHERIT)."""
    access: str | None = None
    """How the statement changes who may connect or with whose rights code runs."""
    library: str | None = None
    """A shared library the statement loads into the server (a C function's file)."""
    uncertain: str | None = None

    @functools.cached_property
    def words(self) -> tuple[str, ...]:
        """The statement's tokens as PostgreSQL's lexer reads them: keywords upper-cased,
        identifiers as written, literals as `''`, comments dropped (read on first use)."""
        return _words(self.text)

    @property
    def writes(self) -> bool:
        """Whether the statement (or something it runs) changes data or schema."""
        return self.kind in WRITE_KINDS or bool(set(self.functions) & WRITING_FUNCTIONS) or \
            any(n.writes for n in self.nested)

    def walk(self) -> list[Statement]:
        """This statement and every statement nested in it."""
        found = [self]
        for inner in self.nested:
            found.extend(inner.walk())
        return found


@dataclass
class SqlAnalysis:
    """The statements of a SQL text."""

    text: str
    statements: list[Statement] = field(default_factory=list)


def analyse(text: str) -> SqlAnalysis:
    """Parse and analyse a SQL text; SqlSyntaxError when it does not parse."""
    analysis = SqlAnalysis(text)
    tree = _parse(text)
    encoded = text.encode()
    ascii_only = len(encoded) == len(text)
    for raw in tree.get("stmts", []):
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0) or len(encoded) - start
        if not ascii_only:  # libpg_query counts bytes
            start, length = (len(encoded[:start].decode(errors="replace")),
                             len(encoded[start : start + length].decode(errors="replace")))
        span = (start, start + length)
        reader = _Reader(text[span[0] : span[1]], span, depth=0,
                         calls=tree["harness_calls"])
        try:
            analysis.statements.append(reader.statement(raw["stmt"]))
        except RecursionError:
            raise SqlSyntaxError("the SQL is nested too deeply to analyse", start) from None
    _undefer_called(analysis.statements)
    _triggers_of_known_functions(analysis.statements)
    _undefer_fired(analysis.statements)
    _resolve_executes(analysis.statements)
    _through_views(analysis.statements)
    return analysis


def _parse(text: str) -> dict[str, Any]:
    from pglast import parser  # imported on first use: shell-only checks never need it

    try:
        raw = parser.parse_sql_json(text)
        tree = dict(json.loads(raw))
        tree["harness_calls"] = '"FuncCall"' in raw  # no call anywhere: no walk for them
        return tree
    except RecursionError:
        raise SqlSyntaxError("the SQL is nested too deeply to analyse", 0) from None
    except parser.ParseError as exc:
        location = getattr(exc, "location", 0) or 0
        raise SqlSyntaxError(str(exc.args[0] if exc.args else exc), max(0, location - 1)) \
            from None


# ------------------------------------------------------------------ the tree


def _nodes(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a parse tree (type, fields), depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if key[:1].isupper() and isinstance(inner, dict):
                    yield key, inner
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _node(value: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if isinstance(inner, dict):
            return key, inner
    return None


def _string(value: Any) -> str | None:
    node = _node(value)
    if node and node[0] == "String":
        return str(node[1].get("sval", ""))
    return None


def _relation(rangevar: dict[str, Any] | None) -> str | None:
    if not rangevar:
        return None
    name = str(rangevar.get("relname", ""))
    schema = rangevar.get("schemaname")
    return f"{schema}.{name}" if schema else name


def _qualified(items: list[Any]) -> str:
    return ".".join(s for s in (_string(i) for i in items) if s is not None)


_OBJECT = {"OBJECT_MATVIEW": "MATERIALIZED VIEW", "OBJECT_FOREIGN_TABLE": "FOREIGN TABLE",
           "OBJECT_EVENT_TRIGGER": "EVENT TRIGGER", "OBJECT_ACCESS_METHOD": "ACCESS METHOD"}


def _object_kind(value: str | None) -> str | None:
    if not value:
        return None
    return _OBJECT.get(value, value.removeprefix("OBJECT_").replace("_", " "))


def _constant(value: Any) -> Any:
    """The value of a constant expression (`_UNKNOWN` when it is not one)."""
    node = _node(value)
    if node is None:
        return _UNKNOWN
    kind, body = node
    if kind == "A_Const":
        if body.get("isnull"):
            return None
        for name in ("boolval", "ival", "fval", "sval", "bsval"):
            if name in body:
                inner = body[name]
                raw = inner.get(name) if isinstance(inner, dict) else inner
                if name == "ival":
                    return int(raw or 0)
                if name == "fval":
                    return float(raw or 0)
                if name == "boolval":
                    return bool(raw)
                return str(raw or "")
        # An empty A_Const is 0 or false.
        return 0
    if kind == "TypeCast":
        inner = _constant(body.get("arg"))
        names = [_string(n) for n in (body.get("typeName") or {}).get("names", [])]
        if inner is not _UNKNOWN and names and names[-1] in ("bool", "boolean"):
            if isinstance(inner, str):
                return inner.strip().lower() in ("t", "true", "y", "yes", "on", "1")
            return bool(inner)
        if names and names[-1] in ("text", "varchar", "bpchar") and \
                not (body.get("typeName") or {}).get("arrayBounds"):
            if isinstance(inner, bool):
                return "true" if inner else "false"
            if isinstance(inner, int | float):
                return str(inner)
        return inner
    if kind == "A_Expr" and body.get("kind") == "AEXPR_OP":
        op = _string((body.get("name") or [None])[-1])
        left, right = _constant(body.get("lexpr")), _constant(body.get("rexpr"))
        if op == "||" and isinstance(left, str) and isinstance(right, str):
            return left + right
    return _UNKNOWN


class _Unknown:
    def __repr__(self) -> str:
        return "unknown"


_UNKNOWN = _Unknown()
_COMPARE = {"=": lambda a, b: a == b, "<>": lambda a, b: a != b, "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
            ">=": lambda a, b: a >= b}


def truth(value: Any) -> bool | None:
    """Whether a condition holds for every row (True), for none (False), or depends on the
    row (None); constant parts are evaluated, `x = x` counts as true."""
    node = _node(value)
    if node is None:
        return None
    kind, body = node
    if kind == "BoolExpr":
        parts = [truth(arg) for arg in body.get("args", [])]
        op = body.get("boolop")
        if op == "AND_EXPR":
            return False if False in parts else (True if all(p is True for p in parts) else None)
        if op == "OR_EXPR":
            if True in parts or _complementary(body.get("args", [])):
                return True
            return False if all(p is False for p in parts) else None
        if op == "NOT_EXPR" and parts:
            return None if parts[0] is None else not parts[0]
        return None
    if kind == "A_Expr" and body.get("kind") == "AEXPR_OP":
        op = _string((body.get("name") or [None])[-1]) or ""
        left, right = body.get("lexpr"), body.get("rexpr")
        if op in ("=", "<=", ">=") and left is not None and \
                _strip_locations(left) == _strip_locations(right):
            return True  # x = x: every row where x is not null
        a, b = _constant(left), _constant(right)
        if a is _UNKNOWN or b is _UNKNOWN or a is None or b is None or op not in _COMPARE:
            return None
        try:
            return bool(_COMPARE[op](a, b))
        except TypeError:
            return None
    if kind == "A_Expr" and body.get("kind") in ("AEXPR_NOT_DISTINCT", "AEXPR_DISTINCT"):
        # Null-safe: `x IS NOT DISTINCT FROM x` holds for every row, nulls included.
        same = _strip_locations(body.get("lexpr")) == _strip_locations(body.get("rexpr"))
        a, b = _constant(body.get("lexpr")), _constant(body.get("rexpr"))
        equal = True if same else (a == b if _UNKNOWN not in (a, b) else None)
        if equal is None:
            return None
        return equal if body["kind"] == "AEXPR_NOT_DISTINCT" else not equal
    if kind == "A_Expr" and body.get("kind") == "AEXPR_IN":
        left = _constant(body.get("lexpr"))
        items = body.get("rexpr")
        listed = _node(items)
        if listed and listed[0] == "List":
            items = listed[1].get("items", [])
        if not isinstance(items, list):
            return None
        positive = _string((body.get("name") or [None])[-1]) == "="
        itself = _strip_locations(body.get("lexpr"))
        if positive and any(_strip_locations(i) == itself for i in items):
            return True  # x IN (x, ...): every row where x is not null, as x = x
        values = [_constant(i) for i in items]
        if left is _UNKNOWN or any(v is _UNKNOWN for v in values):
            return None
        inside = left in values
        return inside if _string((body.get("name") or [None])[-1]) == "=" else not inside
    if kind == "A_Expr" and body.get("kind") in ("AEXPR_BETWEEN", "AEXPR_BETWEEN_SYM"):
        bounds = (_node(body.get("rexpr")) or ("", {}))[1].get("items", [])
        itself = _strip_locations(body.get("lexpr"))
        if len(bounds) == 2 and all(_strip_locations(b) == itself for b in bounds):
            return True  # x BETWEEN x AND x: every row where x is not null, as x = x
        values = [_constant(v) for v in (body.get("lexpr"), *bounds)]
        if len(values) == 3 and not any(v is _UNKNOWN or v is None for v in values):
            low, high = sorted(values[1:]) if body["kind"] == "AEXPR_BETWEEN_SYM" \
                else values[1:]
            try:
                return bool(low <= values[0] <= high)
            except TypeError:
                return None
        return None
    if kind == "A_Expr" and body.get("kind") in ("AEXPR_LIKE", "AEXPR_ILIKE"):
        pattern = _constant(body.get("rexpr"))
        if isinstance(pattern, str) and pattern and set(pattern) == {"%"} and \
                _string((body.get("name") or [None])[-1]) in ("~~", "~~*"):
            return True  # x LIKE '%': every row where x is not null
        return None
    if kind == "A_Expr" and body.get("kind") in ("AEXPR_OP_ANY", "AEXPR_OP_ALL") and \
            _empty_array(body.get("rexpr")):
        return bool(body["kind"] == "AEXPR_OP_ALL")  # ALL of nothing holds, ANY of nothing not
    if kind == "SubLink" and body.get("subLinkType") in ("ANY_SUBLINK", "ALL_SUBLINK") and \
            _empty_query(body.get("subselect")):
        return bool(body["subLinkType"] == "ALL_SUBLINK")
    if kind == "NullTest":
        inner = _constant(body.get("arg"))
        if inner is _UNKNOWN and not _never_null(body.get("arg")):
            return None
        is_null = inner is None
        return is_null if body.get("nulltesttype") == "IS_NULL" else not is_null
    if kind == "BooleanTest":
        inner = truth(body.get("arg"))
        if inner is None:
            return None
        test = body.get("booltesttype", "")
        return {"IS_TRUE": inner, "IS_NOT_FALSE": inner, "IS_FALSE": not inner,
                "IS_NOT_TRUE": not inner}.get(test)
    if kind == "CoalesceExpr" or (kind == "FuncCall" and _string(
            (body.get("funcname") or [None])[-1]) == "coalesce"):
        for arg in body.get("args", []):  # the first argument that is not null
            value_ = _constant(arg)
            if value_ is _UNKNOWN:
                return truth(arg)
            if value_ is not None:
                return bool(value_)
        return None
    if kind == "SubLink" and body.get("subLinkType") == "EXISTS_SUBLINK":
        sub = _node(body.get("subselect"))
        if sub and sub[0] == "SelectStmt" and not sub[1].get("fromClause") and \
                not sub[1].get("whereClause"):
            return True
        return None
    constant = _constant(value)
    if isinstance(constant, bool):
        return constant
    if isinstance(constant, int | float) and not isinstance(constant, bool):
        return bool(constant)
    return None


def _empty_array(value: Any) -> bool:
    """`'{}'::int[]`, `ARRAY[]::int[]`, `'{}'` where an array is expected: an array with
    no element."""
    if _constant(value) == "{}":
        return True
    node = _node(value)
    while node is not None and node[0] == "TypeCast":
        if node[1].get("typeName", {}).get("arrayBounds") and \
                _constant(node[1].get("arg")) == "{}":
            return True
        node = _node(node[1].get("arg"))
    return node is not None and node[0] == "A_ArrayExpr" and not node[1].get("elements")


def _empty_query(value: Any) -> bool:
    """A SELECT that returns no row: `WHERE false`, `LIMIT 0`."""
    query = _select(value)
    if query is None or query.get("op") not in (None, "SETOP_NONE"):
        return False
    where, limit = query.get("whereClause"), query.get("limitCount")
    return (where is not None and truth(where) is False) or (
        limit is not None and _constant(limit) == 0)


_SYSTEM_COLUMNS = frozenset({"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"})
"""Columns every row has and none holds null."""


def _never_null(value: Any) -> bool:
    """Whether an expression is never null: a constant, a test (`x IS NULL`, `a IS
    DISTINCT FROM b`), `coalesce(..., constant)`, `count(...)`."""
    node = _node(value)
    if node is None:
        return False
    kind, body = node
    constant = _constant(value)
    if constant is not _UNKNOWN:
        return constant is not None
    if kind in ("NullTest", "BooleanTest") or (kind == "A_Expr" and body.get("kind") in (
            "AEXPR_NOT_DISTINCT", "AEXPR_DISTINCT")):
        return True
    if kind == "CoalesceExpr":
        return any(_never_null(arg) for arg in body.get("args", []))
    if kind == "FuncCall":
        return _string((body.get("funcname") or [None])[-1]) == "count"
    if kind == "TypeCast":
        return _never_null(body.get("arg"))
    if kind == "ColumnRef":
        return _last_field(body) in _SYSTEM_COLUMNS
    return False


_OPPOSITE = {"<": ">=", ">=": "<", ">": "<=", "<=": ">", "=": "<>", "<>": "=", "!=": "="}


def _complementary(args: list[Any]) -> bool:
    """`x IS NULL OR x IS NOT NULL`, `x > 1 OR x <= 1`: one of them holds for every row
    (every row where x is not null, for comparisons, as x = x)."""
    tests = [(_strip_locations(n[1].get("arg")), n[1].get("nulltesttype"))
             for n in (_node(a) for a in args) if n and n[0] == "NullTest"]
    if any((arg, "IS_NULL") in tests and (arg, "IS_NOT_NULL") in tests for arg, _ in tests):
        return True
    comparisons = {(_string((n[1].get("name") or [None])[-1]),
                    json.dumps(_strip_locations(n[1].get("lexpr")), sort_keys=True),
                    json.dumps(_strip_locations(n[1].get("rexpr")), sort_keys=True))
                   for n in (_node(a) for a in args)
                   if n and n[0] == "A_Expr" and n[1].get("kind") == "AEXPR_OP"}
    return any((_OPPOSITE.get(op or ""), left, right) in comparisons
               for op, left, right in comparisons)


Table = tuple[str, str]
"""A table as PostgreSQL resolves a name under the default search_path: (schema, name)."""
Queries = dict[str, Any]
"""Common table expressions in scope: name -> query."""


def table_of(rangevar: dict[str, Any] | None) -> Table | None:
    """The table a RangeVar names: unqualified names are in `public` (names come folded
    from the parser: `Orders` is `orders`, `"Orders"` is not)."""
    if not rangevar or not rangevar.get("relname"):
        return None
    return (str(rangevar.get("schemaname") or "public"), str(rangevar["relname"]))


def every_row(condition: Any, target: Table | None = None, queries: Queries | None = None
              ) -> bool:
    """Whether a WHERE clause selects every row of `target`: provably true, or the same for
    every row (it reads no column) and not provably false, or true of each row by a
    subquery over the table itself (`id IN (SELECT id FROM target)`, `EXISTS (SELECT 1
    FROM target t2 WHERE t2.id = target.id)`)."""
    verdict = truth(condition)
    if verdict is not None:
        return verdict
    if not any(kind == "ColumnRef" for kind, _ in _nodes(condition)):
        return True
    return target is not None and _covers(condition, target, queries or {})


def _covers(condition: Any, target: Table, queries: Queries) -> bool:
    """Whether a condition holds for every row of `target` (beyond `truth`)."""
    if truth(condition) is True:
        return True
    node = _node(condition)
    if node is None:
        return False
    kind, body = node
    if kind == "BoolExpr" and body.get("boolop") == "AND_EXPR":
        return all(_covers(arg, target, queries) for arg in body.get("args", []))
    if kind == "BoolExpr" and body.get("boolop") == "OR_EXPR":
        return any(_covers(arg, target, queries) for arg in body.get("args", []))
    if kind == "BooleanTest" and body.get("booltesttype") in ("IS_TRUE", "IS_NOT_FALSE"):
        return _covers(body.get("arg"), target, queries)
    if kind == "SubLink" and body.get("subLinkType") == "ANY_SUBLINK" and \
            _string((body.get("operName") or [{"String": {"sval": "="}}])[-1]) == "=":
        column = _column(body.get("testexpr"))  # col IN (SELECT ...), col = ANY (SELECT ...)
        return column is not None and _yields_every(body.get("subselect"), target, column,
                                                    queries)
    if kind == "A_Expr" and body.get("kind") == "AEXPR_OP_ANY" and \
            _string((body.get("name") or [None])[-1]) == "=":
        column, array = _column(body.get("lexpr")), _node(body.get("rexpr"))
        return column is not None and array is not None and array[0] == "SubLink" and \
            array[1].get("subLinkType") == "ARRAY_SUBLINK" and \
            _yields_every(array[1].get("subselect"), target, column, queries)
    if kind == "SubLink" and body.get("subLinkType") == "EXISTS_SUBLINK":
        return _finds_itself(body.get("subselect"), target, queries)
    return False


def _column(value: Any) -> str | None:
    node = _node(value)
    return _last_field(node[1]) if node and node[0] == "ColumnRef" else None


def _select(value: Any) -> dict[str, Any] | None:
    """The body of a SELECT (a subquery node, or a set operation's arm)."""
    node = _node(value)
    if node is not None and node[0] == "SelectStmt":
        return node[1]
    return value if isinstance(value, dict) and "op" in value else None


def _with(query: dict[str, Any], queries: Queries) -> Queries:
    clause = query.get("withClause")
    if not clause:
        return queries
    return {**queries, **{str(cte.get("ctename")): cte.get("ctequery")
                          for kind, cte in _nodes(clause) if kind == "CommonTableExpr"}}


def _unnarrowed(query: dict[str, Any]) -> bool:
    """A SELECT whose rows are all its source's: no condition that is not always true, no
    limit, offset, grouping condition or join to narrow them."""
    where = query.get("whereClause")
    limit, offset = query.get("limitCount"), query.get("limitOffset")
    return (where is None or truth(where) is True) and (
        limit is None or _constant(limit) is None) and (
        offset is None or _constant(offset) in (0, None)) and \
        query.get("havingClause") is None and len(query.get("fromClause") or []) == 1


def _source(query: dict[str, Any], queries: Queries, depth: int
            ) -> tuple[Table | None, dict[str, Any] | None, Queries]:
    """A SELECT's single source: a table, or a query (a subquery in FROM, a CTE)."""
    source = _node((query.get("fromClause") or [None])[0])
    if source is None:
        return None, None, queries
    kind, body = source
    if kind == "RangeVar":
        if not body.get("schemaname") and str(body.get("relname")) in queries and depth < 8:
            name = str(body.get("relname"))
            inner = {k: v for k, v in queries.items() if k != name}  # no recursion
            return None, _select(queries[name]), inner
        return table_of(body), None, queries
    if kind == "RangeSubselect":
        return None, _select(body.get("subquery")), queries
    return None, None, queries


def _yields_every(value: Any, target: Table, column: str, queries: Queries,
                  output: str | None = None, depth: int = 0) -> bool:
    """Whether a SELECT returns every value of `target`'s `column` (in its output column
    `output`, or its only one): `SELECT id FROM orders`, through aliases, `WHERE true`,
    `LIMIT ALL`, `OFFSET 0`, `DISTINCT`, a UNION, a subquery in FROM or a CTE."""
    query = _select(value)
    if query is None or depth > 8:
        return False
    queries = _with(query, queries)
    if query.get("op") in ("SETOP_UNION", "SETOP_INTERSECT"):
        arms = [_yields_every(query.get(arm), target, column, queries, output, depth + 1)
                for arm in ("larg", "rarg")]
        return any(arms) if query["op"] == "SETOP_UNION" else all(arms)
    if query.get("op") not in (None, "SETOP_NONE") or not _unnarrowed(query):
        return False
    entries = [(str(t.get("name") or ""), t.get("val")) for kind, t in
               ((_node(item) or ("", {})) for item in query.get("targetList") or [])
               if kind == "ResTarget"]
    if output is None:
        chosen = [value for _, value in entries] if len(entries) == 1 else []
    else:
        chosen = [value for name, value in entries if name == output or (
            not name and _column(value) == output)] or [
            value for _, value in entries if _is_star(value)]
    if not chosen:
        return False
    selected = output or column if _is_star(chosen[0]) else _column(chosen[0])
    if selected is None:
        return False
    table, inner, scope = _source(query, queries, depth)
    if inner is not None:
        return _yields_every(inner, target, column, scope, selected, depth + 1)
    return table == target and selected == column


def _is_star(value: Any) -> bool:
    node = _node(value)
    return bool(node and node[0] == "ColumnRef" and any(
        (_node(f) or ("", {}))[0] == "A_Star" for f in node[1].get("fields", [])))


def _finds_itself(value: Any, target: Table, queries: Queries) -> bool:
    """`EXISTS (SELECT ... FROM target [t2] [WHERE t2.c = target.c ...])`: every row of a
    table with rows finds itself (and a table without rows loses nothing)."""
    query = _select(value)
    if query is None or query.get("op") not in (None, "SETOP_NONE"):
        return False
    limit, offset = query.get("limitCount"), query.get("limitOffset")
    if (limit is not None and _constant(limit) is not None) or (
            offset is not None and _constant(offset) not in (0, None)) or \
            len(query.get("fromClause") or []) != 1:
        return False
    table, _, _ = _source(query, _with(query, queries), 0)
    if table != target:
        return False
    where = query.get("whereClause")
    return where is None or truth(where) is True or _self_join(where)


def _last_field(column: dict[str, Any]) -> str | None:
    fields = column.get("fields") or []
    return _string(fields[-1]) if fields else None


def _joins_itself(target: Table, sources: Any, condition: Any, queries: Queries) -> bool:
    """`DELETE FROM t USING t t2 WHERE t.id = t2.id` (or a subquery over every row of t):
    every row matches itself."""
    if condition is None or not _self_join(condition):
        return False
    columns = _joined_columns(condition)
    for item in sources or []:
        source = _node(item)
        if source is None:
            continue
        kind, body = source
        if kind == "RangeVar" and table_of(body) == target:
            return True
        if kind == "RangeSubselect" and columns and all(
                _yields_every(body.get("subquery"), target, c, queries, c) for c in columns):
            return True
    return False


def _joined_columns(condition: Any) -> list[str]:
    """The columns `a.c = b.c AND ...` joins on."""
    node = _node(condition)
    if node is None:
        return []
    kind, body = node
    if kind == "BoolExpr":
        return [c for arg in body.get("args", []) for c in _joined_columns(arg)]
    column = _column(body.get("lexpr")) if kind == "A_Expr" else None
    return [column] if column else []


def _strip_locations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_locations(v) for k, v in value.items() if k != "location"}
    if isinstance(value, list):
        return [_strip_locations(v) for v in value]
    return value


# ------------------------------------------------------------------ statements


class _Reader:
    """Reads one statement's tree into a Statement."""

    def __init__(self, text: str, span: tuple[int, int], *, depth: int,
                 deferred: bool = False, calls: bool = True) -> None:
        self.text = text
        self.span = span
        self.depth = depth
        self.deferred = deferred
        self.calls = calls
        """Whether the parse tree has function calls at all (no walk for them if not)."""

    def statement(self, tree: dict[str, Any]) -> Statement:
        node = _node(tree)
        if node is None:
            return self._make("UNKNOWN", uncertain="an empty statement")
        kind, body = node
        reader = getattr(self, f"_{kind}", None)
        base = reader(body) if reader is not None else self._generic(kind, body)
        functions, settings, nested = self._calls(body)
        nested += self._dml_inside(kind, body)
        return replace(base, functions=tuple(sorted(set(base.functions) | set(functions))),
                       settings=base.settings + tuple(settings),
                       nested=base.nested + tuple(nested))

    def _make(self, kind: str, **fields: Any) -> Statement:
        fields.setdefault("deferred", self.deferred)
        return Statement(kind, self.span, self.text, **fields)

    def _inner(self, tree: Any, *, deferred: bool | None = None, calls: bool | None = None
               ) -> Statement:
        """A statement run by this one (same span: its text is part of this one's)."""
        reader = _Reader(self.text, self.span, depth=self.depth + 1,
                         calls=self.calls if calls is None else calls,
                         deferred=self.deferred if deferred is None else deferred)
        return reader.statement(tree) if isinstance(tree, dict) else \
            reader._make("UNKNOWN", uncertain="an unreadable inner statement")

    def _parsed(self, sql_text: str, how: str, *, deferred: bool) -> tuple[Statement, ...]:
        """Statements of SQL text found inside this one (a body, a dblink argument)."""
        if self.depth >= MAX_DEPTH:
            return (self._make("UNKNOWN", uncertain=f"{how} is nested too deeply to analyse",
                               deferred=deferred),)
        try:
            tree = _parse(sql_text)
        except SqlSyntaxError as exc:
            return (self._make("UNKNOWN", uncertain=f"{how} does not parse: {exc}",
                               deferred=deferred),)
        return tuple(self._inner(raw["stmt"], deferred=deferred, calls=tree["harness_calls"])
                     for raw in tree.get("stmts", []))

    # ------------------------------------------------------------ walking

    def _calls(self, body: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]],
                                                    list[Statement]]:
        """Functions called anywhere in the statement, settings changed through set_config,
        and SQL handed to dblink."""
        functions: list[str] = []
        settings: list[tuple[str, str]] = []
        nested: list[Statement] = []
        if not self.calls:
            return functions, settings, nested
        for kind, node in _nodes(body):
            if kind != "FuncCall":
                continue
            name = (_string((node.get("funcname") or [None])[-1]) or "").lower()
            functions.append(name)
            args = node.get("args") or []
            if name == "set_config" and args:
                setting = _constant(args[0])
                value = _constant(args[1]) if len(args) > 1 else _UNKNOWN
                settings.append((setting if isinstance(setting, str) else "?",
                                 value if isinstance(value, str) else "?"))
            if name in SQL_TEXT_FUNCTIONS and len(args) > SQL_TEXT_FUNCTIONS[name]:
                sql_text = _constant(args[SQL_TEXT_FUNCTIONS[name]])
                if isinstance(sql_text, str):
                    nested.extend(self._parsed(sql_text, f"{name}'s SQL", deferred=False))
                else:
                    nested.append(self._make("UNKNOWN", uncertain=f"{name} runs SQL only "
                                             "known at run time"))
        return functions, settings, nested

    _DML = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")

    def _dml_inside(self, kind: str, body: dict[str, Any]) -> list[Statement]:
        """Data-modifying statements inside this one (CTEs, at any depth)."""
        if kind in ("RuleStmt", "ExplainStmt", "PrepareStmt", "CreateFunctionStmt",
                    "DoStmt"):
            return []  # their inner statements are read by their own readers
        found: list[Statement] = []
        for part in ("withClause",):
            clause = body.get(part)
            if not clause:
                continue
            for cte_kind, cte in _nodes(clause):
                if cte_kind != "CommonTableExpr":
                    continue
                query = _node(cte.get("ctequery"))
                if query and query[0] in self._DML:
                    found.append(self._inner(cte["ctequery"]))
                elif query:
                    found.extend(self._dml_inside(query[0], query[1]))
        return found

    def _where(self, clause: Any, target: Table | None, queries: Queries) -> dict[str, Any]:
        if clause is None:
            return {"has_where": False}
        return {"has_where": True, "where_constant_true": every_row(clause, target, queries)}

    # ------------------------------------------------------------ kinds

    def _SelectStmt(self, body: dict[str, Any]) -> Statement:
        into = body.get("intoClause")
        if into:
            return self._make("SELECT INTO", targets=(_relation(into.get("rel")) or "?",))
        return self._make("SELECT")

    def _InsertStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("INSERT", targets=(_relation(body.get("relation")) or "?",))

    def _UpdateStmt(self, body: dict[str, Any]) -> Statement:
        return self._changes("UPDATE", body, body.get("fromClause"))

    def _DeleteStmt(self, body: dict[str, Any]) -> Statement:
        return self._changes("DELETE", body, body.get("usingClause"))

    def _changes(self, kind: str, body: dict[str, Any], sources: Any) -> Statement:
        """An UPDATE or DELETE: its table, and whether its WHERE spares any row."""
        name = _relation(body.get("relation")) or "?"
        table, queries = table_of(body.get("relation")), _with(body, {})
        where = self._where(body.get("whereClause"), table, queries)
        if table is not None and _joins_itself(table, sources, body.get("whereClause"),
                                               queries):
            where["where_constant_true"] = True
        return self._make(kind, targets=(name,), **where)

    def _MergeStmt(self, body: dict[str, Any]) -> Statement:
        target = body.get("relation") or {}
        name = _relation(target) or "?"
        table = table_of(target)
        condition = body.get("joinCondition")
        every_row = truth(condition) is True or (table is not None and _joins_itself(
            table, [body.get("sourceRelation")], condition, _with(body, {})))
        actions = [clause for kind, clause in _nodes(body.get("mergeWhenClauses"))
                   if kind == "MergeWhenClause"]
        deletes = any(a.get("commandType") == "CMD_DELETE" for a in actions)
        updates = any(a.get("commandType") == "CMD_UPDATE" for a in actions)
        unconditional = any(a.get("matchKind") == "MERGE_WHEN_MATCHED" and
                            not a.get("condition") and a.get("commandType") in
                            ("CMD_DELETE", "CMD_UPDATE") for a in actions)
        nested: list[Statement] = []
        if (deletes or updates) and every_row and unconditional:
            # Every row of the target is matched, and changed or deleted.
            nested.append(self._make("DELETE" if deletes else "UPDATE", targets=(name,),
                                     has_where=False))
        return self._make("MERGE", targets=(name,), nested=tuple(nested))

    def _TruncateStmt(self, body: dict[str, Any]) -> Statement:
        names = [_relation(r) for _, r in _nodes(body.get("relations")) if "relname" in r]
        return self._make("TRUNCATE", targets=tuple(n for n in names if n))

    def _DropStmt(self, body: dict[str, Any]) -> Statement:
        names = []
        for item in body.get("objects") or []:
            node = _node(item)
            if node and node[0] == "List":
                names.append(_qualified(node[1].get("items", [])))
            elif node and node[0] == "String":
                names.append(str(node[1].get("sval", "")))
            elif node and node[0] == "TypeName":
                names.append(_qualified(node[1].get("names", [])))
            else:
                names.append("?")
        return self._make("DROP", object_kind=_object_kind(body.get("removeType")),
                          targets=tuple(names),
                          uncertain="CASCADE drops whatever depends on it" if
                          body.get("behavior") == "DROP_CASCADE" else None)

    def _DropdbStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("DROP", object_kind="DATABASE", targets=(str(body.get("dbname")),))

    def _CreatePolicyStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("GRANT", object_kind="POLICY",
                          targets=(_relation(body.get("table")) or "?",))

    def _AlterPolicyStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("GRANT", object_kind="POLICY",
                          targets=(_relation(body.get("table")) or "?",))

    def _AlterTableStmt(self, body: dict[str, Any]) -> Statement:
        commands = [cmd for kind, cmd in _nodes(body.get("cmds")) if kind == "AlterTableCmd"]
        if any(cmd.get("subtype") in ("AT_DisableRowSecurity", "AT_NoForceRowSecurity")
               for cmd in commands):
            return self._make("GRANT", object_kind="ROW SECURITY",
                              targets=(_relation(body.get("relation")) or "?",))
        drops = any(cmd.get("subtype") == "AT_DropColumn" for cmd in commands)
        rewritten = None
        for cmd in commands:
            using = ((_node(cmd.get("def")) or ("", {}))[1]).get("raw_default")
            if cmd.get("subtype") == "AT_AlterColumnType" and using is not None and \
                    not any(kind == "ColumnRef" for kind, _ in _nodes(using)):
                rewritten = str(cmd.get("name"))
        table = _relation(body.get("relation")) or "?"
        silenced = [_SILENCING[cmd["subtype"]].format(name=cmd.get("name") or "?")
                    for cmd in commands if cmd.get("subtype") in _SILENCING]
        detached = [f"the partition {_relation(cmd['def']['PartitionCmd'].get('name'))}"
                    if cmd.get("subtype") == "AT_DetachPartition" else
                    f"the rows of {table} (no longer part of "
                    f"{_relation((_node(cmd.get('def')) or ('', {}))[1])})"
                    for cmd in commands
                    if cmd.get("subtype") in ("AT_DetachPartition", "AT_DropInherit")
                    and (cmd.get("subtype") == "AT_DropInherit" or "PartitionCmd" in (
                        cmd.get("def") or {}))]
        cascade = next((f"DROP CONSTRAINT {cmd.get('name')} CASCADE drops whatever depends "
                        "on it" for cmd in commands if cmd.get("subtype") ==
                        "AT_DropConstraint" and cmd.get("behavior") == "DROP_CASCADE"), None)
        return self._make("ALTER", object_kind=_object_kind(body.get("objtype")) or "TABLE",
                          targets=(table,), drops_column=drops, rewrites_column=rewritten,
                          silences=", ".join(silenced) or None,
                          detaches=", ".join(detached) or None, uncertain=cascade)

    def _VacuumStmt(self, body: dict[str, Any]) -> Statement:
        full = any(option.get("defname") == "full" and _flag(option)
                   for kind, option in _nodes(body.get("options")) if kind == "DefElem")
        names = [_relation(r.get("relation")) for kind, r in _nodes(body.get("rels"))
                 if kind == "VacuumRelation"]
        word = "VACUUM" if body.get("is_vacuumcmd") else "ANALYZE"
        return self._make(word, targets=tuple(n for n in names if n),
                          locks=f"VACUUM FULL rewrites {', '.join(n for n in names if n) or 'every table'} "
                          "under an ACCESS EXCLUSIVE lock" if full else None)

    def _ClusterStmt(self, body: dict[str, Any]) -> Statement:
        name = _relation(body.get("relation"))
        return self._make("CLUSTER", targets=(name,) if name else (),
                          locks=f"CLUSTER rewrites {name or 'every clustered table'} under an "
                          "ACCESS EXCLUSIVE lock")

    def _ReindexStmt(self, body: dict[str, Any]) -> Statement:
        concurrent = any(option.get("defname") == "concurrently" and _flag(option)
                         for kind, option in _nodes(body.get("params")) if kind == "DefElem")
        name = _relation(body.get("relation")) or body.get("name") or "?"
        what = str(body.get("kind", "")).removeprefix("REINDEX_OBJECT_").lower()
        return self._make("REINDEX", targets=(name,) if body.get("relation") else (),
                          locks=None if concurrent else f"REINDEX {what} {name} without "
                          "CONCURRENTLY blocks writes (and reads that use the index) until "
                          "it ends")

    def _LockStmt(self, body: dict[str, Any]) -> Statement:
        names = [_relation(r) for kind, r in _nodes(body.get("relations")) if "relname" in r]
        mode = int(body.get("mode") or 0)
        return self._make("LOCK", targets=tuple(n for n in names if n),
                          locks=f"LOCK {', '.join(n for n in names if n)} in "
                          f"{'ACCESS EXCLUSIVE' if mode == 8 else 'EXCLUSIVE'} mode keeps "
                          f"{'readers' if mode == 8 else 'writers'} out" if mode >= 7 else None)

    def _AlterRoleSetStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("ALTER", object_kind="ROLE SETTING",
                          settings=_setting(body.get("setstmt")))

    def _AlterDatabaseSetStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("ALTER", object_kind="DATABASE SETTING",
                          settings=_setting(body.get("setstmt")))

    def _AlterDatabaseStmt(self, body: dict[str, Any]) -> Statement:
        options = {o.get("defname"): o for kind, o in _nodes(body.get("options"))
                   if kind == "DefElem"}
        closing = [name for name in ("connection_limit", "allow_connections", "is_template")
                   if name in options]
        return self._make("ALTER", object_kind="DATABASE",
                          access=f"ALTER DATABASE {body.get('dbname')} changes who may connect "
                          f"({', '.join(closing)})" if closing else None)

    def _AlterDefaultPrivilegesStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("GRANT", object_kind="DEFAULT PRIVILEGES")

    def _AlterFunctionStmt(self, body: dict[str, Any]) -> Statement:
        definer = any(option.get("defname") == "security" and _flag(option)
                      for kind, option in _nodes(body.get("actions")) if kind == "DefElem")
        name = _qualified((body.get("func") or {}).get("objname") or [])
        return self._make("ALTER", object_kind=_object_kind(body.get("objtype")),
                          access=f"{name} would run with its owner's rights (SECURITY "
                          "DEFINER)" if definer else None)

    def _DropSubscriptionStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("DROP", object_kind="SUBSCRIPTION",
                          targets=(str(body.get("subname")),),
                          uncertain=f"DROP SUBSCRIPTION {body.get('subname')} stops "
                          "replication and drops its slot on the publisher, a server this "
                          "SQL does not show")

    def _DropOwnedStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("DROP", object_kind="OWNED")

    def _ViewStmt(self, body: dict[str, Any]) -> Statement:
        view = _relation(body.get("view")) or "?"
        bases = tuple(sorted({name for kind, node in _nodes(body.get("query"))
                              if kind == "RangeVar" and (name := _relation(node))}))
        return self._make("CREATE", object_kind="VIEW", targets=(view,), reads=bases)

    def _RenameStmt(self, body: dict[str, Any]) -> Statement:
        relation = _relation(body.get("relation"))
        renamed = _object_kind(body.get("renameType"))
        name = relation or _string(body.get("object")) or body.get("subname") or "?"
        what = None
        if renamed == "COLUMN":
            what = f"column {body.get('subname')} of {relation}"
        elif renamed in _READ_BY_NAME:
            what = f"{renamed.lower()} {name}"
        return self._make("ALTER", object_kind=renamed, targets=(relation,) if relation else (),
                          renames=what)

    def _CopyStmt(self, body: dict[str, Any]) -> Statement:
        relation = _relation(body.get("relation"))
        is_from = bool(body.get("is_from"))
        filename = body.get("filename")
        nested = (self._inner(body["query"]),) if body.get("query") else ()
        return self._make("COPY", targets=(relation,) if relation and is_from else (),
                          copy_from=is_from, copy_program=bool(body.get("is_program")),
                          copy_file=str(filename) if filename and not body.get("is_program")
                          else None, nested=nested)

    def _ExplainStmt(self, body: dict[str, Any]) -> Statement:
        analyze = any(option.get("defname") == "analyze" and
                      _constant(option.get("arg")) not in (False, "false", "off", 0)
                      for kind, option in _nodes(body.get("options")) if kind == "DefElem")
        nested = (self._inner(body["query"]),) if analyze and body.get("query") else ()
        return self._make("EXPLAIN", nested=nested)

    def _PrepareStmt(self, body: dict[str, Any]) -> Statement:
        # Judged as if it ran: an EXECUTE in the same input runs exactly this.
        return self._make("PREPARE", nested=(self._inner(body.get("query")),),
                          object_kind=str(body.get("name", "")))

    def _ExecuteStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("EXECUTE", object_kind=str(body.get("name", "")))

    def _VariableSetStmt(self, body: dict[str, Any]) -> Statement:
        name = str(body.get("name", ""))
        args = body.get("args") or []
        value = _constant(args[0]) if args else ""
        return self._make("SET", settings=((name, str(value) if value is not _UNKNOWN
                                            else "?"),))

    def _DoStmt(self, body: dict[str, Any]) -> Statement:
        options = {o.get("defname"): _string(o.get("arg")) for kind, o in
                   _nodes(body.get("args")) if kind == "DefElem"}
        code = options.get("as") or ""
        language = (options.get("language") or "plpgsql").lower()
        nested, uncertain = self._body(code, language, "the DO block", deferred=False)
        return self._make("DO", nested=nested, uncertain=uncertain)

    def _CreateFunctionStmt(self, body: dict[str, Any]) -> Statement:
        options = {o.get("defname"): o.get("arg") for kind, o in
                   _nodes(body.get("options")) if kind == "DefElem"}
        language = (_string(options.get("language")) or "sql").lower()
        name = _qualified(body.get("funcname") or [])
        what = "PROCEDURE" if body.get("is_procedure") else "FUNCTION"
        if body.get("sql_body"):
            nested = tuple(self._inner(tree, deferred=True)
                           for tree in _statement_nodes(body["sql_body"]))
            return self._make("CREATE", object_kind=what, targets=(name,), nested=nested)
        source = options.get("as")
        parts = _node(source)
        code = ""
        if parts and parts[0] == "List":
            code = _string(parts[1].get("items", [None])[0]) or ""
        if language == "c" and code:
            return self._make("CREATE", object_kind=what, targets=(name,), library=code)
        nested, uncertain = self._body(code, language, f"{what.lower()} {name}",
                                       deferred=True)
        return self._make("CREATE", object_kind=what, targets=(name,), nested=nested,
                          uncertain=uncertain)

    def _body(self, code: str, language: str, what: str, *, deferred: bool
              ) -> tuple[tuple[Statement, ...], str | None]:
        if language == "sql":
            return self._parsed(code, what, deferred=deferred), None
        if language != "plpgsql":
            return (), f"{what} is written in {language}, which is not analysed"
        return self._plpgsql(code, what, deferred=deferred)

    def _plpgsql(self, code: str, what: str, *, deferred: bool
                 ) -> tuple[tuple[Statement, ...], str | None]:
        from pglast import parse_plpgsql, parser

        tag = "$harness_body$"
        if tag in code:
            return (), f"{what} cannot be read"
        # The body is read as a function returning what lets its RETURNs parse (a DO block
        # and a procedure return nothing, a trigger function NULL or a row, a set-returning
        # function RETURN NEXT): what it returns is not what is judged.
        failure: parser.ParseError | None = None
        for returns in ("void", "trigger", "SETOF record"):
            try:
                functions = parse_plpgsql(f"CREATE FUNCTION harness_body() RETURNS {returns} "
                                          f"LANGUAGE plpgsql AS {tag}{code}{tag}")
                break
            except parser.ParseError as exc:
                failure = failure or exc
        else:
            return (self._make("UNKNOWN", uncertain=f"{what} does not parse: {failure}",
                               deferred=deferred),), None
        nested: list[Statement] = []
        uncertain = None
        for kind, node in _nodes(functions):
            if kind == "PLpgSQL_stmt_dynexecute":
                expression = _string_of(node.get("query"))
                statements, problem = self._dynamic(expression, what, deferred=deferred)
                nested.extend(statements)
                uncertain = uncertain or problem
            elif kind == "PLpgSQL_expr" and node.get("parseMode") == 0:
                nested.extend(self._parsed(str(node.get("query", "")), what,
                                           deferred=deferred))
            elif kind == "PLpgSQL_expr":
                # An expression (a condition, an assignment): its function calls count.
                nested.extend(s for s in self._parsed(f"SELECT {node.get('query', '')}", what,
                                                       deferred=deferred)
                              if s.functions or s.nested)
        return tuple(nested), uncertain

    def _dynamic(self, expression: str, what: str, *, deferred: bool
                 ) -> tuple[list[Statement], str | None]:
        """EXECUTE of a string built at run time: its constant parts are read with a
        placeholder for the rest; whatever the placeholder stands for stays unknown."""
        try:
            tree = _parse(f"SELECT {expression}")
            value = tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["val"]
        except (SqlSyntaxError, KeyError, IndexError, TypeError):
            return [], f"{what} runs SQL built at run time"
        text, exact = _concatenation(value)
        if text is None:
            return [], f"{what} runs SQL built at run time"
        statements = list(self._parsed(text, what, deferred=deferred)) if text.strip() else []
        statements = [s for s in statements if s.kind != "UNKNOWN"] if not exact else statements
        return statements, None if exact else f"{what} runs SQL built at run time"

    def _CallStmt(self, body: dict[str, Any]) -> Statement:
        call = (body.get("funccall") or {})
        name = _qualified(call.get("funcname") or [])
        return self._make("CALL", object_kind=name,
                          uncertain=f"CALL {name} runs a procedure whose body is not here")

    def _CreateTrigStmt(self, body: dict[str, Any]) -> Statement:
        function = _qualified(body.get("funcname") or [])
        return self._make("CREATE", object_kind="TRIGGER",
                          targets=(_relation(body.get("relation")) or "?",), runs=function,
                          uncertain=f"the trigger runs {function}, whose body is not here")

    def _CreateEventTrigStmt(self, body: dict[str, Any]) -> Statement:
        function = _qualified(body.get("funcname") or [])
        return self._make("CREATE", object_kind="EVENT TRIGGER",
                          uncertain=f"the event trigger runs {function} on every DDL command")

    def _RuleStmt(self, body: dict[str, Any]) -> Statement:
        relation = _relation(body.get("relation")) or "?"
        actions = tuple(self._inner(action, deferred=True) for action in
                        body.get("actions") or [])
        return self._make("CREATE", object_kind="RULE", targets=(relation,), nested=actions,
                          fires_on=str(body.get("event", "CMD_?"))[4:],
                          uncertain=None if actions else
                          f"the rule replaces every {body.get('event', '?')[4:]} on "
                          f"{relation} with nothing")

    def _AlterSystemStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("ALTER", object_kind="SYSTEM")

    def _GrantStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("GRANT" if body.get("is_grant") else "REVOKE",
                          object_kind=_object_kind(body.get("objtype")))

    def _GrantRoleStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("GRANT" if body.get("is_grant") else "REVOKE", object_kind="ROLE")

    def _CreateRoleStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("CREATE", object_kind="ROLE")

    def _AlterRoleStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("ALTER", object_kind="ROLE")

    def _DropRoleStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("DROP", object_kind="ROLE")

    def _CreateTableAsStmt(self, body: dict[str, Any]) -> Statement:
        into = body.get("into") or {}
        return self._make("CREATE", object_kind=_object_kind(body.get("objtype")),
                          targets=(_relation(into.get("rel")) or "?",))

    def _LoadStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("LOAD", uncertain=f"LOAD runs the library {body.get('filename')}")

    def _CreateExtensionStmt(self, body: dict[str, Any]) -> Statement:
        return self._make("CREATE", object_kind="EXTENSION",
                          uncertain=f"the extension {body.get('extname')} runs its own install "
                                    "script")

    def _generic(self, kind: str, body: dict[str, Any]) -> Statement:
        words = _words(self.text)
        first = words[0] if words else "UNKNOWN"
        objtype = body.get("objtype") or body.get("kind")
        object_kind = _object_kind(objtype) if isinstance(objtype, str) and \
            objtype.startswith("OBJECT_") else None
        relation = _relation(body.get("relation")) if isinstance(body.get("relation"), dict) \
            else None
        targets = (relation,) if relation and first in ("ALTER", "CREATE", "LOCK", "CLUSTER",
                                                        "REINDEX", "VACUUM", "COMMENT") else ()
        if first in _KNOWN_FIRST_WORDS:
            return self._make(first, object_kind=object_kind, targets=targets)
        # It parsed, so it is PostgreSQL; only its kind is not modelled here.
        return self._make(first, object_kind=object_kind, targets=targets,
                          uncertain=f"{kind} statements are not modelled")


_SILENCING = {"AT_DisableTrig": "the trigger {name}", "AT_DisableTrigAll": "every trigger, "
              "foreign keys included", "AT_DisableTrigUser": "every user trigger",
              "AT_DisableRule": "the rule {name}"}
"""ALTER TABLE commands that switch off what runs on the table's writes."""


def _flag(option: dict[str, Any]) -> bool:
    """A boolean option's value: given alone it is true (`FULL`, `CONCURRENTLY`)."""
    arg = option.get("arg")
    if arg is None:
        return True
    value = _string(arg)
    if value is not None:
        return value.lower() not in ("false", "off", "0", "no")
    node = _node(arg)
    if node and node[0] == "Boolean":
        return bool(node[1].get("boolval"))
    if node and node[0] == "Integer":
        return bool(node[1].get("ival"))
    return True


def _setting(setstmt: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """The (name, value) an ALTER ROLE or ALTER DATABASE ... SET gives later sessions."""
    if not setstmt or not setstmt.get("name"):
        return ()
    args = setstmt.get("args") or []
    value = _constant(args[0]) if args else ""
    return ((str(setstmt["name"]), str(value) if value is not _UNKNOWN else "?"),)


_READ_BY_NAME = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SCHEMA",
                           "DATABASE"})
"""Objects that readers (queries, applications) name: renaming them breaks the readers."""
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
"""PostgreSQL's own schemas: its catalogues, which only its commands should change."""

_KNOWN_FIRST_WORDS = frozenset({
    "CREATE", "ALTER", "DROP", "COMMENT", "REINDEX", "CLUSTER", "VACUUM", "ANALYZE",
    "ANALYSE", "REFRESH", "LOCK", "SECURITY", "BEGIN", "START", "COMMIT", "END", "ROLLBACK",
    "SAVEPOINT", "RELEASE", "ABORT", "SHOW", "RESET", "DISCARD", "LISTEN", "UNLISTEN",
    "NOTIFY", "FETCH", "MOVE", "CLOSE", "DECLARE", "DEALLOCATE", "VALUES", "TABLE",
    "CHECKPOINT", "SET"})


def _statement_nodes(value: Any) -> Iterator[dict[str, Any]]:
    """The statement nodes of a list of statements (a BEGIN ATOMIC body)."""
    node = _node(value)
    if node is not None and node[0].endswith("Stmt"):
        yield value
    elif node is not None and node[0] == "List":
        for item in node[1].get("items", []):
            yield from _statement_nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from _statement_nodes(item)


def _self_join(condition: Any) -> bool:
    """`ON t.c = s.c` for the same column on both sides: a table merged with itself."""
    node = _node(condition)
    if node is None:
        return False
    kind, body = node
    if kind == "BoolExpr" and body.get("boolop") == "AND_EXPR":
        parts = [arg for arg in body.get("args", []) if truth(arg) is not True]
        return bool(parts) and all(_self_join(arg) for arg in parts)
    if kind == "A_Expr" and _string((body.get("name") or [None])[-1]) == "=":
        left, right = _node(body.get("lexpr")), _node(body.get("rexpr"))
        if left and right and left[0] == right[0] == "ColumnRef":
            return [_string(f) for f in left[1].get("fields", [])][-1:] == \
                [_string(f) for f in right[1].get("fields", [])][-1:]
    return False


def _string_of(expression: Any) -> str:
    node = _node(expression)
    return str(node[1].get("query", "")) if node else ""


def _concatenation(value: Any) -> tuple[str | None, bool]:
    """The text of `'a' || x || 'b'` with a placeholder name for each unknown part, and
    whether it is exact (no unknown part)."""
    constant = _constant(value)
    if isinstance(constant, str):
        return constant, True
    node = _node(value)
    if node and node[0] == "A_Expr" and _string((node[1].get("name") or [None])[-1]) == "||":
        left, left_exact = _concatenation(node[1].get("lexpr"))
        right, right_exact = _concatenation(node[1].get("rexpr"))
        if left is None or right is None:
            return None, False
        return left + right, left_exact and right_exact
    if node and node[0] in ("ColumnRef", "FuncCall", "TypeCast", "ParamRef"):
        return "harness_unknown", False
    return None, False


def _words(text: str) -> tuple[str, ...]:
    from pglast import parser

    try:
        tokens = parser.scan(text)
    except parser.ParseError:
        return ()
    encoded = text.encode()
    words = []
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        if token.name in ("SCONST", "USCONST", "BCONST", "XCONST"):
            words.append("''")
            continue
        piece = encoded[token.start : token.end + 1].decode(errors="replace")
        words.append(piece.upper() if token.kind != "NO_KEYWORD" else piece)
    return tuple(words)


def _undefer_called(statements: list[Statement]) -> None:
    """A function created and called in the same text runs now: its body is not deferred."""
    called = {name for s in statements for inner in s.walk() for name in inner.functions}
    called |= {str(inner.object_kind).rsplit(".", 1)[-1].lower() for s in statements
               for inner in s.walk() if inner.kind == "CALL" and inner.object_kind}
    for index, statement in enumerate(statements):
        if statement.kind == "CREATE" and statement.object_kind in ("FUNCTION", "PROCEDURE") \
                and statement.targets and statement.targets[0].rsplit(".", 1)[-1].lower() \
                in called:
            statements[index] = replace(statement, nested=tuple(
                _now(inner) for inner in statement.nested))


def _triggers_of_known_functions(statements: list[Statement]) -> None:
    """A trigger that runs a function created in the same text runs code that is here:
    the function's body is judged (as code that runs later), the trigger is no unknown."""
    created = {_name_key(s.targets[0]) for s in statements if s.kind == "CREATE" and
               s.object_kind == "FUNCTION" and s.targets and s.uncertain is None}
    for index, statement in enumerate(statements):
        if statement.runs is not None and _name_key(statement.runs) in created:
            statements[index] = replace(statement, uncertain=None)


def _undefer_fired(statements: list[Statement]) -> None:
    """A rule created and then fired in the same text (an INSERT into its table after
    `CREATE RULE ... ON INSERT`) runs its actions now."""
    for index, statement in enumerate(statements):
        if statement.fires_on is None or not statement.targets:
            continue
        table = _name_key(statement.targets[0])
        if any(inner.kind == statement.fires_on and
               any(_name_key(t) == table for t in inner.targets)
               for later in statements[index + 1 :] for inner in later.walk()):
            statements[index] = replace(statement, nested=tuple(
                _now(inner) for inner in statement.nested))


def _name_key(name: str) -> str:
    schema, _, table = name.rpartition(".")
    return f"{schema or 'public'}.{table}"


def _now(statement: Statement) -> Statement:
    return replace(statement, deferred=False, nested=tuple(_now(n) for n in statement.nested))


def _resolve_executes(statements: list[Statement]) -> None:
    """EXECUTE of a statement PREPAREd in the same text runs what was judged there; one
    prepared elsewhere runs something this text does not show."""
    prepared = {s.object_kind for s in statements if s.kind == "PREPARE"}
    for index, statement in enumerate(statements):
        if statement.kind == "EXECUTE" and statement.object_kind not in prepared:
            statements[index] = replace(statement, uncertain=(
                f"EXECUTE {statement.object_kind} runs a statement prepared elsewhere"))


def _through_views(statements: list[Statement]) -> None:
    """A write to a view made in the same text writes the tables the view reads."""
    views = {s.targets[0]: s.reads for s in statements
             if s.kind == "CREATE" and s.object_kind == "VIEW" and s.targets}
    if not views:
        return

    def widen(statement: Statement) -> Statement:
        extra = tuple(base for target in statement.targets for base in views.get(target, ()))
        return replace(statement, targets=statement.targets + extra,
                       nested=tuple(widen(n) for n in statement.nested))

    statements[:] = [s if s.kind == "CREATE" else widen(s) for s in statements]
