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
from stockctl.core.worker_ports import OutboxStore, OutboxWaiter

log = logging.getLogger("stockctl.relay")

PRUNE_EVERY_SECONDS = 60.0
LINEAGE_EVERY_SECONDS = 1.0
# After a failover, what the relay sent this long before noticing it is sent again: the old
# master's last writes that never reached its replica, and those it took until the clients
# moved (a second or two on SENTINEL FAILOVER), are among them.
REPUBLISH_WINDOW = timedelta(seconds=30)


class OutboxRelay:
    name = "relay"

    def __init__(
        self,
        store: OutboxStore,
        publish: Callable[[list[OutboxEntry]], None],
        *,
        batch_size: int,
        poll_seconds: float,
        retention: timedelta,
        clock: Callable[[], datetime],
        waiter: OutboxWaiter | None = None,
        lineage: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.store = store
        self.publish = publish
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retention = retention
        self.clock = clock
        self.waiter = waiter or store.outbox_waiter()
        self.processed = 0  # rows published
        # The last claim took every row there was: wait for the next NOTIFY (commits made
        # meanwhile have sent theirs) instead of spending a transaction to find nothing.
        self.drained = False
        self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        self.metrics: Any = None
        # Redis's masters as last seen (``StreamPublisher.lineage``): when they change, a
        # failover or a restart may have lost entries the relay had marked published.
        self.lineage = lineage
        self._masters: frozenset[str] | None = None
        self._next_lineage = 0.0
        self.republished = 0

    def step(self) -> int:
        """Publish one batch; its rows stay locked until the transaction commits."""
        self._after_failover()
        with self.store.transaction() as tx:
            entries = tx.take_outbox(self.batch_size, self.clock())
            if entries:
                self.publish(entries)  # raising rolls the marks back
        self.processed += len(entries)
        self.drained = self.waiter.listens and len(entries) < self.batch_size
        if self.metrics is not None and entries:
            self.metrics.outbox_published.inc(len(entries))
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
            self.store.prune_outbox(self.clock() - self.retention)
        return len(entries)

    def _after_failover(self) -> None:
        """Once a second: if Redis's masters changed since the last look, mark what was
        published in the last ``REPUBLISH_WINDOW`` unpublished, so it goes out again (after
        what was lost, consumers see some events twice: the stream is at-least-once, and
        stock events carry their row's version)."""
        if self.lineage is None or time.monotonic() < self._next_lineage:
            return
        self._next_lineage = time.monotonic() + LINEAGE_EVERY_SECONDS
        masters = self.lineage()  # Redis away: CacheUnavailable, the job loop retries
        before, self._masters = self._masters, masters
        if before is None or masters == before:
            return
        with self.store.transaction() as tx:
            again = tx.unpublish_outbox_since(self.clock() - REPUBLISH_WINDOW)
        self.republished += again
        log.warning(
            "Redis master changed (failover or restart): publishing again the %d events "
            "sent in the last %d s",
            again,
            int(REPUBLISH_WINDOW.total_seconds()),
        )

    def idle(self, stop: threading.Event) -> None:
        self.waiter.wait(self.poll_seconds, stop)

    def close(self) -> None:
        self.waiter.close()
