"""The outbox relay: publish committed events, in batches, and mark them published.

On PostgreSQL it sleeps on LISTEN/NOTIFY (every change NOTIFYs at commit), so an event reaches
Redis within milliseconds; polling every ``poll`` seconds is the fallback and SQLite's only way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from stockctl.core.ports import OutboxEntry
from stockctl.store.sql import OUTBOX_CHANNEL, SqlStore

log = logging.getLogger("stockctl.relay")

PRUNE_EVERY_SECONDS = 60.0


class NotifyWaiter:
    """Waits for a NOTIFY on the outbox channel, or the timeout, whichever comes first."""

    def __init__(self, conninfo: str | None) -> None:
        self.conninfo = conninfo
        self._conn: Any = None

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


def listen_conninfo(store: SqlStore) -> str | None:
    """A libpq URL for LISTEN, on PostgreSQL; None elsewhere."""
    if store.backend != "postgresql":
        return None
    return store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class OutboxRelay:
    name = "relay"

    def __init__(
        self,
        store: SqlStore,
        publish: Callable[[list[OutboxEntry]], None],
        *,
        batch_size: int,
        poll_seconds: float,
        retention: timedelta,
        clock: Callable[[], datetime],
        waiter: NotifyWaiter | None = None,
    ) -> None:
        self.store = store
        self.publish = publish
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retention = retention
        self.clock = clock
        self.waiter = waiter or NotifyWaiter(listen_conninfo(store))
        self.processed = 0  # rows published
        # The last claim took every row there was: wait for the next NOTIFY (commits made
        # meanwhile have sent theirs) instead of spending a transaction to find nothing.
        self.drained = False
        self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        self.metrics: Any = None

    def step(self) -> int:
        """Publish one batch; its rows stay locked until the transaction commits."""
        with self.store.transaction() as tx:
            entries = tx.take_outbox(self.batch_size, self.clock())
            if entries:
                self.publish(entries)  # raising rolls the marks back
        self.processed += len(entries)
        self.drained = self.waiter.conninfo is not None and len(entries) < self.batch_size
        if self.metrics is not None and entries:
            self.metrics.outbox_published.inc(len(entries))
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            self.store.prune_outbox(self.clock() - self.retention)
        return len(entries)

    def idle(self, stop: threading.Event) -> None:
        self.waiter.wait(self.poll_seconds, stop)

    def close(self) -> None:
        self.waiter.close()
