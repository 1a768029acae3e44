"""Prometheus metrics, on a registry per process wiring (never a global at import time).

Names follow the seed document where it has one (``catalog_*``); the rest are ``stockctl_*``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        self.reservations = Counter(
            "stockctl_reservations_total", "Reservation outcomes", ["result"], registry=r
        )
