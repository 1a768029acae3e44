"""Waiting for the outbox: PostgreSQL's LISTEN on the channel every commit that wrote events
NOTIFYs (``OUTBOX_CHANNEL``); elsewhere (SQLite) a plain timed wait, and the relay polls."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from stockctl.store.outbox_sql import OUTBOX_CHANNEL

log = logging.getLogger("stockctl.relay")


class NotifyWaiter:
    """Waits for a NOTIFY on the outbox channel, or the timeout, whichever comes first."""

    def __init__(self, conninfo: str | None) -> None:
        self.conninfo = conninfo
        self._conn: Any = None

    @property
    def listens(self) -> bool:
        return self.conninfo is not None

    def wait(self, timeout: float, stop: threading.Event) -> None:
        if self.conninfo is None:
            stop.wait(timeout)
            return
        try:
            conn = self._connect()
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                break
        except Exception as exc:  # a lost listener only costs latency: poll until it is back
            log.warning("LISTEN connection lost (%s); polling", type(exc).__name__)
            self.close()
            stop.wait(timeout)

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            assert self.conninfo is not None
            self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            self._conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def listen_conninfo(engine: Engine) -> str | None:
    """A libpq URL for LISTEN, on PostgreSQL; None elsewhere."""
    if engine.dialect.name != "postgresql":
        return None
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
