"""The event processor on Redis Streams: read a batch across all topics, project it into the
cache in one round trip, ack. Failed entries stay pending and are retried; after
``max_deliveries`` attempts they move to the dead-letter stream. Entries a dead consumer left
pending are claimed with XAUTOCLAIM."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stockctl.core.cache_ports import StockCache
from stockctl.core.catalog import Outcome, project
from stockctl.core.envelope import Incoming, InvalidEvent, parse
from stockctl.core.ports import Store
from stockctl.core.worker_ports import Delivery, EventConsumer
from stockctl.daemons.metrics import Metrics
from stockctl.errors import CacheUnavailable

log = logging.getLogger("stockctl.processor")

RECOVER_EVERY_SECONDS = 1.0


class ReadTurn:
    """Shared by the processors of one process: whose turn it is to read, and what the last
    read found: a backlog (a full batch) or a trickle (some entries, less than a batch)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.backlog = False
        self.trickle = False


class StreamProcessor:
    name = "processor"

    def __init__(
        self,
        store: Store,
        cache: StockCache,
        consumer: EventConsumer,
        release_order: Callable[[str, str], object],
        *,
        batch_size: int,
        block_ms: int,
        max_deliveries: int,
        claim_idle_ms: int,
        burst: bool = False,
        turn: ReadTurn | None = None,
        linger_ms: int = 0,
    ) -> None:
        self.store = store
        self.cache = cache
        self.consumer = consumer
        self.release_order = release_order
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.burst = burst
        self.turn = turn
        self.linger = linger_ms / 1000
        self.totals = Outcome()
        self.processed = 0
        self.dead_lettered = 0
        self.last_batch_seconds = 0.0
        self._next_recover = 0.0
        self.metrics: Metrics | None = None

    def step(self) -> int:
        deliveries = self._recover() or self._read()
        if not deliveries and self.burst:
            # Idle means nothing pending either: a burst run must not exit with our own
            # pending entries (a crashed run's batches, failures not yet dead-lettered) left.
            deliveries = self._recover(now=True)
        if deliveries:
            self.handle(deliveries)
        return len(deliveries)

    def _read(self) -> list[Delivery]:
        """New entries. Below a backlog, the processors of a process take turns (``ReadTurn``)
        to wait on the streams while the others handle what they took, so entries arriving
        meanwhile queue up for the next read instead of waking a thread each; and after a
        read that took less than a batch, the next one first lingers ``linger`` seconds. At a
        steady trickle a batch then carries several events, not one: far fewer round trips
        and script calls per event, for at most ``linger`` more latency. While reads come
        back full (a backlog), every thread reads on its own, keeping Redis busy."""
        turn = self.turn
        if turn is None:
            return self.consumer.read(self.batch_size, self.block_ms)
        if turn.backlog:
            return self._note(turn, self.consumer.read(self.batch_size, self.block_ms))
        if not turn.lock.acquire(blocking=False):
            self.consumer.flush_acks()  # do not sit on them while another thread waits
            if not turn.lock.acquire(timeout=self.block_ms / 1000):
                return []
        try:
            if turn.trickle and self.linger > 0:
                time.sleep(self.linger)
            return self._note(turn, self.consumer.read(self.batch_size, self.block_ms))
        finally:
            turn.lock.release()

    def _note(self, turn: ReadTurn, got: list[Delivery]) -> list[Delivery]:
        turn.backlog = len(got) >= self.batch_size
        turn.trickle = 0 < len(got) < self.batch_size
        return got

    def _recover(self, now: bool = False) -> list[Delivery]:
        """Now and then: our own pending entries (failed earlier), then a dead peer's."""
        if not now and time.monotonic() < self._next_recover:
            return []
        self._next_recover = time.monotonic() + RECOVER_EVERY_SECONDS
        return self.consumer.read_pending(self.batch_size) or self.consumer.claim_idle(
            self.claim_idle_ms, self.batch_size
        )

    def handle(self, deliveries: list[Delivery]) -> None:
        started = time.perf_counter()
        parsed: list[tuple[Delivery, Incoming]] = []
        failed: list[tuple[Delivery, str]] = []
        for d in deliveries:
            try:
                if (data := d.data) is None:
                    raise InvalidEvent("entry has no 'data' field")
                parsed.append((d, parse(data, topic=d.stream)))
            except InvalidEvent as exc:
                failed.append((d, str(exc)))
        outcome = project(self.store, self.cache, [e for _, e in parsed], self.release_order)
        failed += [(parsed[i][0], reason) for i, reason in outcome.invalid]
        bad = {d.entry_id for d, _ in failed}
        self.consumer.ack([d for d in deliveries if d.entry_id not in bad], with_next_read=True)
        for d, reason in failed:
            self._failed(d, reason)
        self._count(outcome, len(deliveries) - len(failed))
        self.last_batch_seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.record_batch(
                "redis",
                len(deliveries),
                outcome,
                len(failed),
                self.last_batch_seconds,
                [e for _, e in parsed],
            )

    def _failed(self, d: Delivery, reason: str) -> None:
        attempts = self.consumer.delivery_count(d)
        if attempts >= self.max_deliveries:
            log.warning(
                "dead-lettering %s %s after %d attempts: %s", d.stream, d.entry_id, attempts, reason
            )
            self.consumer.dead_letter(d, reason)
            self.dead_lettered += 1
        else:
            log.info("entry %s %s failed (attempt %d): %s", d.stream, d.entry_id, attempts, reason)

    def _count(self, o: Outcome, ok: int) -> None:
        t = self.totals
        t.applied += o.applied
        t.duplicates += o.duplicates
        t.stale += o.stale
        t.filled += o.filled
        t.released += o.released
        t.unknown += o.unknown
        self.processed += ok

    def idle(self, stop: threading.Event) -> None:
        """The blocking read already waited ``block_ms``."""

    def close(self) -> None:
        """Send the acks still owed (the consumer's Redis client belongs to the app)."""
        try:
            self.consumer.close()
        except CacheUnavailable as exc:  # they stay pending: redelivered and de-duplicated
            log.warning("could not ack the last batch: %s", exc)
