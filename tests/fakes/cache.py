"""An in-memory stock cache: the read path's ``CacheReads`` and the processor's
``CacheWriter`` (plus ``get_products`` for verify-style checks), in dicts.

It keeps what the Redis and SQL caches keep — each product's rows with their versions, and
the plain keys ``stockctl.core.projection.product_values`` derives from them — and guards
writes by version the same way (``projection.is_newer``). There is no expiry: a fake clock
would be the only reader of one. ``down = True`` makes every call raise ``CacheUnavailable``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from stockctl.core.cache_ports import ApplyResult, CacheReads, CacheWriter
from stockctl.core.projection import (
    CacheKeys,
    ProductStock,
    RowState,
    StockLevel,
    StockUpdate,
    is_newer,
    merge,
    product_values,
)
from stockctl.errors import CacheUnavailable


class FakeCache:
    def __init__(self, keys: CacheKeys | None = None, markers: bool = False) -> None:
        self.keys = keys or CacheKeys()
        self.markers = markers  # processed markers for stock events too (``all``)
        self.rows: dict[str, dict[str, RowState]] = {}
        self.values: dict[str, str] = {}
        self.claimed: set[str] = set()
        self.hits = self.misses = 0
        self.down = False
        self._lock = threading.Lock()

    def _up(self) -> None:
        if self.down:
            raise CacheUnavailable("fake cache is down")

    def _write(self, product_id: str, rows: Mapping[str, RowState]) -> None:
        self.rows[product_id] = dict(rows)
        stock = ProductStock(product_id, tuple(sorted(rows.values(), key=lambda r: r.warehouse_id)))
        self.values.update(product_values(self.keys, stock))

    # CacheWriter
    def apply(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        self._up()
        with self._lock:
            new = list(updates)
            if self.markers:
                fresh = self._claim([u.event_id for u in updates])
                new = [u for u, ok in zip(updates, fresh, strict=True) if ok]
            applied = stale = 0
            incomplete: dict[str, None] = {}
            for u in new:
                held = self.rows.get(u.product_id)
                if held is None:
                    incomplete[u.product_id] = None
                elif is_newer(u.row, held.get(u.row.warehouse_id)):
                    self._write(u.product_id, {**held, u.row.warehouse_id: u.row})
                    applied += 1
                else:
                    stale += 1
            return ApplyResult(applied, len(updates) - len(new), stale, tuple(incomplete))

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        self._up()
        with self._lock:
            for p, rows in products.items():
                self._write(p, merge(self.rows.get(p, {}), rows))

    def claim_events(self, event_ids: Sequence[str]) -> list[bool]:
        self._up()
        with self._lock:
            return self._claim(event_ids)

    def _claim(self, event_ids: Sequence[str]) -> list[bool]:
        out = []
        for e in event_ids:
            out.append(e not in self.claimed)
            self.claimed.add(e)
        return out

    def processed(self, event_ids: Sequence[str]) -> list[bool]:
        self._up()
        return [e in self.claimed for e in event_ids]

    # CacheReads
    def get_levels(self, product_ids: Sequence[str]) -> dict[str, StockLevel | None]:
        """From the product detail key, as the adapters read it."""
        self._up()
        out: dict[str, StockLevel | None] = {}
        for p in product_ids:
            raw = self.values.get(self.keys.product(p))
            out[p] = None if raw is None else StockLevel.from_detail(p, json.loads(raw))
        return out

    def get_keys(self, keys: Sequence[str]) -> list[str | None]:
        self._up()
        return [self.values.get(k) for k in keys]

    def count_reads(self, hits: int, misses: int) -> None:
        self._up()
        with self._lock:
            self.hits, self.misses = self.hits + hits, self.misses + misses

    def ping(self) -> None:
        self._up()

    # what verify-style checks read
    def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductStock | None]:
        self._up()
        return {
            p: ProductStock(p, tuple(sorted(rs.values(), key=lambda r: r.warehouse_id)))
            if (rs := self.rows.get(p)) is not None
            else None
            for p in product_ids
        }


if TYPE_CHECKING:  # mypy (``make lint``) checks that the fake implements both ports
    _reads: CacheReads = FakeCache()
    _writer: CacheWriter = FakeCache()
