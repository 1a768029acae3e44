"""Engines from settings: URL normalisation, the guide's pool knobs, SQLite pragmas, masking."""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry

from stockctl.core.redact import mask_query
from stockctl.errors import DatabaseNotInitialised, InvalidInput


def mask_url(url: str) -> str:
    """The URL with its password, and secret query parameters, replaced by ``***``; anything
    unparsable is masked whole."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "***" if "@" in url else url
    shown = url if parsed.password is None else parsed.render_as_string(hide_password=True)
    base, question, query = shown.partition("?")  # ?password=... reaches psycopg too
    return base + question + mask_query(query) if question else base


def normalise_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` use psycopg 3; other URLs pass unchanged."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput(f"malformed database URL: {mask_url(url)}") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise InvalidInput(
            f"unsupported database {parsed.get_backend_name()!r}: use postgresql:// or sqlite://"
        )
    return parsed.render_as_string(hide_password=False)


def describe_target(url: str) -> str:
    """Where a URL points, for messages: ``host:port/db`` or the SQLite file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite file {parsed.database or ':memory:'}"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


class PoolSettings(Protocol):
    """The settings an engine is made from (``stockctl.settings.Settings`` has them)."""

    db_connect_timeout_seconds: int
    db_statement_timeout_ms: int
    db_pool_max_idle: int
    db_pool_max_open: int
    db_pool_max_lifetime_seconds: int
    db_pool_max_idle_time_seconds: int


def create_store_engine(url: str, settings: PoolSettings) -> Engine:
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return _postgres_engine(url, settings)


def _postgres_engine(url: str, settings: PoolSettings) -> Engine:
    # Seed pool knobs on SQLAlchemy's QueuePool: idle conns kept = pool_size, the rest overflow.
    connect_args = {
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "stockctl",
        "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
    }
    engine = create_engine(
        url,
        pool_size=settings.db_pool_max_idle,
        max_overflow=settings.db_pool_max_open - settings.db_pool_max_idle,
        pool_recycle=settings.db_pool_max_lifetime_seconds,
        pool_pre_ping=False,
        pool_timeout=settings.db_connect_timeout_seconds,
        connect_args=connect_args,
    )
    _close_idle_connections(engine, settings.db_pool_max_idle_time_seconds)
    _LIMITS[engine] = (
        float(settings.db_pool_max_idle_time_seconds),
        float(settings.db_pool_max_lifetime_seconds),
    )
    _CONNECT_ARGS[engine] = connect_args
    return engine


_LIMITS: weakref.WeakKeyDictionary[Engine, tuple[float, float]] = weakref.WeakKeyDictionary()


_CONNECT_ARGS: weakref.WeakKeyDictionary[Engine, dict[str, Any]] = weakref.WeakKeyDictionary()


def pool_limits(engine: Engine) -> tuple[float, float]:
    """(idle time, lifetime) in seconds after which the engine's pool reopens a connection
    (the settings' db_pool_max_idle_time_seconds / db_pool_max_lifetime_seconds)."""
    return _LIMITS.get(engine, (300.0, 1800.0))


def connect_params(engine: Engine) -> dict[str, Any]:
    """What the engine passes to ``psycopg.connect`` (URL parts and query, connect_args)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    return {**params, **_CONNECT_ARGS.get(engine, {})}


def _close_idle_connections(engine: Engine, max_idle_seconds: int) -> None:
    """``conn_max_idle_time``: a pooled connection idle longer than this is reopened."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since > max_idle_seconds:
            from sqlalchemy.exc import DisconnectionError

            raise DisconnectionError("connection idle too long")  # the pool reconnects


_CREATABLE: weakref.WeakSet[Engine] = weakref.WeakSet()


def allow_create(engine: Engine) -> None:
    """Let ``engine`` create its SQLite file (and the file's directory): only ``init`` /
    ``db upgrade`` (``upgrade_schema``) do; any other command on a missing file is refused
    with DatabaseNotInitialised and leaves no file or directory behind."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        _CREATABLE.add(engine)


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()

        @event.listens_for(engine, "do_connect")
        def _no_new_file(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
            if engine not in _CREATABLE and not path.exists():
                raise DatabaseNotInitialised(
                    f"no database at sqlite file {path}: run `stockctl init` to create it"
                )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (IMMEDIATE for writes)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # One writer at a time, taken up front: no lock upgrades, no SQLITE_BUSY mid-transaction.
        # Reads (execution option stockctl_read) take no write lock; WAL gives them a snapshot.
        read = conn.get_execution_options().get("stockctl_read", False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine
