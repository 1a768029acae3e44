"""Incremental sync as a worker job: every interval, refresh the products changed since the
checkpoint kept in the cache: the repair path for anything the events missed. First, one read
checks that the cache still holds its warm marker; if not (Redis lost its data, or was never
warmed), it warms the whole cache from the database, however old the rows."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from stockctl.core.cache import sync
from stockctl.core.cache_ports import StockCache
from stockctl.core.ports import Store
from stockctl.core.warming import rewarm_if_lost

log = logging.getLogger("stockctl.sync")


class IncrementalSync:
    name = "sync"

    def __init__(
        self,
        store: Store,
        cache: StockCache,
        clock: Callable[[], datetime],
        interval_seconds: float,
        overlap: timedelta,
        owner: str = "sync",
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.interval = interval_seconds
        self.overlap = overlap
        self.owner = owner  # names this worker in the warm's lease
        self.processed = 0

    def step(self) -> int:
        now = self.clock()
        warmed = rewarm_if_lost(self.store, self.cache, now, self.owner)
        if warmed is not None:
            self.processed += warmed.products
            log.warning(
                "the cache had no warm marker (Redis lost its data, or it was never warmed): "
                "warmed %d products (%d rows) from the database in %.1f s",
                warmed.products,
                warmed.rows,
                warmed.seconds,
            )
            return 0
        result = sync(self.store, self.cache, now, overlap=self.overlap)
        self.processed += result.products
        if result.products:
            log.info(
                "sync refreshed %d products (%d rows changed since %s)",
                result.products,
                result.rows,
                result.since,
            )
        return 0  # one cycle per interval

    def idle(self, stop: threading.Event) -> None:
        stop.wait(self.interval)

    def close(self) -> None:
        """Nothing of its own to close."""
