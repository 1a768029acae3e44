"""The diagnose ``Probe`` over the real database, cache and streams."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from stockctl.bootstrap import App
from stockctl.core import cache as cache_uc
from stockctl.core.catalog import TOPICS
from stockctl.core.diagnose.probe import Thresholds
from stockctl.core.heartbeat import Heartbeat, decode_all

SAMPLE = 200


class LiveProbe:
    def __init__(self, app: App, thresholds: Thresholds | None = None) -> None:
        self.app = app
        self.thresholds = thresholds or Thresholds()
        s = app.settings
        self.uses_redis = app.uses_redis
        self.worker_count = s.worker_count
        self.queue_capacity = s.worker_queue_size
        self.stream_maxlen = s.stream_maxlen
        self.dedupe_markers: str = s.event_dedupe_markers
        self.reserve_merging = _merging(app)
        self._lag: list[dict[str, Any]] | None = None
        self._info: dict[str, Any] | None = None
        self._last: dict[str, str] = {}  # event id -> CloudEvent JSON, from last_event

    def _admin(self) -> Any:
        return self.app.stream_admin()

    def outbox_backlog(self) -> tuple[int, float]:
        count, oldest = self.app.store.outbox_backlog()
        return count, (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0

    def topic_lag(self) -> list[dict[str, Any]]:
        if self._lag is None:
            from dataclasses import asdict

            self._lag = [asdict(t) for t in self._admin().lag(TOPICS)]
        return self._lag

    def dead_letters(self) -> int:
        return int(self._admin().dead_letter_count())

    def heartbeats(self) -> dict[str, Heartbeat]:
        return decode_all(self.app.cache().heartbeats(f"{self.app.settings.app_id}:"))

    def db_vs_cache(self, product_id: str) -> list[dict[str, Any]]:
        cache = self.app.cache()
        rows = self.app.store.product_inventory(product_id)
        keys = [cache.keys.warehouse(product_id, r.warehouse_id) for r in rows]
        values = cache.get_keys(keys)
        return [
            {"warehouse_id": r.warehouse_id, "db": str(max(r.sellable, 0)), "cache": v}
            for r, v in zip(rows, values, strict=True)
        ]

    def last_event(self, product_id: str) -> dict[str, Any] | None:
        found = self.app.store.outbox_for(product_id, 1)
        if not found:
            return None
        e = found[0]
        self._last[e.event_id] = e.payload
        return {"id": e.event_id, "type": e.topic, "published": e.published_at is not None}

    def event_in_stream(self, product_id: str, event_id: str) -> bool:
        client = self.app.redis()
        needle = event_id.encode()
        for topic in TOPICS:
            entries: Any = client.xrevrange(topic, count=2000)
            if any(needle in (fields or {}).get(b"data", b"") for _, fields in entries):
                return True
        return False

    def event_processed(self, event_id: str) -> bool:
        from stockctl.core.envelope import InvalidEvent, parse
        from stockctl.core.projection import update_from_event

        cache = self.app.cache()
        entry = self._last.get(event_id)
        try:
            update = update_from_event(parse(entry)) if entry is not None else None
        except InvalidEvent:
            update = None
        if update is None:  # not a stock event (or not ours to read): its marker says
            return bool(cache.processed([event_id])[0])
        held = cache.get_products([update.product_id]).get(update.product_id)
        if held is None:  # not cached (expired, lost): the next event or read fills it
            return False
        row = next((r for r in held.rows if r.warehouse_id == update.row.warehouse_id), None)
        return row is not None and row.version >= update.row.version

    def redis_ping_ms(self) -> float:
        started = time.perf_counter()
        self.app.cache().ping()
        return (time.perf_counter() - started) * 1000

    def redis_topology(self) -> str:
        return self.app.redis_description()

    def redis_info(self) -> dict[str, Any]:
        if self._info is None:
            from stockctl.errors import CacheUnavailable

            try:
                client = self.app.redis()
                if self.app.redis_topology.cluster:  # every master's, summed where it adds up
                    self._info = _summed(client.info(target_nodes=client.PRIMARIES))
                else:
                    self._info = dict(client.info())
            except Exception as exc:
                raise CacheUnavailable(f"redis unavailable: {type(exc).__name__}") from None
        return self._info

    def db_activity(self) -> dict[str, Any]:
        store = self.app.store
        if store.backend != "postgresql":
            pool = self.app.settings.db_pool_max_open
            return {"used": 1, "max": pool}
        return store.db_activity(self.thresholds.long_query_s)

    def hit_rate(self) -> tuple[float | None, int]:
        stats = self.app.cache().stats()
        hits = int(stats.get("stock_reads_hits") or 0)  # type: ignore[call-overload]
        misses = int(stats.get("stock_reads_misses") or 0)  # type: ignore[call-overload]
        reads = hits + misses
        return (hits / reads if reads else None), reads

    def ttl_sample(self) -> list[int]:
        cache = self.app.cache()
        ids = self._sample_products()
        found = cache.inspect([cache.keys.available(p) for p in ids])
        return [t if t is not None else 10**9 for v, t in found if v is not None]

    def uncached_fraction(self) -> tuple[float, int]:
        ids = self._sample_products()
        if not ids:
            return 0.0, 0
        held = self.app.cache().get_products(ids)
        return sum(1 for p in ids if held.get(p) is None) / len(ids), len(ids)

    def seconds_since_warm(self) -> float | None:
        raw = self.app.cache().get_meta("warm:last")
        return time.time() - float(json.loads(raw)["at"]) if raw else None

    def reserved_drift(self) -> list[str]:
        return [
            f"{d.product_id}@{d.warehouse_id} reserved {d.reserved}, holds {d.expected_reserved}"
            for d in self.app.store.reserved_drift(100)
        ]

    def overdue_reservations(self) -> int:
        now = self.app.ctx.clock()
        return self.app.store.reservation_stats(now, now)["overdue"]

    def cache_drift_sample(self) -> list[str]:
        ids = self._sample_products()
        cache = self.app.cache()
        drift = cache_uc.verify(self.app.store, cache, cache.keys, ids)
        return [f"{d.product_id} {d.kind}: {d.detail}" for d in drift]

    _sample: list[str] | None = None

    def _sample_products(self) -> list[str]:
        if self._sample is None:
            self._sample = self.app.store.sample_product_ids(SAMPLE)
        return self._sample


SUMMED_INFO = ("used_memory", "maxmemory", "keyspace_hits", "keyspace_misses", "evicted_keys")


def _summed(per_node: dict[str, Any]) -> dict[str, Any]:
    """INFO of a cluster's masters (node -> fields) as one: counters and memory summed."""
    nodes = [dict(info) for info in per_node.values()]
    out = dict(nodes[0]) if nodes else {}
    for name in SUMMED_INFO:
        out[name] = sum(int(n.get(name) or 0) for n in nodes)
    return out


def _merging(app: App) -> str:
    """How this configuration runs concurrent reserves of one row (``reserve_merge``)."""
    s = app.settings
    if not s.reserve_merge:
        return "off (reserve_merge: false): one statement per reserve"
    if app.store.backend != "postgresql":
        return "off: the embedded SQLite store runs one write at a time anyway"
    return (
        f"on: concurrent reserves of one row in a process merge "
        f"(window {s.reserve_merge_window_ms:g} ms, up to {s.reserve_merge_max})"
    )
