"""Prometheus metrics, on a registry per process wiring (never a global at import time).

Names follow the seed document where it has one (``catalog_*``); the rest are ``stockctl_*``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from stockctl.core.catalog import Outcome
    from stockctl.core.envelope import Incoming

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MERGE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "stockctl_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "stockctl_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_received = Counter(
            "catalog_stock_events_received_total", "Events received", ["transport"], registry=r
        )
        self.events_processed = Counter(
            "catalog_stock_events_processed_total", "Events processed", ["result"], registry=r
        )
        self.event_duration = Histogram(
            "catalog_stock_event_processing_duration_seconds",
            "Event batch processing time",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter("catalog_cache_hits_total", "Stock cache hits", registry=r)
        self.cache_misses = Counter("catalog_cache_misses_total", "Stock cache misses", registry=r)
        self.db_connections = Gauge(
            "catalog_db_connections_active", "Database connections checked out", registry=r
        )
        self.queue_size = Gauge(
            "catalog_worker_queue_size", "Entries read but not yet acknowledged", registry=r
        )
        self.dead_letters = Counter(
            "stockctl_dead_letters_total", "Entries moved to the dead-letter stream", registry=r
        )
        self.outbox_published = Counter(
            "stockctl_outbox_published_total", "Outbox rows published", registry=r
        )
        self.event_latency = Histogram(
            "catalog_stock_event_latency_seconds",
            "From the change's commit time to applied",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_capacity = Gauge(
            "catalog_worker_queue_capacity", "Entries a worker process may hold", registry=r
        )
        self.db_connections_max = Gauge(
            "catalog_db_connections_max", "Connections the pool may open", registry=r
        )
        self.db_query = Histogram(
            "stockctl_db_query_duration_seconds",
            "Database statement latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.circuit_state = Gauge(
            "stockctl_circuit_open",
            "1 while a circuit (warehouse: the API client; cache: stock reads) is not closed",
            ["circuit"],
            registry=r,
        )
        self.circuit_changes = Counter(
            "stockctl_circuit_state_changes_total",
            "Circuit breaker state changes",
            ["circuit", "state"],
            registry=r,
        )

        self.merge_size = Histogram(
            "stockctl_reserve_merge_size",
            "Reserves carried out together in one merge of a hot row (1: alone)",
            buckets=MERGE_BUCKETS,
            registry=r,
        )
        self.merge_wait = Histogram(
            "stockctl_reserve_merge_wait_seconds",
            "From a reserve's arrival to the start of its merge (queue and window)",
            buckets=WAIT_BUCKETS,
            registry=r,
        )

    def record_merge(self, size: int, waits: Sequence[float]) -> None:
        """A ``HotRows`` listener: one merge of ``size`` reserves and their waits."""
        self.merge_size.observe(size)
        for w in waits:
            self.merge_wait.observe(w)

    def circuit_changed(self, name: str) -> Callable[[str, str], None]:
        """An ``on_change`` hook for a ``Breaker`` named ``name``."""

        def changed(old: str, new: str) -> None:
            self.circuit_changes.labels(name, new).inc()
            self.circuit_state.labels(name).set(0 if new == "closed" else 1)

        return changed

    def count_reads(self, hits: int, misses: int) -> None:
        self.cache_hits.inc(hits)
        self.cache_misses.inc(misses)

    def record_batch(
        self,
        transport: str,
        received: int,
        outcome: Outcome,
        failed: int,
        seconds: float,
        events: Sequence[Incoming],
    ) -> None:
        self.events_received.labels(transport).inc(received)
        for result, n in (
            ("applied", outcome.applied),
            ("duplicate", outcome.duplicates),
            ("stale", outcome.stale),
            ("released", outcome.released),
            ("unknown", outcome.unknown),
            ("failed", failed),
        ):
            if n:
                self.events_processed.labels(result).inc(n)
        self.event_duration.observe(seconds)
        self.queue_size.set(failed)  # left pending, to be retried
        now = datetime.now(UTC)
        observe_many(
            self.event_latency,
            [max((now - e.time).total_seconds(), 0.0) for e in events if e.time is not None],
        )

    def watch_engine(self, engine: Any, max_open: int) -> None:
        """Time every statement and count connections of a SQLAlchemy engine."""
        import time

        from sqlalchemy import event

        self.db_connections_max.set(max_open)

        def start(conn: Any, *args: Any) -> None:
            conn.info["stockctl_started"] = time.perf_counter()

        def stop(conn: Any, *args: Any) -> None:
            started = conn.info.pop("stockctl_started", None)
            if started is not None:
                self.db_query.observe(time.perf_counter() - started)

        event.listen(engine, "before_cursor_execute", start)
        event.listen(engine, "after_cursor_execute", stop)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each value, each bucket and the sum moved once: a batch's
    events cost one lock per bucket instead of two locks per event (~2 us of the processor's
    CPU per event). Falls back to ``observe`` if the client library's buckets look different."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not values:
        return
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            histogram.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the first bound >= v, as observe() picks
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
    total.inc(sum(values))
