"""The cache read breaker: one failure opens it, nothing touches the cache while it is open,
one probe after the cool-down, and only the state changes are logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from stockctl.core.cache import bulk_sellable, get_stock
from stockctl.core.guard import CLOSED, HALF_OPEN, OPEN, CacheBypassed, GuardedReads, ReadBreaker
from stockctl.core.projection import CacheKeys, RowState, StockLevel
from stockctl.errors import CacheUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FlakyCache:
    """A cache whose calls fail with CacheUnavailable while ``down``; counts every call."""

    def __init__(self) -> None:
        self.keys = CacheKeys("t")
        self.down = False
        self.calls = 0
        self.filled: list[str] = []

    def _touch(self) -> None:
        self.calls += 1
        if self.down:
            raise CacheUnavailable("redis unavailable at redis://x: Timeout reading from socket")

    def get_levels(self, product_ids: Sequence[str]) -> dict[str, StockLevel | None]:
        self._touch()
        return dict.fromkeys(product_ids)

    def get_keys(self, keys: Sequence[str]) -> list[str | None]:
        self._touch()
        return [None for _ in keys]

    def count_reads(self, hits: int, misses: int) -> None:
        self._touch()

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        self._touch()
        self.filled += list(products)

    def ping(self) -> None:
        self._touch()


class Store:
    """Only what the read path asks of a store."""

    def inventory_for_products(self, product_ids: Sequence[str]) -> dict[str, list[Any]]:
        return {}


def guarded() -> tuple[GuardedReads, FlakyCache, Clock, list[tuple[str, str]]]:
    cache, clock, changes = FlakyCache(), Clock(), []
    breaker = ReadBreaker(3.0, clock=clock, on_change=lambda a, b: changes.append((a, b)))
    return GuardedReads(cache, breaker), cache, clock, changes  # type: ignore[arg-type]


def test_one_failure_opens_it_and_nothing_touches_the_cache_until_the_cool_down() -> None:
    reads, cache, clock, changes = guarded()
    cache.down = True
    with pytest.raises(CacheBypassed, match="Timeout reading"):  # tried, failed
        reads.get_levels(["P1"])
    assert reads.breaker.state == OPEN and changes == [(CLOSED, OPEN)]
    calls = cache.calls
    for _ in range(50):
        clock.now += 0.05
        with pytest.raises(CacheBypassed, match="breaker open"):
            reads.get_keys(["k"])
    assert cache.calls == calls  # no read touched the cache while open
    assert reads.breaker.down_for() == pytest.approx(2.5)


def test_one_probe_after_the_cool_down_closes_it_when_the_cache_answers() -> None:
    reads, cache, clock, changes = guarded()
    cache.down = True
    with pytest.raises(CacheUnavailable):
        reads.ping()
    clock.now += 3.0
    with pytest.raises(CacheUnavailable):  # the probe: still down, another cool-down
        reads.ping()
    assert reads.breaker.state == OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]
    clock.now += 1.0
    with pytest.raises(CacheBypassed):  # the cool-down restarted at the failed probe
        reads.ping()
    cache.down = False
    clock.now += 2.0
    reads.ping()
    assert reads.breaker.state == CLOSED
    assert changes[-2:] == [(OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert reads.breaker.opened == 1  # one outage


def test_while_the_probe_is_in_flight_other_reads_skip_the_cache() -> None:
    reads, cache, clock, _ = guarded()
    cache.down = True
    with pytest.raises(CacheUnavailable):
        reads.ping()
    clock.now += 3.0
    cache.down = False
    inside, release = threading.Event(), threading.Event()
    original = cache.get_levels

    def slow(ids: Sequence[str]) -> dict[str, StockLevel | None]:
        inside.set()
        release.wait(5)
        return original(ids)

    cache.get_levels = slow  # type: ignore[method-assign]
    probe = threading.Thread(target=reads.get_levels, args=(["P1"],))
    probe.start()
    assert inside.wait(5)
    assert reads.breaker.state == HALF_OPEN
    with pytest.raises(CacheBypassed, match="half-open"):
        reads.get_keys(["k"])
    release.set()
    probe.join(5)
    assert reads.breaker.state == CLOSED
    assert reads.get_keys(["k"]) == [None]


def test_get_stock_and_bulk_sellable_read_the_database_and_log_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads, cache, clock, _ = guarded()
    store = Store()
    cache.down = True
    with caplog.at_level(logging.DEBUG, logger="stockctl.cache"):
        for _ in range(100):
            clock.now += 0.01
            assert get_stock(store, reads, ["P1"]) == {"P1": None}  # type: ignore[arg-type]
            assert bulk_sellable(store, reads, ["P1"]) == ({}, ["P1"])  # type: ignore[arg-type]
    assert cache.calls == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the breaker opening, not one line per read
    assert [r.getMessage() for r in warnings] == [
        "cache reads: redis unavailable at redis://x: Timeout reading from socket; reading "
        "from the database, probing every 3.0 s"
    ]
    cache.down = False
    clock.now += 3.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stockctl.cache"):
        assert get_stock(store, reads, ["P1"]) == {"P1": None}  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "cache reads: the cache answers again after 4.0 s"
    ]
