"""One contract, three caches: ``RedisStockCache`` (real Redis) and ``SqlStockCache`` on SQLite
and on PostgreSQL must behave alike — keys and values, de-duplication, the version guard, the
counts they report, expiry and heartbeats.

Plain keys are read the way the runbooks read them: a GET through redis-py on Redis, and
``SqlStockCache.get`` for the embedded table. Redis keys live under a random prefix in the events
test database (see ``tests/eventutil.py``) and are deleted afterwards.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, or_, text, update
from sqlalchemy.engine import make_url

import stockctl
from stockctl.core.cache_ports import ApplyResult, StockCache
from stockctl.core.model import Inventory, StockStatus
from stockctl.core.projection import CacheKeys, ProductStock, RowState, StockLevel, StockUpdate
from stockctl.library import Stockctl
from stockctl.redis.cache import RedisStockCache
from stockctl.redis.topology import connect, parse_redis_url
from stockctl.store.cache_sql import SqlStockCache
from stockctl.store.tables import cache_entries
from tests.conftest import PG_ADMIN_URL, REDIS_CLUSTER_URL, REDIS_SENTINEL_URL, new_id
from tests.eventutil import (
    EVENTS_REDIS_URL,
    delete_matching,
    expected_plain,
    read_plain,
    text_of,
    unique,
)
from tests.fakes.cache import FakeCache

KINDS = ["redis", "redis-cluster", "redis-sentinel", "sqlite", "postgresql"]


@dataclass
class Adapter:
    """A cache under test, the way to read its plain keys, and a clock it can be moved on by."""

    kind: str
    make: Callable[..., StockCache]
    get_with: Callable[[StockCache, str], str | None]
    advance: Callable[[float], None]
    set_with: Callable[[StockCache, str, str], None]
    made: list[StockCache] = field(default_factory=list)

    def cache(self, ttl: int = 300, hash_tags: bool = False, **options: object) -> StockCache:
        cache = self.make(ttl, hash_tags, **options)
        self.made.append(cache)
        return cache

    def getter(self, cache: StockCache) -> Callable[[str], str | None]:
        return lambda key: self.get_with(cache, key)


def _pg_database() -> Generator[str, None, None]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = unique("stockctl_test_cache_")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def sql_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Stockctl]]:
    """One database per backend for the module (creating one per test costs more than the
    tests); each test works under its own key prefix and deletes its rows."""
    pg = _pg_database()
    clients = {
        "sqlite": stockctl.connect(f"sqlite:///{tmp_path_factory.mktemp('cache') / 'c.db'}"),
        "postgresql": stockctl.connect(next(pg)),
    }
    try:
        for sc in clients.values():
            sc.init()
        yield clients
    finally:
        for sc in clients.values():
            sc.close()
        pg.close()


@pytest.fixture(params=KINDS)
def adapter(request: pytest.FixtureRequest) -> Iterator[Adapter]:
    prefix = unique("c")
    if request.param.startswith("redis"):
        url = {"redis-cluster": REDIS_CLUSTER_URL, "redis-sentinel": REDIS_SENTINEL_URL}.get(
            request.param, EVENTS_REDIS_URL
        )
        if request.param != "redis":
            request.getfixturevalue("redis_topologies")  # started by the test set-up
        client = connect(parse_redis_url(url), 5.0)

        def make_redis(ttl: int, hash_tags: bool, **options: object) -> StockCache:
            return RedisStockCache(client, CacheKeys(prefix, hash_tags), ttl, **options)

        def get_redis(_: StockCache, key: str) -> str | None:
            value = client.get(key)
            return None if value is None else text_of(value)

        def set_redis(_: StockCache, key: str, value: str) -> None:
            client.set(key, value, keepttl=True)

        try:
            yield Adapter(request.param, make_redis, get_redis, time.sleep, set_redis)
        finally:
            delete_matching(client, f"{prefix}:*")
            delete_matching(client, f"stockctl:heartbeat:{prefix}*")
            delete_matching(client, f"stockctl:{prefix}:*")
            client.close()
        return

    store = request.getfixturevalue("sql_databases")[request.param].app.store
    now = [datetime(2024, 6, 1, 12, 0, tzinfo=UTC)]

    def make_sql(ttl: int, hash_tags: bool, **options: object) -> StockCache:
        return SqlStockCache(store, CacheKeys(prefix, hash_tags), ttl, lambda: now[0], **options)

    def get_sql(cache: StockCache, key: str) -> str | None:
        assert isinstance(cache, SqlStockCache)
        return cache.get(key)

    def advance(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    def set_sql(cache: StockCache, key: str, value: str) -> None:
        with store.transaction() as tx:
            tx.conn.execute(
                update(cache_entries).where(cache_entries.c.key == key).values(value=value)
            )

    try:
        yield Adapter(request.param, make_sql, get_sql, advance, set_sql)
    finally:
        with store.transaction() as tx:
            tx.conn.execute(
                delete(cache_entries).where(
                    or_(
                        cache_entries.c.key.startswith(f"{prefix}:"),
                        cache_entries.c.key.startswith(f"stockctl:heartbeat:{prefix}"),
                        cache_entries.c.key.startswith(f"stockctl:{prefix}:"),
                    )
                )
            )


def inv(p: str, w: str, version: int, available: int, reserved: int = 0, thr: int = 0) -> Inventory:
    return Inventory(p, w, available, reserved, thr, version, None)


def upd(
    p: str, w: str, version: int, available: int, reserved: int = 0, thr: int = 0
) -> StockUpdate:
    return StockUpdate(new_id("e"), p, RowState(w, version, available, reserved, thr))


def product(p: str, *rows: Inventory) -> ProductStock:
    return ProductStock(
        p, tuple(RowState.of(r) for r in sorted(rows, key=lambda r: r.warehouse_id))
    )


def fill(cache: StockCache, *rows: Inventory) -> None:
    by: dict[str, list[RowState]] = {}
    for r in rows:
        by.setdefault(r.product_id, []).append(RowState.of(r))
    cache.fill(by)


def assert_plain(adapter: Adapter, cache: StockCache, p: str, *rows: Inventory) -> None:
    keys = cache.keys
    want = expected_plain(keys, p, rows)
    assert read_plain(adapter.getter(cache), want) == want


# -- fill and the plain keys


@pytest.mark.parametrize(
    ("rows", "status"),
    [
        ([(50, 5, 10), (7, 0, 3)], "in_stock"),
        ([(8, 2, 10), (3, 3, 2)], "low_stock"),
        ([(4, 4, 1), (0, 0, 0)], "out_of_stock"),
        ([(9, 0, 9)], "low_stock"),  # sellable equal to the threshold is low stock
    ],
)
def test_fill_writes_every_plain_key_as_designed(
    adapter: Adapter, rows: list[tuple[int, int, int]], status: str
) -> None:
    cache = adapter.cache()
    p = new_id("P")
    inventory = [inv(p, f"W{i}", 3, a, r, t) for i, (a, r, t) in enumerate(rows)]
    fill(cache, *inventory)
    assert cache.get_products([p]) == {p: product(p, *inventory)}
    assert_plain(adapter, cache, p, *inventory)
    name = f"{{{p}}}" if adapter.kind == "redis-cluster" else p  # hash-tagged on a cluster
    assert adapter.getter(cache)(f"{cache.keys.prefix}:stock:{name}:status") == status


def test_the_literal_key_names_hold_the_values(adapter: Adapter) -> None:
    cache = adapter.cache()
    prefix = cache.keys.prefix
    get = adapter.getter(cache)
    p = new_id("P")
    # On a cluster every key of a product carries it as a hash tag, as the guide's runbook
    # reads them there: redis-cli -c GET 'catalog:stock:{P000001}:total'.
    t = f"{{{p}}}" if adapter.kind == "redis-cluster" else p
    fill(cache, inv(p, "WA", 1, 10, 4, 2), inv(p, "WB", 1, 5, 0, 8))
    assert get(f"{prefix}:stock:{t}:warehouse:WA") == "6"
    assert get(f"{prefix}:stock:{t}:warehouse:WB") == "5"
    assert get(f"{prefix}:stock:{t}:total") == "15"
    assert get(f"{prefix}:stock:{t}:available") == "11"
    assert get(f"{prefix}:stock:{t}:status") == "in_stock"
    assert get(f"{prefix}:stock:{t}:low_stock") == "0"
    detail = json.loads(get(f"{prefix}:product:{t}") or "null")
    assert detail == {
        "product_id": p,
        "total": 15,
        "available": 11,
        "status": "in_stock",
        "warehouses": {"WA": 6, "WB": 5},
    }


def test_hash_tagged_keys(adapter: Adapter) -> None:
    cache = adapter.cache(hash_tags=True)
    prefix = cache.keys.prefix
    get = adapter.getter(cache)
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 10, 0, 2))
    result = cache.apply([upd(p, "W1", 2, 12, 1, 2)])
    assert result == ApplyResult(1, 0, 0, ())
    assert get(f"{prefix}:stock:{{{p}}}:warehouse:W1") == "11"
    assert get(f"{prefix}:stock:{{{p}}}:total") == "12"
    assert get(f"{prefix}:stock:{{{p}}}:status") == "in_stock"
    assert json.loads(get(f"{prefix}:product:{{{p}}}") or "{}")["available"] == 11
    assert get(f"{prefix}:stock:{p}:total") is None
    assert cache.get_products([p]) == {p: product(p, inv(p, "W1", 2, 12, 1, 2))}


def test_levels_are_read_from_the_product_details(adapter: Adapter) -> None:
    """The read path's view of a product: what ``catalog:product:{p}`` holds, after a fill
    and after changes; None for a product not cached or a detail that is not one."""
    cache = adapter.cache()
    p, q, r = new_id("P"), new_id("P"), new_id("P")
    fill(cache, inv(p, "W2", 1, 10, 4, 3), inv(p, "W1", 1, 5, 9), inv(q, "W1", 1, 2, 0, 2))
    assert cache.get_levels([p, q, r]) == {
        p: StockLevel(p, 15, 6, StockStatus.IN_STOCK, {"W1": 0, "W2": 6}),
        q: StockLevel(q, 2, 2, StockStatus.LOW_STOCK, {"W1": 2}),
        r: None,
    }
    cache.apply([upd(p, "W1", 2, 5, 0), upd(p, "W3", 1, 1), upd(q, "W1", 2, 2, 2, 2)])
    assert cache.get_levels([p, q]) == {
        p: StockLevel(p, 16, 12, StockStatus.IN_STOCK, {"W1": 5, "W2": 6, "W3": 1}),
        q: StockLevel(q, 2, 0, StockStatus.OUT_OF_STOCK, {"W1": 0}),
    }
    assert (
        cache.get_levels([p])[p]
        == product(p, inv(p, "W1", 2, 5), inv(p, "W2", 1, 10, 4, 3), inv(p, "W3", 1, 1)).level()
    )
    for garbage in ("not json", "[1, 2]", json.dumps({"product_id": q, "total": "2"})):
        adapter.set_with(cache, cache.keys.product(p), garbage)
        assert cache.get_levels([p, q])[p] is None
    cache.apply([upd(p, "W3", 2, 2)])  # a change rewrites a detail it cannot patch
    assert (
        cache.get_levels([p])[p]
        == product(p, inv(p, "W1", 2, 5), inv(p, "W2", 1, 10, 4, 3), inv(p, "W3", 2, 2)).level()
    )
    assert cache.get_levels([]) == {}


def test_fill_is_version_guarded_and_adds_new_rows(adapter: Adapter) -> None:
    cache = adapter.cache()
    p = new_id("P")
    fill(cache, inv(p, "W1", 5, 10))
    fill(cache, inv(p, "W1", 4, 99), inv(p, "W2", 1, 3))  # W1 older: kept; W2 new: added
    assert cache.get_products([p]) == {p: product(p, inv(p, "W1", 5, 10), inv(p, "W2", 1, 3))}
    assert_plain(adapter, cache, p, inv(p, "W1", 5, 10), inv(p, "W2", 1, 3))


def test_get_products_reports_unknown_products_as_none(adapter: Adapter) -> None:
    cache = adapter.cache()
    p, q = new_id("P"), new_id("P")
    fill(cache, inv(p, "W1", 1, 1))
    assert cache.get_products([q, p]) == {q: None, p: product(p, inv(p, "W1", 1, 1))}
    assert cache.get_products([]) == {}


# -- apply


def test_a_product_with_no_cached_rows_is_reported_incomplete(adapter: Adapter) -> None:
    cache = adapter.cache()
    p, q = new_id("P"), new_id("P")
    fill(cache, inv(q, "W1", 1, 5))
    batch = [upd(p, "W1", 3, 9), upd(p, "W2", 1, 2), upd(q, "W1", 2, 6)]
    result = cache.apply(batch)
    assert result == ApplyResult(1, 0, 0, (p,))
    # Nothing of the incomplete product is written: its totals need all its rows.
    assert cache.get_products([p]) == {p: None}
    assert adapter.getter(cache)(cache.keys.total(p)) is None
    assert adapter.getter(cache)(cache.keys.warehouse(p, "W1")) is None
    # After the fill a redelivery changes nothing: the version guard stops it.
    fill(cache, inv(p, "W1", 3, 9), inv(p, "W2", 1, 2))
    assert cache.apply(batch) == ApplyResult(0, 0, 3, ())
    assert_plain(adapter, cache, p, inv(p, "W1", 3, 9), inv(p, "W2", 1, 2))
    # With the guide's markers on every event, its events were marked: now duplicates.
    seed = adapter.cache(dedupe_markers="all")
    r = new_id("P")
    batch = [upd(r, "W1", 3, 9), upd(r, "W2", 1, 2)]
    assert seed.apply(batch) == ApplyResult(0, 0, 0, (r,))
    fill(seed, inv(r, "W1", 3, 9), inv(r, "W2", 1, 2))
    assert seed.apply(batch) == ApplyResult(0, 2, 0, ())


def test_apply_updates_the_row_and_the_product_totals(adapter: Adapter) -> None:
    cache = adapter.cache()
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 10, 0, 4), inv(p, "W2", 1, 6, 0, 4))
    assert cache.apply([upd(p, "W1", 2, 10, 8, 4)]) == ApplyResult(1, 0, 0, ())
    rows = [inv(p, "W1", 2, 10, 8, 4), inv(p, "W2", 1, 6, 0, 4)]
    assert cache.get_products([p]) == {p: product(p, *rows)}
    assert_plain(adapter, cache, p, *rows)
    # A new warehouse of a cached product is added to it.
    assert cache.apply([upd(p, "W3", 1, 2, 0, 0)]) == ApplyResult(1, 0, 0, ())
    rows.append(inv(p, "W3", 1, 2))
    assert cache.get_products([p]) == {p: product(p, *rows)}
    assert_plain(adapter, cache, p, *rows)


def test_older_and_equal_versions_are_stale_and_change_nothing(adapter: Adapter) -> None:
    cache = adapter.cache()
    p = new_id("P")
    fill(cache, inv(p, "W1", 7, 10, 2, 1))
    result = cache.apply([upd(p, "W1", 6, 99), upd(p, "W1", 7, 98), upd(p, "W1", 1, 0)])
    assert result == ApplyResult(0, 0, 3, ())
    assert cache.get_products([p]) == {p: product(p, inv(p, "W1", 7, 10, 2, 1))}
    assert_plain(adapter, cache, p, inv(p, "W1", 7, 10, 2, 1))


def test_versions_in_one_batch_count_as_if_delivered_one_by_one(adapter: Adapter) -> None:
    cache = adapter.cache()
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 1))
    # v2 then v3 are each newer than what is held when they arrive; v1 is stale.
    result = cache.apply([upd(p, "W1", 2, 2), upd(p, "W1", 3, 3), upd(p, "W1", 1, 9)])
    assert result == ApplyResult(2, 0, 1, ())
    assert cache.get_products([p]) == {p: product(p, inv(p, "W1", 3, 3))}


def test_stock_events_get_no_marker_by_default_the_version_guard_stops_a_replay(
    adapter: Adapter,
) -> None:
    cache = adapter.cache()
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 5))
    first = upd(p, "W1", 2, 6)
    assert cache.apply([first, first]) == ApplyResult(1, 0, 1, ())
    assert cache.apply([first]) == ApplyResult(0, 0, 1, ())
    assert cache.get_products([p]) == {p: product(p, inv(p, "W1", 2, 6))}
    assert cache.processed([first.event_id]) == [False]
    assert adapter.getter(cache)(cache.keys.processed(first.event_id)) is None


def test_duplicates_are_counted_and_not_applied(adapter: Adapter) -> None:
    """With ``event_dedupe_markers: all`` (the guide's way) every event gets its marker."""
    cache = adapter.cache(dedupe_markers="all")
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 5))
    first = upd(p, "W1", 2, 6)
    # The same event twice in one batch.
    assert cache.apply([first, first]) == ApplyResult(1, 1, 0, ())
    # Delivered again later, even carrying other values: still a duplicate.
    again = StockUpdate(first.event_id, p, RowState("W1", 9, 100, 0, 0))
    assert cache.apply([again]) == ApplyResult(0, 1, 0, ())
    assert cache.get_products([p]) == {p: product(p, inv(p, "W1", 2, 6))}
    assert cache.processed([first.event_id]) == [True]
    value, ttl = cache.inspect([cache.keys.processed(first.event_id)])[0]
    assert value == "1" and ttl is not None and 86_000 < ttl <= 86_400  # the guide's 24 h


def test_many_products_in_one_batch(adapter: Adapter) -> None:
    cache = adapter.cache()
    ps = [new_id("P") for _ in range(30)]
    fill(cache, *[inv(p, w, 1, 10) for p in ps for w in ("W1", "W2")])
    batch = [upd(p, w, 2, 10 + i) for i, p in enumerate(ps) for w in ("W1", "W2")]
    random.Random(1).shuffle(batch)
    assert cache.apply(batch) == ApplyResult(60, 0, 0, ())
    got = cache.get_products(ps)
    for i, p in enumerate(ps):
        rows = [inv(p, "W1", 2, 10 + i), inv(p, "W2", 2, 10 + i)]
        assert got[p] == product(p, *rows)
        assert_plain(adapter, cache, p, *rows)


def test_an_empty_batch_is_a_no_op(adapter: Adapter) -> None:
    cache = adapter.cache()
    assert cache.apply([]) == ApplyResult(0, 0, 0, ())
    cache.fill({})
    assert cache.claim_events([]) == []
    assert cache.processed([]) == []


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 199), max_size=12))
@pytest.mark.parametrize("markers", ["unversioned", "all"])
def test_each_event_twice_and_versions_shuffled_end_at_version_100(
    adapter: Adapter, seed: int, cuts: list[int], markers: str
) -> None:
    """Versions 1..100 of one row, each delivered twice, shuffled, in random batches (with a
    steady second warehouse beside it): the cache ends at version 100's values, whether the
    second deliveries are stopped by their markers or by the version guard."""
    cache = adapter.cache(dedupe_markers=markers)
    p = new_id("P")
    fill(cache, inv(p, "W1", 0, 0), inv(p, "W2", 4, 7, 1, 3))

    def state(v: int) -> tuple[int, int, int]:  # available, reserved, threshold at version v
        return (v * 7) % 53 + 20, v % 11, v % 5

    events = [upd(p, "W1", v, *state(v)) for v in range(1, 101)]
    deliveries = events + events
    rnd = random.Random(seed)
    rnd.shuffle(deliveries)
    bounds = [0, *sorted(set(cuts)), len(deliveries)]
    applied = stale = dup = 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        r = cache.apply(deliveries[a:b])
        assert r.incomplete == ()
        applied, stale, dup = applied + r.applied, stale + r.stale, dup + r.duplicates
    if markers == "all":
        assert dup == 100 and applied + stale == 100 and applied >= 1
    else:
        assert dup == 0 and applied + stale == 200 and 1 <= applied <= 100
    rows = [inv(p, "W1", 100, *state(100)), inv(p, "W2", 4, 7, 1, 3)]
    assert cache.get_products([p]) == {p: product(p, *rows)}
    assert_plain(adapter, cache, p, *rows)


def test_lowering_the_highest_threshold_brings_the_status_back(adapter: Adapter) -> None:
    """Totals move by difference, but the highest threshold cannot: lowering it makes the
    product's status come from all its rows again."""
    cache = adapter.cache()
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 10, 0, 15), inv(p, "W2", 1, 0, 0, 4))
    assert adapter.getter(cache)(cache.keys.status(p)) == "low_stock"
    cache.apply([upd(p, "W1", 2, 10, 0, 3)])
    assert_plain(adapter, cache, p, inv(p, "W1", 2, 10, 0, 3), inv(p, "W2", 1, 0, 0, 4))
    assert adapter.getter(cache)(cache.keys.status(p)) == "in_stock"
    cache.apply([upd(p, "W2", 2, 0, 0, 12)])
    assert adapter.getter(cache)(cache.keys.status(p)) == "low_stock"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    changes=st.lists(
        st.tuples(
            st.integers(0, 2),  # product
            st.integers(0, 3),  # warehouse (new ones appear on the way)
            st.integers(0, 12),  # available
            st.integers(0, 14),  # reserved (may exceed available: sellable clamps at 0)
            st.sampled_from([0, 2, 6, 15]),  # threshold (goes up and down)
            st.booleans(),  # delivered late (an older version after a newer one)
        ),
        min_size=1,
        max_size=60,
    ),
    cuts=st.lists(st.integers(1, 59), max_size=8),
)
def test_totals_kept_by_change_equal_a_recompute_after_every_batch(
    adapter: Adapter, changes: list[tuple[int, int, int, int, int, bool]], cuts: list[int]
) -> None:
    """The processor moves a product's totals by each row's difference instead of reading
    every row: after every batch, every plain key equals the values computed from all rows."""
    cache = adapter.cache()
    ps = [new_id("P") for _ in range(3)]
    fill(cache, *(inv(p, "W0", 1, 10, 2, 5) for p in ps))
    held = {(p, "W0"): inv(p, "W0", 1, 10, 2, 5) for p in ps}
    versions: dict[tuple[str, str], int] = {}
    updates: list[StockUpdate] = []
    for pi, wi, a, r, t, late in changes:
        key = (ps[pi], f"W{wi}")
        versions[key] = versions.get(key, 1) + 2
        version = versions[key] - 3 if late else versions[key]
        updates.append(upd(key[0], key[1], version, a, r, t))
    bounds = [0, *sorted({c for c in cuts if c < len(updates)}), len(updates)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        cache.apply(updates[lo:hi])
        for u in updates[lo:hi]:
            key = (u.product_id, u.row.warehouse_id)
            if key not in held or u.row.version > held[key].version:
                held[key] = inv(
                    key[0], key[1], u.row.version, u.row.on_hand, u.row.reserved, u.row.threshold
                )
        for p in ps:
            assert_plain(adapter, cache, p, *(r for (q, _), r in held.items() if q == p))


# -- markers, expiry, heartbeats


def test_claim_events_and_processed(adapter: Adapter) -> None:
    cache = adapter.cache()
    a, b, c = new_id("e"), new_id("e"), new_id("e")
    assert cache.processed([a, b]) == [False, False]
    assert cache.claim_events([a, b, a]) == [True, True, False]
    assert cache.claim_events([b, c]) == [False, True]
    assert cache.processed([c, a, new_id("e")]) == [True, True, False]


def test_markers_live_for_the_dedupe_window_then_a_replay_is_stopped_by_the_version_guard(
    adapter: Adapter,
) -> None:
    cache = adapter.cache(dedupe_ttl_seconds=1, dedupe_markers="all")
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 5))
    event = upd(p, "W1", 2, 6)
    assert cache.apply([event]).applied == 1
    assert cache.apply([event]) == ApplyResult(0, 1, 0, ())
    assert cache.claim_events([new_id("e")]) == [True]
    adapter.advance(1.3)
    assert cache.processed([event.event_id]) == [False]
    # Past the window the same event is no longer a duplicate, and still changes nothing.
    assert cache.apply([event]) == ApplyResult(0, 0, 1, ())
    assert adapter.getter(cache)(cache.keys.warehouse(p, "W1")) == "6"


def test_cached_products_expire_after_the_ttl(adapter: Adapter) -> None:
    cache = adapter.cache(ttl=1, dedupe_markers="all")
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 5))
    marker = upd(p, "W1", 2, 6)
    assert cache.apply([marker]).applied == 1
    adapter.advance(1.3)
    assert cache.get_products([p]) == {p: None}
    assert adapter.getter(cache)(cache.keys.total(p)) is None
    # The product is incomplete again; the de-duplication marker (24 h) outlives it.
    assert cache.apply([upd(p, "W1", 3, 7)]) == ApplyResult(0, 0, 0, (p,))
    assert cache.processed([marker.event_id]) == [True]


def test_a_change_keeps_the_deadline_until_half_the_ttl_is_left(adapter: Adapter) -> None:
    """A product's keys live and expire together. A change writes its keys with the time the
    product has left (were a change to renew only the keys it writes, a product that keeps
    changing would lose the plain key of a quiet warehouse while looking complete: found by
    bench/soak.py); once less than half the TTL is left, a change renews every key of the
    product, so a product that keeps changing stays cached. A quiet product expires whole and
    is refilled from the database by the next event or read."""
    cache = adapter.cache(ttl=4)
    p = new_id("P")
    fill(cache, inv(p, "W1", 1, 5), inv(p, "W2", 1, 7))
    adapter.advance(1)  # 3 s of 4 left: the change keeps the deadline
    assert cache.apply([upd(p, "W1", 2, 6), upd(p, "W3", 1, 4)]).applied == 2
    rows = [inv(p, "W1", 2, 6), inv(p, "W2", 1, 7), inv(p, "W3", 1, 4)]
    assert cache.get_products([p]) == {p: product(p, *rows)}
    assert_plain(adapter, cache, p, *rows)
    adapter.advance(3.3)  # past the fill's deadline: every key is gone, the new ones too
    assert cache.get_products([p]) == {p: None}
    assert set(read_plain(adapter.getter(cache), expected_plain(cache.keys, p, rows)).values()) == {
        None
    }
    assert cache.apply([upd(p, "W1", 3, 6)]).incomplete == (p,)

    fill(cache, inv(p, "W1", 3, 6), inv(p, "W2", 1, 7))  # a refill: a fresh deadline
    adapter.advance(2.6)  # 1.4 s of 4 left: the change renews the whole product
    assert cache.apply([upd(p, "W1", 4, 9)]).applied == 1
    adapter.advance(1.6)  # past the refill's deadline, within the renewed one
    rows = [inv(p, "W1", 4, 9), inv(p, "W2", 1, 7)]
    assert cache.get_products([p]) == {p: product(p, *rows)}
    assert_plain(adapter, cache, p, *rows)  # the quiet W2's key too


def test_heartbeats_by_prefix_and_expiry(adapter: Adapter) -> None:
    cache = adapter.cache()
    group = cache.keys.prefix + "hb"  # deleted with the prefix
    cache.heartbeat(f"{group}:c1", '{"n": 1}', 1)
    cache.heartbeat(f"{group}:c2", '{"n": 2}', 60)
    cache.heartbeat(f"{group}x:c3", "other group", 60)
    assert cache.heartbeats(f"{group}:") == {f"{group}:c1": '{"n": 1}', f"{group}:c2": '{"n": 2}'}
    cache.heartbeat(f"{group}:c2", '{"n": 3}', 60)  # a fresh beat replaces the last
    adapter.advance(1.3)
    assert cache.heartbeats(f"{group}:") == {f"{group}:c2": '{"n": 3}'}
    assert cache.heartbeats(unique("none")) == {}


def test_ping(adapter: Adapter) -> None:
    adapter.cache().ping()


def test_the_seeds_runbook_reads_the_cluster_with_redis_cli(redis_topologies: None) -> None:
    """``redis-cli -c -p PORT GET 'catalog:stock:{P000001}:total'`` on the cluster, from any
    node: -c follows the MOVED redirect to the product's node."""
    import subprocess

    client = connect(parse_redis_url(REDIS_CLUSTER_URL), 5.0)
    prefix = unique("c")
    cache = RedisStockCache(client, CacheKeys(prefix))
    p = new_id("P")
    try:
        fill(cache, inv(p, "W1", 1, 10, 3, 2), inv(p, "W2", 1, 4, 0, 2))
        for port in (7100, 7101, 7102):
            out = subprocess.run(
                ["redis-cli", "-c", "-p", str(port), "GET", f"{prefix}:stock:{{{p}}}:total"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            assert out.stdout.strip() == "14"
    finally:
        delete_matching(client, f"{prefix}:*")
        client.close()


@pytest.mark.parametrize("url", ["standalone", "cluster", "sentinel"])
def test_a_key_evicted_on_its_own_comes_back_with_the_products_deadline(
    url: str, redis_topologies: None
) -> None:
    """A change keeps the deadline its keys already hold (SET ... KEEPTTL); a key that went
    missing by itself (evicted under maxmemory) is written again with the product's deadline,
    never without one."""
    url = {"cluster": REDIS_CLUSTER_URL, "sentinel": REDIS_SENTINEL_URL}.get(url, EVENTS_REDIS_URL)
    client = connect(parse_redis_url(url), 5.0)
    prefix = unique("c")
    cache = RedisStockCache(client, CacheKeys(prefix), 300)
    p = new_id("P")
    try:
        fill(cache, inv(p, "W1", 1, 10), inv(p, "W2", 1, 7))
        gone = cache.keys.warehouse(p, "W1")
        client.delete(gone)
        assert cache.apply([upd(p, "W1", 2, 4), upd(p, "W2", 2, 6)]).applied == 2
        assert cache.get_keys([gone, cache.keys.warehouse(p, "W2")]) == ["4", "6"]
        keys = [gone, cache.keys.warehouse(p, "W2"), cache.keys.total(p), cache.keys.product(p)]
        for key, (value, ttl) in zip(keys, cache.inspect(keys), strict=True):
            assert value is not None and ttl is not None and 295 <= ttl <= 300, (key, ttl)
    finally:
        delete_matching(client, f"{prefix}:*")
        client.close()


# -- the in-memory fake the unit tests use keeps step with every adapter


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_in_memory_fake_answers_as_this_adapter_does(adapter: Adapter, seed: int) -> None:
    """Random fills and event batches over a few products, some unknown to the cache, fed to
    this adapter and to ``tests/fakes/cache.FakeCache``: the same counts, rows, plain keys and
    levels after every batch."""
    cache = adapter.cache()
    fake = FakeCache(cache.keys)
    rnd = random.Random(seed)
    products = [new_id("P") for _ in range(3)]
    versions: dict[tuple[str, str], int] = {}

    def row(p: str, w: str) -> RowState:
        v = versions[(p, w)] = versions.get((p, w), 0) + rnd.randint(-1, 2)
        return RowState(w, max(v, 1), rnd.randint(0, 40), rnd.randint(0, 5), rnd.randint(0, 8))

    for _ in range(8):
        if rnd.random() < 0.3:
            batch = {p: [row(p, w) for w in ("W1", "W2")] for p in rnd.sample(products, 2)}
            cache.fill(batch)
            fake.fill(batch)
        else:
            updates = [
                StockUpdate(new_id("e"), p, row(p, rnd.choice(["W1", "W2", "W3"])))
                for p in rnd.choices(products, k=6)
            ]
            got, want = cache.apply(updates), fake.apply(updates)
            # the order of the incomplete products is the adapter's (a cluster's is by node)
            assert (got.applied, got.duplicates, got.stale, sorted(got.incomplete)) == (
                want.applied,
                want.duplicates,
                want.stale,
                sorted(want.incomplete),
            )
        assert cache.get_products(products) == fake.get_products(products)
        assert cache.get_levels(products) == fake.get_levels(products)
        keys = [k for p in products for k in cache.keys.product_keys(p) if k != cache.keys.rows(p)]
        keys += [cache.keys.warehouse(p, w) for p in products for w in ("W1", "W2", "W3")]
        assert [adapter.get_with(cache, k) for k in keys] == fake.get_keys(keys)
