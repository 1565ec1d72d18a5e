"""Hot-path SQL through the DB-API cursor: statements compiled once per dialect.

On the HL7 hot path a batch of a few messages runs a handful of statements. SQLAlchemy's
per-execution work (building the statement's cache key, parameter processing through its
execution context, result and event machinery) costs more there than the database does,
so these statements are written once, turned into the dialect's SQL once, and run on the
session's own DB-API connection, inside its transaction. Values are still converted by the
columns' own bind and result processors, exactly as SQLAlchemy would.

PostgreSQL: many rows go in one multi-row ``VALUES`` (one execution instead of one per
row), list parameters are one array (``= ANY($1)``) and :func:`pipelined` lets several
statements share one round trip. Statements use psycopg's ``RawCursor`` with native ``$n``
placeholders: psycopg parses a ``%s`` query on every execution once it is longer than its
cache takes, and a multi-row ``VALUES`` is. SQLite: ``executemany`` (a C loop, no round
trips).
Errors of the driver come back as SQLAlchemy's own exception classes (``IntegrityError``,
``OperationalError`` ...), so callers handle one kind of database error.
"""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, DateTime, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any] | None
#: Rows per multi-row statement (PostgreSQL allows 65,535 parameters, SQLite 32,766).
CHUNK = 200


def driver(conn: Connection) -> Any:
    """The DB-API connection under a SQLAlchemy connection (inside its transaction; also
    on a connection detached from the pool, where ``driver_connection`` is None)."""
    return conn.connection.dbapi_connection


def _cursor(conn: Connection) -> Any:
    dbapi_conn = driver(conn)
    if is_postgresql(conn):
        import psycopg  # only present where PostgreSQL is used

        return psycopg.RawCursor(dbapi_conn)
    return dbapi_conn.cursor()


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


@contextlib.contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """Statements sent inside share one round trip on PostgreSQL (psycopg pipeline mode);
    their results are read after the block. Elsewhere a no-op."""
    if not is_postgresql(conn):
        yield
        return
    with _translated(conn, "pipeline"), driver(conn).pipeline():
        yield


def autocommits(conn: Connection) -> bool:
    """Whether the DB-API connection is in autocommit mode: a caller that wants a
    transaction then sends BEGIN and COMMIT itself (:func:`send_control`), which on
    PostgreSQL lets them travel in a pipeline with the statements instead of costing round
    trips of their own (psycopg syncs the pipeline after the BEGIN it sends)."""
    return is_postgresql(conn) and bool(driver(conn).autocommit)


def send_control(conn: Connection, statement: str) -> None:
    """Send a transaction-control statement (``BEGIN``, ``COMMIT``) on a connection that
    :func:`autocommits`; inside :func:`pipelined` its error, if any, arrives at the end of
    the block."""
    with _translated(conn, statement):
        _cursor(conn).execute(statement)


@contextlib.contextmanager
def _translated(conn: Connection, sql: str, params: Any = None) -> Iterator[None]:
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi.Error, hide_parameters=True,
                                  dialect=conn.dialect) from exc


def _binds(table: Table, columns: Sequence[str], dialect: Dialect) -> tuple[Processor, ...]:
    # The dialect's own type (PostgreSQL's JSON, SQLite's DATETIME), as SQLAlchemy itself
    # resolves it before binding.
    processors: list[Processor] = []
    for name in columns:
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None and isinstance(table.c[name].type, DateTime):
            processors.append(_remembering_last(process))
        else:
            processors.append(process)
    return tuple(processors)


def _remembering_last(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` that skips the work when given the very object it was given last: the
    rows of a batch share one ``now`` for their timestamps, and SQLite's DATETIME is
    written out in Python (about 2 µs a value)."""
    last: tuple[Any, Any] = (object(), None)  # one tuple, replaced whole: thread-safe

    def remembering(value: Any) -> Any:
        nonlocal last
        seen, result = last
        if value is seen:
            return result
        result = process(value)
        last = (value, result)
        return result

    return remembering


def _marks(dialect: Dialect, count: int, start: int = 1) -> list[str]:
    """Placeholders for ``count`` positional parameters, numbered from ``start``."""
    if dialect.name == "postgresql":
        return [f"${n}" for n in range(start, start + count)]
    return ["?"] * count


class _RowValues:
    """A row's values in column order, through the columns' bind processors.

    ``itemgetter`` reads every column in C; only the few columns with a processor (times,
    JSON) run Python. Rows of the HL7 hot path have up to 25 columns.
    """

    __slots__ = ("_converted", "_get")

    def __init__(self, columns: Sequence[str], processors: Sequence[Processor]) -> None:
        if len(columns) == 1:  # itemgetter returns a bare value for one key, a tuple for more
            only = columns[0]
            self._get: Callable[[dict[str, Any]], Any] = lambda row: (row[only],)
        else:
            self._get = operator.itemgetter(*columns)
        self._converted = tuple((index, process) for index, process in enumerate(processors)
                                if process is not None)

    def __call__(self, row: dict[str, Any]) -> list[Any]:
        values = list(self._get(row))
        for index, process in self._converted:
            values[index] = process(values[index])
        return values


@dataclass(slots=True)
class _CompiledInsert:
    head: str
    values: _RowValues
    tail: str
    dialect: Dialect
    width: int
    #: Statement text per number of rows.
    texts: dict[int, str]

    def text(self, rows: int) -> str:
        found = self.texts.get(rows)
        if found is None:
            values = ", ".join(
                f"({', '.join(_marks(self.dialect, self.width, 1 + n * self.width))})"
                for n in range(rows))
            found = self.texts[rows] = self.head + values + self.tail
        return found


class FastInsert:
    """``INSERT INTO table (columns...)`` for many rows; every row gives every column.

    ``returning`` names columns to return (with ``on_conflict_do_nothing``: the rows that
    were inserted, which tells a caller which claims it won).
    """

    def __init__(self, table: Table, columns: Sequence[str], *,
                 returning: Sequence[str] = (), on_conflict_do_nothing: bool = False) -> None:
        self._table = table
        self._columns = tuple(columns)
        self._returning = tuple(returning)
        self._ignore = on_conflict_do_nothing
        self._compiled: dict[str, _CompiledInsert] = {}

    def _for(self, dialect: Dialect) -> _CompiledInsert:
        found = self._compiled.get(dialect.name)
        if found is None:
            quote = dialect.identifier_preparer
            tail = " ON CONFLICT DO NOTHING" if self._ignore else ""
            if self._returning:
                tail += " RETURNING " + ", ".join(quote.quote(c) for c in self._returning)
            found = _CompiledInsert(
                head=(f"INSERT INTO {quote.format_table(self._table)} "
                      f"({', '.join(quote.quote(name) for name in self._columns)}) VALUES "),
                values=_RowValues(self._columns, _binds(self._table, self._columns, dialect)),
                tail=tail, dialect=dialect, width=len(self._columns), texts={},
            )
            self._compiled[dialect.name] = found
        return found

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """Insert ``rows``; returns the cursors to read ``returning`` rows from (see
        :func:`fetch_all`; on PostgreSQL inside :func:`pipelined`, after the block)."""
        if not rows:
            return []
        c = self._for(conn.dialect)
        params = [c.values(row) for row in rows]
        multi_row = is_postgresql(conn) or bool(self._returning)
        cursors = []
        with _translated(conn, c.head):
            if not multi_row:
                cursor = _cursor(conn)
                try:
                    cursor.executemany(c.text(1), params)
                finally:
                    cursor.close()
                return []
            for start in range(0, len(params), CHUNK):
                chunk = params[start:start + CHUNK]
                cursor = _cursor(conn)
                cursor.execute(c.text(len(chunk)),
                               [value for values in chunk for value in values])
                if self._returning:
                    cursors.append(cursor)
        return cursors


def fetch_all(conn: Connection, cursors: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of statements sent by :meth:`FastInsert.execute` or :meth:`FastQuery.send`."""
    rows: list[tuple[Any, ...]] = []
    with _translated(conn, "fetch"):
        for cursor in cursors:
            rows.extend(cursor.fetchall())
            cursor.close()
    return rows


class FastUpdate:
    """``UPDATE table SET columns... WHERE key = ?`` for many rows (one per row)."""

    def __init__(self, table: Table, columns: Sequence[str], key: str = "id") -> None:
        self._table = table
        self._columns = (*columns, key)
        self._set = tuple(columns)
        self._key = key
        self._compiled: dict[str, tuple[str, _RowValues]] = {}

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        dialect = conn.dialect
        found = self._compiled.get(dialect.name)
        if found is None:
            quote = dialect.identifier_preparer
            marks = _marks(dialect, len(self._columns))
            sql = (f"UPDATE {quote.format_table(self._table)} SET "
                   + ", ".join(f"{quote.quote(name)} = {mark}"
                               for name, mark in zip(self._set, marks, strict=False))
                   + f" WHERE {quote.quote(self._key)} = {marks[-1]}")
            found = self._compiled[dialect.name] = (
                sql, _RowValues(self._columns, _binds(self._table, self._columns, dialect)))
        sql, values = found
        params = [values(row) for row in rows]
        with _translated(conn, sql):
            cursor = _cursor(conn)
            try:
                cursor.executemany(sql, params)
            finally:
                cursor.close()


_PARAM = re.compile(r"(IN )?:(\w+)")


class FastQuery:
    """A SELECT written once in portable SQL with ``:name`` parameters; ``col IN :name``
    takes a list (PostgreSQL: ``col = ANY(array)``, one statement text whatever the length;
    SQLite: ``col IN (?, ?, ...)``, one text per length).

    ``types`` give the result columns' types, so values come back as SQLAlchemy would
    return them (JSON parsed on SQLite, for instance); None where no conversion is needed.
    ``postgresql`` is the statement's own PostgreSQL text where it needs one (there a
    ``:name`` given a list is one array parameter).
    """

    def __init__(self, sql: str, types: Sequence[TypeEngine[Any] | Column[Any] | None], *,
                 postgresql: str | None = None) -> None:
        self._sql = " ".join(sql.split())
        self._postgresql = " ".join((postgresql or sql).split())
        self._types = tuple(t.type if isinstance(t, Column) else t for t in types)
        self._compiled: dict[tuple[object, ...], tuple[str, tuple[str, ...]]] = {}
        self._results: dict[str, tuple[Processor, ...]] = {}

    def _text(self, dialect: Dialect, params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        postgres = dialect.name == "postgresql"
        key: tuple[object, ...] = (dialect.name,) if postgres else (dialect.name, *(
            len(v) for v in params.values() if isinstance(v, list | tuple)))
        found = self._compiled.get(key)
        if found is None:
            names: list[str] = []

            def replace(match: re.Match[str]) -> str:
                names.append(match.group(2))
                if postgres:
                    mark = f"${len(names)}"
                    return f"= ANY({mark})" if match.group(1) else mark
                if not match.group(1):
                    return "?"
                return f"IN ({', '.join('?' * len(params[match.group(2)]))})"

            sql = _PARAM.sub(replace, self._postgresql if postgres else self._sql)
            found = self._compiled[key] = (sql, tuple(names))
        return found

    def _processors(self, dialect: Dialect) -> tuple[Processor, ...]:
        found = self._results.get(dialect.name)
        if found is None:
            found = self._results[dialect.name] = tuple(
                t.dialect_impl(dialect).result_processor(dialect, None) if t is not None
                else None for t in self._types)
        return found

    def send(self, conn: Connection, **params: Any) -> Any:
        """Run the query; read its rows with :meth:`rows` (inside :func:`pipelined`: after
        the block, so that several queries share one round trip)."""
        sql, names = self._text(conn.dialect, params)
        values: list[Any] = []
        for name in names:
            value = params[name]
            if isinstance(value, list | tuple) and not is_postgresql(conn):
                values.extend(value)
            else:
                values.append(list(value) if isinstance(value, tuple) else value)
        with _translated(conn, sql):
            cursor = _cursor(conn)
            cursor.execute(sql, values)
        return cursor

    def rows(self, conn: Connection, cursor: Any) -> list[tuple[Any, ...]]:
        processors = self._processors(conn.dialect)
        with _translated(conn, self._sql):
            try:
                found = cursor.fetchall()
            finally:
                cursor.close()
        if not any(processors):
            return found
        return [tuple(process(value) if process else value
                      for value, process in zip(row, processors, strict=True))
                for row in found]

    def all(self, conn: Connection, **params: Any) -> list[tuple[Any, ...]]:
        return self.rows(conn, self.send(conn, **params))
