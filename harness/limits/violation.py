"""A limit's name, and a breach of it."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class Limit(enum.StrEnum):
    """A limit's name, as the config and every refusal spell it."""

    MAX_COMMITS = "max_commits"
    MAX_DATABASE_ROWS = "max_database_rows"
    MAX_FILES_CHANGED = "max_files_changed"
    MAX_LINES_CHANGED = "max_lines_changed"
    MAX_ROWS_PER_TABLE = "max_rows_per_table"
    PROTECTED_TABLES = "protected_tables"
    PROTECTED_PATHS = "protected_paths"
    ALLOW_DDL = "allow_ddl"
    MASKED_COLUMNS = "masked_columns"
    SECRETS = "secrets"
    MAX_ACTIONS = "max_actions"
    MAX_WALL_SECONDS = "max_wall_seconds"
    MAX_SHELL_SECONDS = "max_shell_seconds"
    MAX_OUTPUT_BYTES = "max_output_bytes"
    TRIGGERS = "promotion.triggers"
    EFFECTS = "effects"


@dataclass(frozen=True)
class Violation:
    """One limit broken: which (`limit`, with the table for a per-table limit, as in
    `max_rows_per_table[orders]`), what was allowed, what was found, and where."""

    limit: str
    allowed: Any
    actual: Any
    detail: str

    @property
    def kind(self) -> Limit:
        """The limit, without its table."""
        return Limit(self.limit.split("[", 1)[0])

    @property
    def reason(self) -> str:
        """What an agent is told (the detail)."""
        return self.detail

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)
