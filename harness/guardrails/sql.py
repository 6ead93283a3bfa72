"""SQL analysis: what each statement of a SQL text would do, without running it.

The text is first masked, keeping every offset: string literals, dollar-quoted bodies
and comments are blanked, so nothing inside them can look like SQL. Statements are
split on the semicolons that remain, lists of literals are folded (a 10 KB VALUES list
costs no more than one row), and each statement is tokenised with sqlparse's keyword
tables and read by a
small state machine: its kind, the tables it writes, whether an UPDATE or DELETE has a
WHERE clause (and whether that clause is constant-true), data-modifying CTEs, COPY ...
PROGRAM, procedural code whose body cannot be seen. Anything the analysis cannot be
sure of is said in `Statement.uncertain`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from sqlparse import keywords as sql_keywords
from sqlparse import tokens as T

MAX_STATEMENT_CHARS = 64 * 1024
"""A statement larger than this after folding is not analysed (and so fails closed)."""

WRITE_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "ALTER", "DROP",
                         "COPY", "CREATE", "GRANT", "REVOKE", "COMMENT", "REINDEX", "CLUSTER",
                         "VACUUM", "REFRESH", "SELECT INTO", "DO", "CALL"})
READ_ONLY_KINDS = frozenset({"SELECT", "VALUES", "TABLE", "SHOW", "EXPLAIN", "SET", "RESET",
                             "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT",
                             "RELEASE", "PREPARE", "DEALLOCATE", "DISCARD", "LISTEN", "UNLISTEN",
                             "FETCH", "CLOSE", "DECLARE", "MOVE", "ABORT", "LOAD",
                             # EXECUTE runs a prepared statement, judged when it was PREPAREd.
                             "EXECUTE"})
DANGEROUS_FUNCTIONS = frozenset({
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import", "lo_export",
    "lo_unlink", "dblink_exec", "dblink", "pg_drop_replication_slot", "pg_promote",
    "pg_switch_wal", "pg_create_restore_point", "set_config", "pg_file_write", "pg_file_unlink",
    "pg_logical_emit_message", "pg_advisory_lock",
})


class SqlSyntaxError(ValueError):
    """The SQL text cannot be split into statements (an unterminated string, comment or
    dollar quote)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Statement:
    """One statement: what it does and to which tables."""

    kind: str
    """SELECT, INSERT, UPDATE, DELETE, MERGE, TRUNCATE, CREATE, ALTER, DROP, COPY, GRANT,
    DO, CALL, SELECT INTO, EXPLAIN, ... or UNKNOWN."""
    span: tuple[int, int]
    text: str
    object_kind: str | None = None
    """For CREATE, ALTER and DROP: TABLE, DATABASE, SCHEMA, FUNCTION, ..."""
    targets: tuple[str, ...] = ()
    """Tables (or databases, schemas) the statement writes, lower-cased unless quoted."""
    has_where: bool = True
    where_constant_true: bool = False
    where_span: tuple[int, int] | None = None
    copy_program: bool = False
    copy_from: bool = False
    functions: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    """The statement's words, upper-cased, without comments or literal contents."""
    nested: tuple[Statement, ...] = ()
    """Data-modifying statements inside CTEs, or what EXPLAIN ANALYZE runs."""
    uncertain: str | None = None

    @property
    def writes(self) -> bool:
        """Whether the statement (or something it contains) changes data or schema."""
        return self.kind in WRITE_KINDS or any(n.writes for n in self.nested)

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


# ---------------------------------------------------------------- masking

_SPECIAL = re.compile(r"""--|/\*|'|"|\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$|[eE]'""")


def mask(text: str) -> str:
    """The text with the contents of strings, dollar quotes and comments blanked; every
    character keeps its offset. Raises SqlSyntaxError on an unterminated one."""
    out: list[str] = []
    position = 0
    length = len(text)
    while True:
        match = _SPECIAL.search(text, position)
        if match is None:
            out.append(text[position:])
            break
        start = match.start()
        token = match.group()
        if token in ("'", "E'", "e'") and start > 0 and _is_ident_char(text[start - 1]) \
                and token == "'" and not _string_prefix(text, start):
            # a quote glued to a word (not a prefix like E/B/X/U&): still a string start
            pass
        out.append(text[position:start])
        if token == "--":
            end = text.find("\n", start)
            end = length if end < 0 else end
            out.append(" " * (end - start))
        elif token == "/*":
            end = _comment_end(text, start)
            out.append(_blank(text[start:end]))
        elif token in ("'", "E'", "e'"):
            escapes = token != "'"
            quote_at = start + len(token) - 1
            end = _string_end(text, quote_at, escapes=escapes)
            out.append(text[start : quote_at + 1] + " " * (end - quote_at - 2) + "'")
        elif token == '"':
            end = text.find('"', start + 1)
            while end >= 0 and end + 1 < length and text[end + 1] == '"':
                end = text.find('"', end + 2)
            if end < 0:
                raise SqlSyntaxError("unterminated quoted identifier", start)
            end += 1
            # Identifiers stay (they are table names) but may not split statements.
            out.append(re.sub(r"[;()']", "_", text[start:end]))
        else:  # dollar quote $tag$ ... $tag$
            closing = text.find(token, match.end())
            if closing < 0:
                raise SqlSyntaxError(f"unterminated dollar-quoted string {token}", start)
            end = closing + len(token)
            out.append(token + _blank(text[match.end() : closing]) + token)
        position = end
    return "".join(out)


def _string_prefix(text: str, at: int) -> bool:
    return text[max(0, at - 2) : at].upper() in ("U&",) or text[at - 1] in "bBxXnN"


def _is_ident_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _comment_end(text: str, start: int) -> int:
    depth = 0
    position = start
    while True:
        opening = text.find("/*", position)
        closing = text.find("*/", position)
        if closing < 0:
            raise SqlSyntaxError("unterminated /* comment", start)
        if 0 <= opening < closing:
            depth += 1
            position = opening + 2
            continue
        depth -= 1
        position = closing + 2
        if depth == 0:
            return position


def _string_end(text: str, quote_at: int, *, escapes: bool) -> int:
    position = quote_at + 1
    length = len(text)
    while position < length:
        char = text[position]
        if escapes and char == "\\":
            position += 2
            continue
        if char == "'":
            if position + 1 < length and text[position + 1] == "'":
                position += 2
                continue
            return position + 1
        position += 1
    raise SqlSyntaxError("unterminated string literal", quote_at)


# ---------------------------------------------------------------- folding

_LITERAL = r"\s*(?:[-+]?\d[\d.eE+-]*|'\s*'|NULL|TRUE|FALSE|DEFAULT|\$\d+)\s*"
# Two or more literals: a lone `(TRUE)` stays, a WHERE clause may depend on it.
_LITERAL_LIST = re.compile(rf"\((?:{_LITERAL},)+{_LITERAL}\)", re.IGNORECASE)
_TUPLE_LIST = re.compile(r"\(\)(?:\s*,\s*\(\))+")


def fold(masked: str) -> str:
    """Masked SQL with parenthesised lists of literals folded to `()`: they cannot hide
    a statement or a function call, and they are what makes big statements big."""
    folded = _LITERAL_LIST.sub("()", masked)
    return _TUPLE_LIST.sub("()", folded)


# ---------------------------------------------------------------- analysis


def analyse(text: str) -> SqlAnalysis:
    """Split `text` into statements and analyse each. Raises SqlSyntaxError when the
    text cannot be split."""
    analysis = SqlAnalysis(text)
    masked = mask(text)
    start = 0
    for piece in masked.split(";"):
        end = start + len(piece)
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            tail = len(piece.rstrip())
            span = (start + lead, start + tail)
            analysis.statements.append(
                _statement(fold(piece.strip()), span, text[span[0] : span[1]]))
        start = end + 1
    return analysis


def _statement(folded: str, span: tuple[int, int], original: str) -> Statement:
    if len(folded) > MAX_STATEMENT_CHARS:
        return Statement("UNKNOWN", span, original, uncertain=(
            f"statement too large to analyse ({len(folded)} characters after folding literal "
            f"lists; the limit is {MAX_STATEMENT_CHARS})"))
    words = _tokens(folded)
    try:
        return _Reader(words, span, original).statement()
    except RecursionError:
        return Statement("UNKNOWN", span, original, uncertain="statement nested too deeply to "
                         "analyse")


class _Token(NamedTuple):  # a tuple: thousands are made per large input
    kind: str  # "kw", "name", "punct", "op", "lit", "other"
    value: str  # upper-cased for keywords, normalised for names
    start: int  # offset in the folded statement
    end: int


# One pass of one regular expression over the masked text; words are classified with
# sqlparse's own keyword tables (the ones its lexer loads), so the vocabulary is
# sqlparse's while the cost is a single C-level scan.
_TOKEN = re.compile(r"""\s*(?:
    (?P<name>"(?:[^"]|"")*")
  | (?P<lit>(?:[eEbBxXnN]|[uU]&)?'[^']*'
      | \$(?P<tag>[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$.*?\$(?P=tag)?\$
      | \$\d+
      | (?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<word>[A-Za-z_\x80-\uffff][\w$\x80-\uffff]*)
  | (?P<op>::|<>|!=|>=|<=|\|\||[-+*/%^<>=~!@#&|?])
  | (?P<punct>[(),;.\[\]])
  | (?P<other>.))
""", re.VERBOSE | re.DOTALL)


@functools.cache
def _keywords() -> dict[str, object]:
    merged: dict[str, object] = {}
    for table in (sql_keywords.KEYWORDS_COMMON, sql_keywords.KEYWORDS_ORACLE,
                  sql_keywords.KEYWORDS_MYSQL, sql_keywords.KEYWORDS_PLPGSQL,
                  sql_keywords.KEYWORDS_HQL, sql_keywords.KEYWORDS_MSACCESS,
                  sql_keywords.KEYWORDS_SNOWFLAKE, sql_keywords.KEYWORDS_BIGQUERY,
                  sql_keywords.KEYWORDS):
        for word, ttype in table.items():
            if ttype in T.Keyword or ttype in T.Name.Builtin:
                merged.setdefault(word, ttype)
    return merged


def _tokens(folded: str) -> list[_Token]:
    keywords = _keywords()
    tokens: list[_Token] = []
    for match in _TOKEN.finditer(folded):
        kind = match.lastgroup
        if kind is None:  # trailing blanks
            continue
        if kind == "tag":
            kind = "lit"
        start, end = match.span(kind)
        value = folded[start:end]
        if kind == "word":
            upper = value.upper()
            if upper in keywords:
                tokens.append(_Token("kw", upper, start, end))
            else:
                tokens.append(_Token("name", value.lower(), start, end))
        elif kind == "name":
            tokens.append(_Token("name", _identifier(value), start, end))
        else:
            tokens.append(_Token(kind, value.upper() if kind == "op" else value, start, end))
    return tokens


def _identifier(value: str) -> str:
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return value[1:-1].replace('""', '"')
    return value.lower()


_DML = ("INSERT", "UPDATE", "DELETE", "MERGE")
_OBJECT_KINDS = ("TABLE", "DATABASE", "SCHEMA", "VIEW", "INDEX", "SEQUENCE", "FUNCTION",
                 "PROCEDURE", "TRIGGER", "RULE", "ROLE", "USER", "TYPE", "EXTENSION", "POLICY",
                 "MATERIALIZED", "DOMAIN", "AGGREGATE", "OWNED", "TABLESPACE", "SERVER",
                 "PUBLICATION", "SUBSCRIPTION", "EVENT", "COLLATION", "OPERATOR", "LANGUAGE",
                 "FOREIGN", "TEXT", "CAST", "CONVERSION", "GROUP", "STATISTICS", "ACCESS",
                 "DEFAULT", "SYSTEM", "UNLOGGED", "TEMP", "TEMPORARY")


class _Reader:
    """Reads one statement's tokens."""

    def __init__(self, tokens: list[_Token], span: tuple[int, int], original: str) -> None:
        self.tokens = tokens
        self.span = span
        self.original = original

    def statement(self) -> Statement:
        if not self.tokens:
            return Statement("EMPTY", self.span, self.original)
        functions = self._functions()
        nested, index = self._ctes(0)
        if index >= len(self.tokens):
            return self._unknown("a WITH clause with no statement after it")
        head = self.tokens[index]
        keyword = head.value if head.kind in ("kw", "name") else ""
        if head.kind == "punct" and head.value == "(":
            keyword = "SELECT"  # (SELECT ...) UNION ...
        statement = self._dispatch(keyword, index)
        extra: dict[str, object] = {"words": tuple(t.value.upper() for t in self.tokens)}
        if nested:
            extra["nested"] = statement.nested + tuple(nested)
        if functions:
            extra["functions"] = tuple(functions)
        return replace(statement, **extra)  # type: ignore[arg-type]

    # ------------------------------------------------------------ helpers

    def _unknown(self, why: str) -> Statement:
        return Statement("UNKNOWN", self.span, self.original, uncertain=why)

    def _at(self, index: int) -> _Token | None:
        return self.tokens[index] if index < len(self.tokens) else None

    def _is(self, index: int, *values: str) -> bool:
        token = self._at(index)
        return token is not None and token.kind in ("kw", "name") and token.value in values

    def _skip(self, index: int, *values: str) -> int:
        while self._is(index, *values):
            index += 1
        return index

    def _name(self, index: int) -> tuple[str | None, int]:
        """A possibly schema-qualified name starting at `index`."""
        parts = []
        token = self._at(index)
        while token is not None and token.kind in ("name", "kw"):
            parts.append(token.value if token.kind == "name" else token.value.lower())
            nxt = self._at(index + 1)
            if nxt is not None and nxt.kind == "punct" and nxt.value == ".":
                index += 2
                token = self._at(index)
                continue
            index += 1
            break
        return (".".join(parts) if parts else None), index

    def _depth_zero(self, start: int) -> list[tuple[int, _Token]]:
        """Tokens from `start` that are not inside parentheses."""
        depth = 0
        found = []
        for index in range(start, len(self.tokens)):
            token = self.tokens[index]
            if token.kind == "punct" and token.value == "(":
                depth += 1
            elif token.kind == "punct" and token.value == ")":
                depth -= 1
            elif depth == 0:
                found.append((index, token))
        return found

    def _functions(self) -> list[str]:
        names = []
        for index, token in enumerate(self.tokens[:-1]):
            following = self.tokens[index + 1]
            if token.kind == "name" and following.kind == "punct" and following.value == "(":
                names.append(token.value.lower())
        return names

    def _ctes(self, index: int) -> tuple[list[Statement], int]:
        """Skip a WITH clause, returning the data-modifying statements inside it."""
        if not self._is(index, "WITH"):
            return [], index
        index = self._skip(index + 1, "RECURSIVE")
        nested: list[Statement] = []
        while index < len(self.tokens):
            # name [(columns)] AS [NOT] [MATERIALIZED] ( body )
            while index < len(self.tokens) and not (
                self.tokens[index].kind == "punct" and self.tokens[index].value == "("
                and self._is(index - 1, "AS", "MATERIALIZED")
            ):
                index += 1
            if index >= len(self.tokens):
                break
            close = self._matching(index)
            inner = _Reader(self.tokens[index + 1 : close], self.span, self.original)
            body = inner.statement()
            if body.writes or body.kind in _DML:
                nested.append(body)
            index = close + 1
            if self._at(index) is not None and self.tokens[index].value == ",":
                index += 1
                continue
            break
        return nested, index

    def _matching(self, open_index: int) -> int:
        depth = 0
        for index in range(open_index, len(self.tokens)):
            token = self.tokens[index]
            if token.kind == "punct" and token.value == "(":
                depth += 1
            elif token.kind == "punct" and token.value == ")":
                depth -= 1
                if depth == 0:
                    return index
        return len(self.tokens)

    # ------------------------------------------------------------ kinds

    def _dispatch(self, keyword: str, index: int) -> Statement:
        if keyword in ("SELECT", "VALUES", "TABLE"):
            return self._select(index)
        if keyword == "INSERT":
            return self._insert(index)
        if keyword == "UPDATE":
            return self._update(index)
        if keyword == "DELETE":
            return self._delete(index)
        if keyword == "MERGE":
            target, _ = self._name(self._skip(index + 1, "INTO", "ONLY"))
            return Statement("MERGE", self.span, self.original, targets=_tuple(target))
        if keyword == "TRUNCATE":
            return self._truncate(index)
        if keyword in ("DROP", "ALTER", "CREATE"):
            return self._ddl(keyword, index)
        if keyword == "COPY":
            return self._copy(index)
        if keyword in ("GRANT", "REVOKE", "COMMENT", "REINDEX", "CLUSTER", "VACUUM", "ANALYZE",
                       "REFRESH", "SECURITY", "LOCK", "IMPORT", "REASSIGN", "NOTIFY",
                       "CHECKPOINT"):
            return Statement(keyword, self.span, self.original)
        if keyword == "DO":
            return Statement("DO", self.span, self.original,
                             uncertain="an anonymous code block; its body cannot be checked")
        if keyword == "CALL":
            name, _ = self._name(index + 1)
            return Statement("CALL", self.span, self.original, functions=_tuple(name),
                             uncertain="a procedure call; what it does cannot be checked")
        if keyword == "EXPLAIN":
            return self._explain(index)
        if keyword == "PREPARE":
            body = [i for i, t in self._depth_zero(index) if t.kind == "kw" and t.value == "AS"]
            if not body:
                return self._unknown("PREPARE without AS")
            inner = _Reader(self.tokens[body[0] + 1 :], self.span, self.original).statement()
            return Statement("PREPARE", self.span, self.original, nested=(inner,))
        if keyword in READ_ONLY_KINDS:
            return Statement(keyword, self.span, self.original)
        return self._unknown(f"unrecognised statement starting with {keyword or '?'!r}")

    def _select(self, index: int) -> Statement:
        into = [i for i, t in self._depth_zero(index) if t.kind == "kw" and t.value == "INTO"]
        if into:
            target, _ = self._name(self._skip(into[0] + 1, "TEMP", "TEMPORARY", "UNLOGGED", "TABLE"))
            return Statement("SELECT INTO", self.span, self.original, targets=_tuple(target))
        return Statement("SELECT", self.span, self.original)

    def _insert(self, index: int) -> Statement:
        target, _ = self._name(self._skip(index + 1, "INTO"))
        return Statement("INSERT", self.span, self.original, targets=_tuple(target))

    def _update(self, index: int) -> Statement:
        target, after = self._name(self._skip(index + 1, "ONLY"))
        return self._with_where("UPDATE", target, after)

    def _delete(self, index: int) -> Statement:
        target, after = self._name(self._skip(index + 1, "FROM", "ONLY"))
        return self._with_where("DELETE", target, after)

    def _with_where(self, kind: str, target: str | None, after: int) -> Statement:
        if target is None:
            return self._unknown(f"{kind} without a table name")
        level = self._depth_zero(after)
        where = [i for i, t in level if t.kind == "kw" and t.value == "WHERE"]
        if not where:
            return Statement(kind, self.span, self.original, targets=(target,), has_where=False)
        begin = where[0] + 1
        stops = [i for i, t in level if i > begin and t.kind == "kw" and t.value in
                 ("RETURNING", "ORDER", "LIMIT", "FOR")]
        end = stops[0] if stops else len(self.tokens)
        condition = self.tokens[begin:end]
        if condition and condition[0].kind == "kw" and condition[0].value == "CURRENT":
            return Statement(kind, self.span, self.original, targets=(target,))
        constant = _constant_true(condition)
        where_span = None
        if condition:
            where_span = (self.span[0] + self.tokens[where[0]].start,
                          self.span[0] + condition[-1].end)
        return Statement(kind, self.span, self.original, targets=(target,), has_where=True,
                         where_constant_true=constant, where_span=where_span)

    def _truncate(self, index: int) -> Statement:
        index = self._skip(index + 1, "TABLE", "ONLY")
        targets = []
        while index < len(self.tokens):
            name, index = self._name(index)
            if name:
                targets.append(name)
            if self._at(index) is not None and self.tokens[index].value == "*":
                index += 1
            if self._at(index) is not None and self.tokens[index].value == ",":
                index = self._skip(index + 1, "ONLY")
                continue
            break
        return Statement("TRUNCATE", self.span, self.original, targets=tuple(targets))

    def _ddl(self, keyword: str, index: int) -> Statement:
        index += 1
        index = self._skip(index, "OR", "REPLACE", "GLOBAL", "LOCAL", "TEMP", "TEMPORARY",
                           "UNLOGGED", "UNIQUE", "RECURSIVE", "TRUSTED", "PROCEDURAL",
                           "CONSTRAINT")
        token = self._at(index)
        object_kind = token.value.upper() if token is not None and token.kind in ("kw", "name") \
            else None
        if object_kind in ("MATERIALIZED", "FOREIGN", "TEXT", "EVENT", "ACCESS", "DEFAULT"):
            index += 1
            token = self._at(index)
            if token is not None:
                object_kind = f"{object_kind} {token.value.upper()}"
        if keyword == "ALTER" and object_kind == "SYSTEM":
            return Statement("ALTER", self.span, self.original, object_kind="SYSTEM")
        index = self._skip(index + 1, "IF", "NOT", "EXISTS", "CONCURRENTLY", "ONLY")
        targets = []
        while index < len(self.tokens):
            name, index = self._name(index)
            if name:
                targets.append(name)
            if keyword == "DROP" and self._at(index) is not None and \
                    self.tokens[index].value == ",":
                index += 1
                continue
            break
        uncertain = None
        if keyword == "CREATE" and object_kind in ("FUNCTION", "PROCEDURE", "TRIGGER", "RULE"):
            uncertain = f"CREATE {object_kind} defines code whose effect cannot be checked"
        if keyword == "CREATE" and object_kind == "TABLE" and any(
                t.kind == "kw" and t.value == "AS" for _, t in self._depth_zero(index)):
            object_kind = "TABLE AS"
        return Statement(keyword, self.span, self.original, object_kind=object_kind,
                         targets=tuple(targets), uncertain=uncertain)

    def _copy(self, index: int) -> Statement:
        level = self._depth_zero(index + 1)
        name, _ = self._name(index + 1)
        direction_from = any(t.kind == "kw" and t.value == "FROM" for _, t in level)
        program = any(t.value.upper() == "PROGRAM" for _, t in level)
        first = self._at(index + 1)
        if first is not None and first.kind == "punct":  # COPY (query) TO ...
            name = None
        return Statement("COPY", self.span, self.original, targets=_tuple(name) if direction_from
                         else (), copy_program=program, copy_from=direction_from)

    def _explain(self, index: int) -> Statement:
        index += 1
        analyze = False
        if self._at(index) is not None and self.tokens[index].value == "(":
            close = self._matching(index)
            options = [t.value.upper() for t in self.tokens[index + 1 : close]]
            analyze = "ANALYZE" in options or "ANALYSE" in options
            if analyze:
                position = options.index("ANALYZE" if "ANALYZE" in options else "ANALYSE")
                if position + 1 < len(options) and options[position + 1] in ("FALSE", "OFF", "0"):
                    analyze = False
            index = close + 1
        while self._is(index, "ANALYZE", "ANALYSE", "VERBOSE"):
            analyze = analyze or self.tokens[index].value in ("ANALYZE", "ANALYSE")
            index += 1
        inner_tokens = self.tokens[index:]
        inner = _Reader(inner_tokens, self.span, self.original).statement()
        if analyze:  # EXPLAIN ANALYZE runs the statement
            return Statement("EXPLAIN", self.span, self.original, nested=(inner,),
                             functions=inner.functions)
        return Statement("EXPLAIN", self.span, self.original)


def _tuple(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


# ------------------------------------------------------- constant-true WHERE


def _constant_true(condition: list[_Token]) -> bool:
    """Whether a WHERE condition holds for every row: TRUE, 1=1, x=x, 'a'='a', NOT FALSE,
    or any OR with such a branch, or an AND of them only."""
    if not condition:
        return False
    condition = _strip_parens(condition)
    branches = _split_top(condition, "OR")
    if len(branches) > 1:
        return any(_constant_true(branch) for branch in branches)
    parts = _split_top(condition, "AND")
    if len(parts) > 1:
        return all(_constant_true(part) for part in parts)
    return _atom_true(condition)


def _strip_parens(tokens: list[_Token]) -> list[_Token]:
    while len(tokens) >= 2 and tokens[0].value == "(" and tokens[-1].value == ")":
        depth = 0
        wraps = True
        for index, token in enumerate(tokens):
            if token.value == "(":
                depth += 1
            elif token.value == ")":
                depth -= 1
                if depth == 0 and index < len(tokens) - 1:
                    wraps = False
                    break
        if not wraps:
            break
        tokens = tokens[1:-1]
    return tokens


def _split_top(tokens: list[_Token], keyword: str) -> list[list[_Token]]:
    parts: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.value == "(":
            depth += 1
        elif token.value == ")":
            depth -= 1
        if depth == 0 and token.kind == "kw" and token.value == keyword:
            parts.append([])
            continue
        parts[-1].append(token)
    return parts


_TRUE_WORDS = {"TRUE", "'T'", "'TRUE'", "'Y'", "'YES'", "'ON'", "'1'"}


def _atom_true(tokens: list[_Token]) -> bool:
    values = [t.value.upper() for t in tokens]
    if values in (["TRUE"], ["1"], ["NOT", "FALSE"], ["NOT", "0"]):
        return True
    if values and values[0] == "NOT" and len(values) > 1:
        return _atom_false(tokens[1:])
    present = set(values)
    for operator in ("=", ">=", "<=", "IS NOT DISTINCT FROM", "LIKE", "<", ">", "<>", "!="):
        if operator.split()[0] not in present:
            continue
        sides = _split_operator(values, operator)
        if sides is None:
            continue
        left, right = sides
        if operator in ("=", ">=", "<=", "IS NOT DISTINCT FROM", "LIKE") and left == right \
                and left:
            return True
        numbers = _numbers(left, right)
        if numbers is not None:
            a, b = numbers
            return {"=": a == b, ">=": a >= b, "<=": a <= b, "<": a < b, ">": a > b,
                    "<>": a != b, "!=": a != b}.get(operator, False)
    if len(values) == 3 and values[1:] == ["IS", "TRUE"] and values[0] in _TRUE_WORDS:
        return True
    return len(values) == 1 and values[0] in _TRUE_WORDS


def _atom_false(tokens: list[_Token]) -> bool:
    values = [t.value.upper() for t in _strip_parens(tokens)]
    return values in (["FALSE"], ["0"]) or (
        (sides := _split_operator(values, "=")) is not None
        and (numbers := _numbers(*sides)) is not None and numbers[0] != numbers[1])


def _split_operator(values: list[str], operator: str) -> tuple[list[str], list[str]] | None:
    words = operator.split()
    for index in range(1, len(values) - len(words) + 1):
        if values[index : index + len(words)] == words:
            return values[:index], values[index + len(words):]
    return None


def _numbers(left: list[str], right: list[str]) -> tuple[float, float] | None:
    if len(left) != 1 or len(right) != 1:
        return None
    try:
        return float(left[0]), float(right[0])
    except ValueError:
        return None
