"""Bulk INSERT through the DB-API cursor, with SQLAlchemy's own value conversion.

On the HL7 hot path a batch writes one INSERT per table with a few rows each. SQLAlchemy's
per-execution work (parameter processing through its result and event machinery) costs
more there than the database does, so these statements are compiled once per dialect and
run with ``cursor.executemany`` on the session's own connection, inside its transaction.
Values are converted by the columns' bind processors, exactly as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


class FastInsert:
    """``INSERT INTO table (columns...)`` for many rows; every row gives every column."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self._table = table
        self._columns = tuple(columns)
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        found = self._compiled.get(dialect.name)
        if found is None:
            quote = dialect.identifier_preparer
            positional = dialect.paramstyle in ("qmark", "format", "numeric")
            marks = {"qmark": "?", "format": "%s"}
            placeholders = [
                marks.get(dialect.paramstyle, "?") if positional else f"%({name})s"
                for name in self._columns
            ]
            sql = (f"INSERT INTO {quote.format_table(self._table)} "
                   f"({', '.join(quote.quote(name) for name in self._columns)}) "
                   f"VALUES ({', '.join(placeholders)})")
            processors = tuple(
                # The dialect's own type (PostgreSQL's JSON, SQLite's DATETIME), as
                # SQLAlchemy itself resolves it before binding.
                self._table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in self._columns
            )
            found = _Compiled(sql, processors, positional)
            self._compiled[dialect.name] = found
        return found

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        c = self._for(conn)
        params: list[Any] = []
        for row in rows:
            values = [
                process(row[name]) if process else row[name]
                for name, process in zip(self._columns, c.processors, strict=True)
            ]
            params.append(tuple(values) if c.positional
                          else dict(zip(self._columns, values, strict=True)))
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(c.sql, params)
        finally:
            cursor.close()
