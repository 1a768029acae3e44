"""Warming's batching, on fakes of the store and cache ports: every row written once, products
whole and in order, each write bounded in products and rows, and a failing cache stops the warm
with its own error."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockctl.core import warming
from stockctl.core.cache_ports import StockCache
from stockctl.core.ports import Store
from stockctl.core.projection import CacheKeys, RowState
from stockctl.errors import CacheUnavailable


class RowsStore:
    """iter_row_states over products of given sizes, ordered by product as the real one is."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = sizes

    def iter_row_states(self, batch: int) -> Iterator[tuple[str, RowState]]:
        for p, n in enumerate(self.sizes):
            for w in range(n):
                yield f"P{p:05d}", RowState(f"W{w:03d}", 1, w, 0, 0)


class RecordingCache:
    keys = CacheKeys("unit")

    def __init__(self, fail_at: int | None = None) -> None:
        self.writes: list[dict[str, list[RowState]]] = []
        self.threads: set[str] = set()
        self.fail_at = fail_at
        self.meta: dict[str, str] = {}

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail_at is not None and len(self.writes) == self.fail_at:
            raise CacheUnavailable("redis unavailable at test: connection refused")
        self.writes.append({p: list(rows) for p, rows in products.items()})

    def set_meta(self, name: str, value: str) -> None:
        self.meta[name] = value


def warm(sizes: Sequence[int], cache: RecordingCache, **kw: Any) -> warming.WarmResult:
    return warming.warm(cast(Store, RowsStore(sizes)), cast(StockCache, cache), **kw)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 700), max_size=60),
    batch=st.integers(1, 12),
    cap=st.sampled_from([1, 50, 1000, 2000]),
)
def test_every_row_is_written_once_in_bounded_writes(
    sizes: list[int], batch: int, cap: int
) -> None:
    cache, seen = RecordingCache(), []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(warming, "WARM_WRITE_ROWS", cap)
        result = warm(sizes, cache, batch=batch, progress=lambda p, r: seen.append((p, r)))

    written = [(p, rows) for w in cache.writes for p, rows in w.items()]
    assert [p for p, _ in written] == [f"P{i:05d}" for i in range(len(sizes))]
    assert [len(rows) for _, rows in written] == sizes  # whole products, each once
    for w in cache.writes:
        assert 1 <= len(w) <= batch
        rows = sum(len(r) for r in w.values())
        assert rows <= cap or len(w) == 1  # only a product larger than the cap goes alone
    # A write closes only when the next product would not fit (or the batch is full).
    for w, nxt in zip(cache.writes, cache.writes[1:], strict=False):
        first_next = len(next(iter(nxt.values())))
        assert len(w) == batch or sum(len(r) for r in w.values()) + first_next > cap
    assert (result.products, result.rows) == (len(sizes), sum(sizes))
    assert seen == sorted(seen) and (seen[-1] if seen else (0, 0)) == (len(sizes), sum(sizes))
    assert len(seen) == len(cache.writes)
    assert cache.threads <= {"stockctl-warm-writer"}
    assert "warm:last" in cache.meta


def test_a_failing_cache_stops_the_warm_with_its_error_and_the_writer_ends() -> None:
    before = threading.active_count()
    cache = RecordingCache(fail_at=2)
    with pytest.raises(CacheUnavailable, match="connection refused"):
        warm([30] * 500, cache, batch=10)
    assert len(cache.writes) == 2  # nothing written after the failure
    assert "warm:last" not in cache.meta
    assert threading.active_count() == before


def test_an_error_reading_the_database_ends_the_writer_and_is_raised() -> None:
    class Broken(RowsStore):
        def iter_row_states(self, batch: int) -> Iterator[tuple[str, RowState]]:
            yield from list(super().iter_row_states(batch))[:90]
            raise RuntimeError("server closed the connection")

    before = threading.active_count()
    cache = RecordingCache()
    with pytest.raises(RuntimeError, match="server closed"):
        warming.warm(cast(Store, Broken([30] * 10)), cast(StockCache, cache), batch=1)
    assert threading.active_count() == before
    assert [len(w) for w in cache.writes] == [1, 1]  # the products handed over before
