"""A cache that lost its data is warmed again by the sync job, however old its rows: one read of
the warm marker per pass when nothing is lost; a lease keeps two workers from warming at once;
a cache that loses its data during the warm is not marked warm."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from stockctl.core import cache as cache_uc
from stockctl.core import warming
from stockctl.core.cache_ports import StockCache
from stockctl.core.model import Inventory
from stockctl.core.ports import Store
from stockctl.core.projection import CacheKeys, RowState
from stockctl.daemons.workers.sync import IncrementalSync
from stockctl.errors import CacheUnavailable

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class OldRowsStore:
    """Products P0..Pn, last changed a year ago: the incremental sync alone never sees them."""

    def __init__(self, products: int) -> None:
        self.products = products

    def iter_row_states(self, batch: int) -> Iterator[tuple[str, RowState]]:
        for p in range(self.products):
            for w in range(2):
                yield f"P{p}", RowState(f"W{w}", 1, 10, 0, 0)

    def changed_since(self, since: datetime) -> Iterator[Inventory]:
        return iter(())

    def inventory_for_products(self, ids: Sequence[str]) -> dict[str, list[Inventory]]:
        return {}


class MetaCache:
    keys = CacheKeys("unit")

    def __init__(self) -> None:
        self.meta: dict[str, str] = {}
        self.filled: list[str] = []
        self.reads = 0
        self.on_fill: Any = None

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        self.filled += list(products)
        if self.on_fill is not None:
            self.on_fill()

    def get_meta(self, name: str) -> str | None:
        self.reads += 1
        return self.meta.get(name)

    def set_meta(self, name: str, value: str) -> None:
        self.meta[name] = value


def rewarm(cache: MetaCache, products: int = 5, owner: str = "w1") -> warming.WarmResult | None:
    store = cast(Store, OldRowsStore(products))
    return warming.rewarm_if_lost(store, cast(StockCache, cache), NOW, owner)


def test_a_cache_without_its_marker_is_warmed_whole_and_then_left_alone() -> None:
    cache = MetaCache()
    result = rewarm(cache)
    assert result is not None and (result.products, result.rows) == (5, 10)
    assert sorted(cache.filled) == [f"P{i}" for i in range(5)]
    assert json.loads(cache.meta[warming.WARM_MARKER])["products"] == 5
    assert cache.meta[cache_uc.SYNC_CHECKPOINT] == NOW.isoformat()  # taken before the warm
    cache.filled, cache.reads = [], 0
    assert rewarm(cache) is None
    assert cache.filled == [] and cache.reads == 1  # one read a pass while nothing is lost


def test_a_full_warm_writes_the_marker_and_a_partial_one_does_not() -> None:
    cache = MetaCache()
    store, port = cast(Store, OldRowsStore(3)), cast(StockCache, cache)
    warming.warm(store, port, product_ids=[])
    assert warming.WARM_MARKER not in cache.meta
    warming.warm(store, port)
    assert warming.WARM_MARKER in cache.meta


def test_another_workers_fresh_lease_leaves_the_warm_to_it_and_a_stale_one_does_not() -> None:
    cache = MetaCache()
    lease = {"owner": "w2", "at": time.time(), "token": "w2:1"}
    cache.meta[warming.WARM_LEASE] = json.dumps(lease)
    assert rewarm(cache) is None and cache.filled == []
    lease["at"] = time.time() - warming.WARM_LEASE_SECONDS - 1  # w2 died mid-warm
    cache.meta[warming.WARM_LEASE] = json.dumps(lease)
    assert rewarm(cache) is not None
    assert json.loads(cache.meta[warming.WARM_LEASE])["owner"] == "w1"


def test_a_cache_that_loses_its_data_during_the_warm_is_not_marked_warm() -> None:
    cache = MetaCache()
    cache.on_fill = cache.meta.clear  # Redis restarted empty while the warm was writing
    with pytest.raises(CacheUnavailable, match="lost its data while it was being warmed"):
        rewarm(cache)
    assert warming.WARM_MARKER not in cache.meta
    cache.on_fill = None
    assert rewarm(cache) is not None  # the next pass warms again
    assert warming.WARM_MARKER in cache.meta


def test_the_sync_job_warms_a_lost_cache_and_says_so_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = MetaCache()
    job = IncrementalSync(
        cast(Store, OldRowsStore(4)),
        cast(StockCache, cache),
        lambda: NOW,
        10.0,
        timedelta(seconds=5),
        owner="host-1",
    )
    with caplog.at_level(logging.INFO, logger="stockctl.sync"):
        for _ in range(3):
            assert job.step() == 0
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "the cache had no warm marker (Redis lost its data, or it was never warmed)"
    ]
    assert "warmed 4 products (8 rows)" in caplog.records[0].getMessage()
    assert job.processed == 4
