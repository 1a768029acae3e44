"""The API's hot reads on PostgreSQL (the stock check's one row, a product's rows) on plain
psycopg connections in autocommit, without SQLAlchemy's per-execute machinery.

Measured on the bench machine, one read of one inventory row through ``SqlStore.read()`` cost
about ten times the CPU of the same statement on a psycopg connection, and two round trips
instead of one: the implicit ``BEGIN`` went with the ``SELECT``, then a ``ROLLBACK`` (a read
needs no transaction: on READ COMMITTED one statement sees one snapshot either way). Here a read
is one ``execute`` of a fixed statement (psycopg prepares it server-side after a few uses, as it
does under SQLAlchemy), with the column types' own result processing (UTC timestamps as the
store returns them), so callers get the very rows ``select(table)`` gives.

Connections are taken from the engine's pool once and detached from it (same URL, connect
arguments and statement timeout), then kept here: at most the pool's idle size idle, each
reopened after the engine's idle time or lifetime, as the pool does. One that fails is closed,
and the error goes through the store's guard as SQLAlchemy's would (``DatabaseUnavailable``
naming the host, ``DatabaseNotInitialised`` ...).
"""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError

from stockctl.store.engine import pool_limits


class _Conn:
    __slots__ = ("dbapi", "opened", "used")

    def __init__(self, dbapi: Any) -> None:
        self.dbapi = dbapi
        self.opened = self.used = time.monotonic()


class _Query:
    __slots__ = ("sql", "row", "processors")

    def __init__(
        self, sql: str, row: Any, processors: Sequence[Callable[[Any], Any] | None]
    ) -> None:
        self.sql = sql
        self.row = row
        self.processors = processors


class FastReads:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.max_idle_time, self.max_lifetime = pool_limits(engine)
        size = getattr(engine.pool, "size", None)
        self.keep = size() if callable(size) else 5
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._queries: dict[tuple[str, str, str], _Query] = {}
        self._closed = False

    # -- queries

    def select(
        self, table: Table, where: str, params: Sequence[Any], order_by: str = ""
    ) -> list[Any]:
        """``SELECT <every column of table> FROM table WHERE <where> [ORDER BY ...]`` with
        ``%s`` placeholders; rows with the columns as attributes, values as SQLAlchemy gives."""
        query = self._queries.get((table.name, where, order_by))
        if query is None:
            query = self._query(table, where, order_by)
        conn = self._take()
        try:
            cursor = conn.dbapi.execute(query.sql, params)
            fetched = cursor.fetchall()
        except Exception as exc:
            self._discard(conn)
            import psycopg

            if isinstance(exc, psycopg.Error):
                raise DBAPIError.instance(
                    query.sql,
                    params,
                    exc,
                    psycopg.Error,
                    connection_invalidated=conn.dbapi.closed or conn.dbapi.broken,
                ) from exc
            raise
        self._give(conn)
        processors = query.processors
        row = query.row
        return [
            row(*[v if p is None else p(v) for v, p in zip(r, processors, strict=True)])
            for r in fetched
        ]

    def _query(self, table: Table, where: str, order_by: str) -> _Query:
        dialect = self.engine.dialect
        columns = list(table.columns)
        names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in columns)
        sql = f"SELECT {names} FROM {dialect.identifier_preparer.format_table(table)} WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
        query = _Query(sql, namedtuple(f"{table.name}_row", [c.name for c in columns]), processors)
        self._queries[(table.name, where, order_by)] = query
        return query

    # -- connections

    def _take(self) -> _Conn:
        now = time.monotonic()
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._open()
            if (
                now - conn.used > self.max_idle_time
                or (self.max_lifetime > 0 and now - conn.opened > self.max_lifetime)
                or conn.dbapi.closed
            ):
                self._discard(conn)
                continue
            return conn

    def _open(self) -> _Conn:
        fairy = self.engine.raw_connection()  # the pool's connect, errors and events
        dbapi: Any = fairy.driver_connection
        fairy.detach()  # ours from now on: the pool no longer counts it
        dbapi.autocommit = True
        return _Conn(dbapi)

    def _give(self, conn: _Conn) -> None:
        conn.used = time.monotonic()
        with self._lock:
            if not self._closed and len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        self._discard(conn)

    @staticmethod
    def _discard(conn: _Conn) -> None:
        try:
            conn.dbapi.close()
        except Exception:  # closing a broken connection: nothing left to do
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)
