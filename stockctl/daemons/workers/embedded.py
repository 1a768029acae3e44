"""The embedded event pipeline (no Redis): the outbox table is the log.

Each step claims unpublished outbox rows, projects them into the embedded cache and marks them
published in the same transaction, so a batch is applied exactly once; rows are claimed by
state, so rows committed out of id order are never skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from stockctl.core import lifecycle
from stockctl.core.catalog import Outcome, classify, order_id_of
from stockctl.core.context import Context
from stockctl.core.envelope import Incoming, InvalidEvent, parse
from stockctl.core.projection import RowState
from stockctl.core.worker_ports import InTransactionCache, PipelineStore, PipelineTx
from stockctl.daemons.metrics import Metrics

log = logging.getLogger("stockctl.embedded")


class EmbeddedPipeline:
    name = "processor"

    def __init__(
        self,
        ctx: Context,
        store: PipelineStore,
        cache: InTransactionCache,
        *,
        batch_size: int,
        poll_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.cache = cache
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.totals = Outcome()
        self.processed = 0
        self.dead_lettered = 0
        self.last_batch_seconds = 0.0
        self.metrics: Metrics | None = None

    def step(self) -> int:
        started = time.perf_counter()
        with self.store.transaction() as tx:
            entries = tx.take_outbox(self.batch_size, self.clock())
            if not entries:
                return 0
            events: list[Incoming] = []
            for e in entries:
                try:
                    events.append(parse(e.payload, topic=e.topic))
                except InvalidEvent as exc:
                    log.warning("outbox row %d is not a valid event, skipped: %s", e.id, exc)
                    self.dead_lettered += 1
            outcome = self._project(tx, events)
        self.processed += len(entries)
        self.last_batch_seconds = time.perf_counter() - started
        if self.metrics is not None:
            failed = len(entries) - len(events) + len(outcome.invalid)
            self.metrics.record_batch(
                "outbox", len(entries), outcome, failed, self.last_batch_seconds, events
            )
        return len(entries)

    def _project(self, tx: PipelineTx, events: list[Incoming]) -> Outcome:
        updates, orders, out = classify(events)
        for _, reason in out.invalid:
            log.warning("invalid event skipped: %s", reason)
        result = self.cache.apply_in(tx.conn, updates)
        if result.incomplete:
            rows = self.store.inventory_for_products(result.incomplete)
            self.cache.fill_in(tx.conn, {p: [RowState.of(r) for r in rs] for p, rs in rows.items()})
        fresh = self.cache.claim_events_in(tx.conn, [e.id for _, e in orders])
        now = self.clock()
        for (_, event), new in zip(orders, fresh, strict=True):
            if new:
                reason = event.type.replace(".", "_")
                lifecycle.release_order_in(self.ctx, tx, order_id_of(event), reason, now)
                out.released += 1
        out.applied, out.duplicates, out.stale = result.applied, result.duplicates, result.stale
        t = self.totals
        t.applied += out.applied
        t.duplicates += out.duplicates
        t.stale += out.stale
        t.released += out.released
        t.unknown += out.unknown
        return out

    def idle(self, stop: threading.Event) -> None:
        stop.wait(self.poll_seconds)

    def close(self) -> None:
        """Nothing of its own to close."""
