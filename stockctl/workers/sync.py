"""Incremental sync as a worker job: every interval, refresh the products changed since the
checkpoint kept in the cache: the repair path for anything the events missed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from stockctl.core.cache import sync
from stockctl.core.ports import StockCache, Store

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
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.interval = interval_seconds
        self.overlap = overlap
        self.processed = 0

    def step(self) -> int:
        result = sync(self.store, self.cache, self.clock(), overlap=self.overlap)
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
