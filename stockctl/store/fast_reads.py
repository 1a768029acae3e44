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
arguments and statement timeout), then kept here: at most the pool's size (``db_pool_max_idle``)
open, all kept (a read waits for a free one rather than opening and closing connections: on
2 cores a few connections serve every read there is), each reopened after the engine's idle
time or lifetime, as the pool does. One that fails is closed,
and the error goes through the store's guard as SQLAlchemy's would (``DatabaseUnavailable``
naming the host, ``DatabaseNotInitialised`` ...).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError, OperationalError

from stockctl.store.engine import connect_params, pool_limits


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
        self.keep = _size(engine)
        self.wait = float(getattr(engine.pool, "_timeout", 30.0))
        self._slots = threading.BoundedSemaphore(self.keep)
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
        if not self._slots.acquire(timeout=self.wait):
            from stockctl.errors import DatabaseUnavailable

            raise DatabaseUnavailable(f"no database connection free within {self.wait:.0f} s")
        try:
            return self._select(query, params)
        finally:
            self._slots.release()

    def _select(self, query: _Query, params: Sequence[Any]) -> list[Any]:
        conn = self._take()
        try:
            cursor = conn.dbapi.execute(query.sql, params)
            fetched = cursor.fetchall()
        except Exception as exc:
            self._discard(conn)
            error = _as_dbapi_error(query, params, exc, conn.dbapi)
            if error is exc:
                raise
            raise error from exc
        except BaseException:  # interrupted mid-statement: the connection is in no known state
            self._discard(conn)
            raise
        self._give(conn)
        return _rows(query, fetched)

    def _query(self, table: Table, where: str, order_by: str) -> _Query:
        query = _build(self.engine, table, where, order_by)
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
        try:
            fairy = self.engine.raw_connection()  # the pool's connect, errors and events
        except DBAPIError:
            raise
        except Exception as exc:  # the driver's own (raw_connection does not wrap it): as
            # SQLAlchemy's, so the store's guard names the host (exit 3), not exit 4
            raise OperationalError(None, None, exc) from exc
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


def _size(engine: Engine) -> int:
    size = getattr(engine.pool, "size", None)
    return max(1, size() if callable(size) else 5)


def _build(engine: Engine, table: Table, where: str, order_by: str) -> _Query:
    dialect = engine.dialect
    columns = list(table.columns)
    names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in columns)
    sql = f"SELECT {names} FROM {dialect.identifier_preparer.format_table(table)} WHERE {where}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    return _Query(sql, namedtuple(f"{table.name}_row", [c.name for c in columns]), processors)


def _rows(query: _Query, fetched: list[Any]) -> list[Any]:
    processors, row = query.processors, query.row
    return [
        row(*[v if p is None else p(v) for v, p in zip(r, processors, strict=True)])
        for r in fetched
    ]


def _as_dbapi_error(query: _Query, params: Sequence[Any], exc: Exception, conn: Any) -> Exception:
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return exc
    return DBAPIError.instance(
        query.sql, params, exc, psycopg.Error, connection_invalidated=conn.closed or conn.broken
    )


class AsyncFastReads:
    """:class:`FastReads` for coroutines: the same statements on ``psycopg.AsyncConnection``s,
    so that an ``async def`` route reads its row without a thread-pool hop. Connections belong
    to the event loop they were opened on: on another loop (a test client's next portal) the
    idle ones are closed and new ones opened. Opening one connects with the engine's own
    parameters (URL, query, connect_args: timeouts, application_name, statement_timeout)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.max_idle_time, self.max_lifetime = pool_limits(engine)
        self.keep = _size(engine)
        self._idle: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(self.keep)
        self._queries: dict[tuple[str, str, str], _Query] = {}
        self._closed = False

    async def select(
        self, table: Table, where: str, params: Sequence[Any], order_by: str = ""
    ) -> list[Any]:
        query = self._queries.get((table.name, where, order_by))
        if query is None:
            query = self._queries[(table.name, where, order_by)] = _build(
                self.engine, table, where, order_by
            )
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections (and waiters) belong to one loop
            self._drop_idle()
            self._loop, self._slots = loop, asyncio.Semaphore(self.keep)
        async with self._slots:
            return await self._select(query, params)

    async def _select(self, query: _Query, params: Sequence[Any]) -> list[Any]:
        conn = await self._take()
        try:
            cursor = await conn.dbapi.execute(query.sql, params)
            fetched = await cursor.fetchall()
        except Exception as exc:
            _finish(conn)
            error = _as_dbapi_error(query, params, exc, conn.dbapi)
            if error is exc:
                raise
            raise error from exc
        except BaseException:  # cancelled mid-statement (a shutdown): not fit to be reused
            _finish(conn)
            raise
        self._give(conn)
        return _rows(query, fetched)

    async def _take(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if (
                now - conn.used > self.max_idle_time
                or (self.max_lifetime > 0 and now - conn.opened > self.max_lifetime)
                or conn.dbapi.closed
            ):
                _finish(conn)
                continue
            return conn
        return await self._open()

    async def _open(self) -> _Conn:
        import psycopg
        from sqlalchemy.exc import OperationalError

        try:
            dbapi = await psycopg.AsyncConnection.connect(
                **connect_params(self.engine), autocommit=True
            )
        except psycopg.Error as exc:  # as the pool's connect would raise it
            raise OperationalError(None, None, exc) from exc
        return _Conn(dbapi)

    def _give(self, conn: _Conn) -> None:
        conn.used = time.monotonic()
        if not self._closed and len(self._idle) < self.keep:
            self._idle.append(conn)
        else:
            _finish(conn)

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            _finish(conn)

    def close(self) -> None:
        self._closed = True
        self._drop_idle()


def _finish(conn: _Conn) -> None:
    """Close an async connection from anywhere (no loop needed): end its libpq connection."""
    try:
        conn.dbapi.pgconn.finish()
    except Exception:  # already gone
        pass
