"""The catalog side on the fakes: projecting the outbox's events into the cache
(``stockctl.core.catalog.project``) and the cached read path (``stockctl.core.cache.get_stock``),
with de-duplication, the version guard and the database fallback."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from stockctl.core import catalog, envelope, inventory, lifecycle, reservations
from stockctl.core import events as ev
from stockctl.core.cache import get_stock
from stockctl.core.context import Context
from stockctl.core.envelope import Incoming
from tests.fakes.cache import FakeCache
from tests.fakes.store import FakeStore


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def stocked(ctx: Context) -> Context:
    inventory.add_product(ctx, "P1")
    inventory.add_warehouse(ctx, "W1", priority=1)
    inventory.add_warehouse(ctx, "W2", priority=2)
    inventory.receive(ctx, "P1", "W1", 10)
    inventory.receive(ctx, "P1", "W2", 4)
    return ctx


def outbox(store: FakeStore, product: str) -> list[Incoming]:
    """The product's events as the processor reads them, oldest first."""
    return [envelope.parse(e.payload, e.topic) for e in reversed(store.outbox_for(product, 1000))]


def releases(ctx: Context) -> tuple[list[tuple[str, str]], Callable[[str, str], object]]:
    """The release the worker passes to ``project``, and what it released."""
    done: list[tuple[str, str]] = []

    def release(order_id: str, why: str) -> object:
        done.append((order_id, why))
        return lifecycle.release_order(ctx, order_id, why)

    return done, release


def no_release(order_id: str, why: str) -> object:
    raise AssertionError("no order event here")


def plain(cache: FakeCache, key: str) -> str | None:
    return cache.get_keys([key])[0]


def test_a_product_unknown_to_the_cache_is_filled_whole_from_the_database(
    stocked: Context, store: FakeStore, cache: FakeCache
) -> None:
    out = catalog.project(store, cache, outbox(store, "P1"), no_release)
    assert out.filled == 1 and out.applied == 0  # the first event found nothing to update
    assert plain(cache, cache.keys.total("P1")) == "14"
    assert plain(cache, cache.keys.available("P1")) == "14"
    assert plain(cache, cache.keys.warehouse("P1", "W2")) == "4"


def test_reserves_show_as_fewer_sellable_units(
    stocked: Context, store: FakeStore, cache: FakeCache
) -> None:
    catalog.project(store, cache, outbox(store, "P1"), no_release)
    seen = len(outbox(store, "P1"))
    reservations.reserve(stocked, "P1", "W1", 6)
    out = catalog.project(store, cache, outbox(store, "P1")[seen:], no_release)
    assert out.applied == 1
    assert plain(cache, cache.keys.total("P1")) == "14"  # on hand
    assert plain(cache, cache.keys.available("P1")) == "8"  # sellable


def test_duplicates_and_any_order_of_versions_end_where_the_database_is(
    stocked: Context, store: FakeStore, cache: FakeCache
) -> None:
    rng = random.Random(7)
    for i in range(20):
        inventory.adjust(stocked, "P1", rng.choice(["W1", "W2"]), 1 + i % 3, reason="count")
    events = outbox(store, "P1")
    catalog.project(store, cache, events[:1], no_release)  # the product is now cached
    shuffled = events * 2
    rng.shuffle(shuffled)
    catalog.project(store, cache, shuffled, no_release)
    rows = {r.warehouse_id: r for r in store.product_inventory("P1")}
    cached = cache.get_products(["P1"])["P1"]
    assert cached is not None
    assert {r.warehouse_id: (r.version, r.on_hand) for r in cached.rows} == {
        w: (r.version, r.on_hand) for w, r in rows.items()
    }


def test_an_order_cancelled_event_releases_its_holds_once(
    stocked: Context, store: FakeStore, cache: FakeCache
) -> None:
    reservations.reserve(stocked, "P1", "W1", 3, order_id="O-9")
    cancelled = catalog.publish(stocked, ev.ORDER_CANCELLED, {"order_id": "O-9"})
    event = envelope.parse(cancelled.to_json(), cancelled.topic)
    done, release = releases(stocked)
    first = catalog.project(store, cache, [event], release)
    again = catalog.project(store, cache, [event], release)
    assert (first.released, again.released, again.duplicates) == (1, 0, 1)
    assert done == [("O-9", "order_cancelled")]
    row = store.get_inventory("P1", "W1")
    assert row is not None and row.reserved == 0


def test_reads_come_from_the_cache_and_misses_from_the_database(
    stocked: Context, store: FakeStore, cache: FakeCache
) -> None:
    first = get_stock(store, cache, ["P1", "P404"])
    assert first["P404"] is None
    level = first["P1"]
    assert level is not None and (level.on_hand, level.sellable) == (14, 14)
    assert (cache.hits, cache.misses) == (0, 2)
    again = get_stock(store, cache, ["P1"])  # filled by the miss
    assert again["P1"] == level and cache.hits == 1


def test_a_cache_that_is_down_costs_nothing_but_the_database_read(
    stocked: Context, store: FakeStore, cache: FakeCache
) -> None:
    cache.down = True
    level = get_stock(store, cache, ["P1"])["P1"]
    assert level is not None and level.sellable == 14
    cache.down = False
    assert cache.rows == {}  # nothing was written while it was away
