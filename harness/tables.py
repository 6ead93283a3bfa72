"""How a table is named: one parser for the names SQL, the catalogue and the config write,
one canonical form, and one rule for whether a name falls under a configured entry."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^".\s]+))\s*')
_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


@dataclass(frozen=True)
class TableName:
    """A table's schema (None when the name did not say) and name, as PostgreSQL reads
    them: unquoted parts fold to lower case, quoted ones keep their case and may hold dots."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        """`orders`, `public.orders`, `"Sales"."order.items"`; ValueError otherwise."""
        parts: list[str] = []
        position = 0
        while True:
            match = _PART.match(text, position)
            if match is None or match.end() == position:
                raise ValueError(f"{text!r} is not a table name")
            quoted, plain = match.groups()
            parts.append(quoted.replace('""', '"') if quoted is not None else plain.lower())
            position = match.end()
            if position == len(text):
                break
            if text[position] != ".":
                raise ValueError(f"{text!r} is not a table name")
            position += 1
        if len(parts) > 2:
            parts = parts[-2:]  # database.schema.table: the database is the connection's
        return cls(parts[0], parts[1]) if len(parts) == 2 else cls(None, parts[0])

    @property
    def qualified(self) -> str:
        """The canonical form, as the catalogue writes it (`quote_ident` of each part, the
        schema `public` when the name did not say)."""
        return f"{_quote(self.schema or 'public')}.{_quote(self.name)}"

    @property
    def display(self) -> str:
        """`schema.name` without quotes, for people to read."""
        return f"{self.schema or 'public'}.{self.name}"

    def under(self, entries: list[str]) -> str | None:
        """The first entry this table falls under: a bare entry names the table in any
        schema, a qualified one in that schema (an unqualified table is in `public`).
        Letter case is ignored: a protection must not be dodged by quoting a name."""
        for entry in entries:
            try:
                wanted = TableName.parse(entry)
            except ValueError:  # a config entry written as people read names: Audit Log
                schema, _, table = entry.rpartition(".")
                wanted = TableName(schema or None, table)
            if wanted.name.lower() != self.name.lower():
                continue
            if wanted.schema is None or wanted.schema.lower() == (self.schema or "public").lower():
                return entry
        return None


def _quote(part: str) -> str:
    """What PostgreSQL's quote_ident makes of `part`: quoted unless it is a plain lower-case
    word that is no keyword (or only an unreserved one)."""
    from pglast import keywords

    reserved = (keywords.RESERVED_KEYWORDS | keywords.COL_NAME_KEYWORDS
                | keywords.TYPE_FUNC_NAME_KEYWORDS)
    if _PLAIN.match(part) and part not in reserved:
        return part
    return '"' + part.replace('"', '""') + '"'
