"""The stock cache's use cases on real databases, with Redis and with the embedded table:
warming while the event pipeline applies changes (the version guard, watched from outside),
incremental sync after missed events, the read path's hit and miss accounting, an unreachable
Redis, unknown products.

The adapters' own contract (keys, guard, de-duplication, expiry) is in test_cache_adapters.py.

Redis isolation: the tests use the shared test database (``REDIS_URL``, db 15) under a unique
``cache_prefix`` and app id, and delete their keys at the end. No test here uses the event
streams: their keys are the event types, shared by every run on a Redis database (see
``tests/eventutil.py``), so the Redis pipeline is fed straight from the outbox instead.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

import stockctl
from stockctl.bootstrap import App, bootstrap
from stockctl.core import cache as cache_uc
from stockctl.core import catalog, warming
from stockctl.core import seed as demo
from stockctl.core.cache import ReadCounters
from stockctl.core.envelope import parse
from stockctl.core.projection import ProductStock, RowState
from stockctl.errors import CacheUnavailable, InvalidInput
from stockctl.library import Stockctl
from stockctl.settings import load_settings
from stockctl.store.cache_sql import SqlStockCache
from stockctl.store.tables import inventory
from tests.conftest import REDIS_URL
from tests.eventutil import (
    Background,
    assert_cache_matches_db,
    delete_matching,
    text_of,
    unique,
    wait_until,
)
from tests.fakes.clock import ManualClock

PRODUCTS = 500
WAREHOUSES = 4


@dataclass
class World:
    """stockctl with its cache (Redis or embedded), and a plain GET of a cache key."""

    kind: str
    url: str
    settings: dict[str, Any]
    sc: Stockctl
    get: Callable[[str], str | None]
    extra: list[App] = field(default_factory=list)

    @property
    def app(self) -> App:
        return self.sc.app

    def another_app(self) -> App:
        """A second process's view: its own App (pool, counters) on the same settings."""
        app = bootstrap(load_settings(database_url=self.url, **self.settings))
        self.extra.append(app)
        return app

    def product_ids(self) -> list[str]:
        return self.app.store.all_product_ids()


def seed(app: App, products: int = PRODUCTS, warehouses: int = WAREHOUSES) -> list[str]:
    """The demo seed (P000001..., WH001...): rows with versions 1, no events."""
    demo.load(app.store, demo.SeedPlan(products, warehouses), app.ctx.clock(), app.ctx.actor)
    return [demo.product_id(n) for n in range(1, products + 1)]


def plain_get(app: App) -> Callable[[str], str | None]:
    cache = app.cache()
    if isinstance(cache, SqlStockCache):
        return cache.get
    client = app.redis()

    def get(key: str) -> str | None:
        value = client.get(key)
        return None if value is None else text_of(value)

    return get


@contextmanager
def world_of(kind: str, url: str, **extra: Any) -> Iterator[World]:
    """``redis``: the cache in Redis db 15 under a unique prefix (keys deleted afterwards);
    ``embedded``: the cache in the database's own table."""
    settings: dict[str, Any] = {"cache_prefix": unique("t"), "app_id": unique("app"), **extra}
    if kind == "redis":
        settings["redis_url"] = REDIS_URL
    sc = stockctl.connect(url, **settings)
    sc.init()
    world = World(kind, url, settings, sc, plain_get(sc.app))
    try:
        yield world
    finally:
        for app in world.extra:
            app.close()
        try:
            if kind == "redis":
                client = sc.app.redis()
                prefix, app_id = settings["cache_prefix"], settings["app_id"]
                delete_matching(client, f"{prefix}:*")
                delete_matching(client, f"stockctl:{prefix}:*")
                delete_matching(client, f"stockctl:heartbeat:{app_id}:*")
        finally:
            sc.close()


@pytest.fixture(params=["redis", "embedded"])
def world(request: pytest.FixtureRequest, pg_url: str) -> Iterator[World]:
    """Both caches on PostgreSQL."""
    with world_of(request.param, pg_url) as w:
        yield w


# -- warming while the event pipeline applies changes


class VersionLog:
    """What the cache held for each (product, warehouse), read after read: a version that goes
    down, or a row that disappears, is a roll-back."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], int] = {}
        self.rollbacks: list[tuple[str, str, int, int | None]] = []
        self.reads = 0
        self.raises = 0

    def record(self, found: Mapping[str, ProductStock | None]) -> None:
        self.reads += 1
        for p, stock in found.items():
            now = {r.warehouse_id: r.version for r in stock.rows} if stock else {}
            for w in {*now, *(w for q, w in self.held if q == p)}:
                before, after = self.held.get((p, w)), now.get(w)
                if before is not None and (after is None or after < before):
                    self.rollbacks.append((p, w, before, after))
                if after is not None:
                    if before is not None and after > before:
                        self.raises += 1
                    self.held[(p, w)] = after


def project_outbox(app: App, stop: threading.Event) -> None:
    """The Redis processor's projection (``catalog.project``: one guarded APPLY per batch, the
    products it could not complete filled from the database), fed straight from the outbox.
    The cache sees what it sees behind the streams, and no other run's stream entries (the
    stream keys are shared by every test and benchmark on that Redis database) can reach it."""
    while True:
        with app.store.transaction() as tx:
            entries = tx.take_outbox(200, app.ctx.clock())
            if entries:
                events = [parse(e.payload, topic=e.topic) for e in entries]
                catalog.project(app.store, app.cache(), events, lambda order, why: None)
        if not entries and stop.wait(0.01):
            return


class Churn:
    """Writers adjusting hot rows through the library, the event pipeline projecting them, and
    a poller logging the versions the cache holds, in threads, until the block ends."""

    def __init__(self, w: World, hot: list[str], writers: int = 2) -> None:
        self.w, self.hot = w, hot
        self.stop, self.stop_pipeline = threading.Event(), threading.Event()
        self.log = VersionLog()
        self.changes = 0
        self.failures: list[BaseException] = []
        targets: list[Callable[[], None]] = [self._poll]
        targets += [functools.partial(self._write, s) for s in range(writers)]
        self.threads = [threading.Thread(target=self._guard(t), daemon=True) for t in targets]
        if w.kind == "redis":
            self.pipeline: Any = threading.Thread(
                target=self._guard(lambda: project_outbox(w.app, self.stop_pipeline)), daemon=True
            )
        else:  # the embedded pipeline, as `stockctl worker run` runs it
            self.pipeline = Background(w.app, only=["processor"], consumer="churn")

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by the test
                self.failures.append(exc)
                self.stop.set()

        return run

    def _write(self, seed_: int) -> None:
        rng = random.Random(seed_)
        warehouses = [demo.warehouse_id(n) for n in range(1, WAREHOUSES + 1)]
        while not self.stop.is_set():
            p, wh = rng.choice(self.hot), rng.choice(warehouses)
            self.w.sc.adjust(p, wh, rng.randint(1, 5), reason="churn")
            self.changes += 1

    def _poll(self) -> None:
        cache = self.w.app.cache()
        while not self.stop.is_set():
            self.log.record(cache.get_products(self.hot))

    def __enter__(self) -> Churn:
        if isinstance(self.pipeline, Background):
            self.pipeline.__enter__()
        else:
            self.pipeline.start()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        app = self.w.app
        wait_until(lambda: app.store.outbox_backlog()[0] == 0, 60, "every change projected")
        if isinstance(self.pipeline, Background):
            self.pipeline.stop()
        else:
            self.stop_pipeline.set()
            self.pipeline.join(30)
        self.log.record(app.cache().get_products(self.hot))


@pytest.fixture(params=["redis", "embedded-postgresql", "embedded-sqlite"])
def churned(request: pytest.FixtureRequest) -> Iterator[World]:
    kind, _, db = request.param.partition("-")
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url")
    with world_of(kind, url, relay_poll_interval_ms=20) as w:
        yield w


def test_warming_while_changes_are_applied_never_rolls_the_cache_back(churned: World) -> None:
    """Writers adjust hot rows while the pipeline projects their events and warm-cache runs
    again and again; the versions the cache holds never go down, and it ends equal to the
    database."""
    app = churned.app
    ids = seed(app)
    with Churn(churned, hot=ids[:40]) as churn:
        warms, deadline, limit = 0, time.monotonic() + 2, time.monotonic() + 30
        # at least 2 s, 3 warms and 50 changes (a loaded machine makes changes slowly)
        while (
            (time.monotonic() < deadline or warms < 3 or churn.changes < 50)
            and not churn.failures
            and time.monotonic() < limit
        ):
            result = warming.warm(app.store, app.cache(), batch=25)
            assert result.rows == PRODUCTS * WAREHOUSES
            warms += 1
    assert not churn.failures, churn.failures[0]
    log = churn.log
    assert churn.changes >= 50, f"only {churn.changes} changes were made"
    assert log.raises > 0 and log.reads > 5, "the poller saw no change happen"
    assert not log.rollbacks, f"{len(log.rollbacks)} roll-back(s), first: {log.rollbacks[0]}"
    cache = app.cache()
    assert cache_uc.verify(app.store, cache, cache.keys, ids) == []
    some = [*ids[:40], *random.Random(1).sample(ids[40:], 40)]  # one GET per key: a sample
    assert_cache_matches_db(app, cache, churned.get, cache.keys, some)


# -- incremental sync


def test_sync_refreshes_what_the_events_missed_and_then_only_the_overlap(world: World) -> None:
    """No processor runs: changed rows leave the cache stale until one sync cycle repairs it; a
    cycle with nothing changed re-reads only the rows inside the overlap."""
    app, overlap = world.app, timedelta(seconds=0.2)
    cache = app.cache()
    ids = seed(app)
    # Time passes by hand: the changes below are stamped by this clock (last_movement_at).
    clock = ManualClock(app.ctx.clock())
    app.ctx = dataclasses.replace(app.ctx, clock=clock)
    sc = Stockctl(app)
    warming.warm(app.store, cache)
    first = cache_uc.sync(app.store, cache, app.ctx.clock(), overlap=overlap)
    assert first.products == PRODUCTS  # no checkpoint: the first window holds the seed
    clock.advance(seconds=overlap.total_seconds() * 2)

    rng = random.Random(5)
    targets = {(rng.choice(ids), demo.warehouse_id(rng.randint(1, WAREHOUSES))) for _ in range(100)}
    ordered = sorted(targets)
    for n, (p, wh) in enumerate(ordered):
        if n == len(ordered) // 2:  # the later half only falls inside the next overlap
            clock.advance(seconds=overlap.total_seconds() * 3)
        sc.adjust(p, wh, rng.randint(1, 9), reason="missed by the events")
    changed = {p for p, _ in targets}
    stale = cache_uc.verify(app.store, cache, cache.keys, ids)
    assert {d.product_id for d in stale} == changed
    assert {d.kind for d in stale} == {"stale"}

    second = cache_uc.sync(app.store, cache, app.ctx.clock(), overlap=overlap)
    assert second.rows >= len(targets) and second.products >= len(changed)
    assert cache_uc.verify(app.store, cache, cache.keys, ids) == []
    assert_cache_matches_db(app, cache, world.get, cache.keys, sorted(changed))

    checkpoint = cache.get_meta(cache_uc.SYNC_CHECKPOINT)
    assert checkpoint is not None
    third = cache_uc.sync(app.store, cache, app.ctx.clock(), overlap=overlap)
    assert cache.get_meta(cache_uc.SYNC_CHECKPOINT) == checkpoint
    assert third.since is not None and third.until is not None
    assert third.until.isoformat() == checkpoint
    with app.store.read() as conn:
        in_overlap = {
            r.product_id
            for r in conn.execute(
                select(inventory.c.product_id).where(inventory.c.last_movement_at >= third.since)
            )
        }
    assert in_overlap <= changed
    assert third.products == len(in_overlap) < len(changed)


# -- the read path


def test_hits_and_misses_are_counted_per_process_and_across_processes(world: World) -> None:
    ids = seed(world.app, 30, 3)
    a, b = world.app, world.another_app()
    truth = a.store.inventory_for_products(ids)

    first = cache_uc.get_stock(a.store, a.cache(), ids[:10], a.read_counters)
    assert (a.read_counters.hits, a.read_counters.misses) == (0, 10)
    assert all(a.cache().get_products(ids[:10]).values()), "misses fill the cache"
    assert all(b.cache().get_products(ids[10:15])[p] is None for p in ids[10:15])

    second = cache_uc.get_stock(b.store, b.cache(), ids[:15], b.read_counters)
    assert (b.read_counters.hits, b.read_counters.misses) == (10, 5)
    assert (a.read_counters.hits, a.read_counters.misses) == (0, 10)  # per process
    for p in ids[:15]:
        want = ProductStock(p, tuple(RowState.of(r) for r in truth[p])).level()
        assert second[p] == want
        if p in first:
            assert first[p] == want

    seen: list[tuple[int, int]] = []
    b.read_counters.listener = lambda h, m: seen.append((h, m))
    cache_uc.get_stock(b.store, b.cache(), ids[:15], b.read_counters)
    assert seen == [(15, 0)]

    for app in (a, b):  # the shared counts, from either process
        stats = app.cache().stats()
        assert (stats["stock_reads_hits"], stats["stock_reads_misses"]) == (25, 15)
        assert stats["stock_hit_rate"] == round(25 / 40, 4)


def test_shared_counts_lose_no_read_under_concurrency(world: World) -> None:
    """Two processes' worth of threads reading at once: every read is counted once."""
    ids = seed(world.app, 20, 2)
    apps = [world.app, world.another_app()]
    calls, per_call = 15, 8

    def reader(n: int) -> None:
        app, rng = apps[n % 2], random.Random(n)
        for _ in range(calls):
            cache_uc.get_stock(app.store, app.cache(), rng.sample(ids, per_call), app.read_counters)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    total = 6 * calls * per_call
    local = [(a.read_counters.hits, a.read_counters.misses) for a in apps]
    assert sum(h + m for h, m in local) == total
    stats = world.app.cache().stats()
    assert (stats["stock_reads_hits"], stats["stock_reads_misses"]) == (
        sum(h for h, _ in local),
        sum(m for _, m in local),
    )


def test_unknown_products_are_reported_not_fatal(world: World) -> None:
    app = world.app
    cache = app.cache()
    ids = seed(app, 20, 2)
    counters = ReadCounters()
    asked = [ids[0], "NO-SUCH-1", ids[1], "NO-SUCH-2"]
    found = cache_uc.get_stock(app.store, cache, asked, counters)
    assert list(found) == asked
    assert found["NO-SUCH-1"] is None and found["NO-SUCH-2"] is None
    known = found[ids[0]]
    assert known is not None and known.on_hand > 0
    assert (counters.hits, counters.misses) == (0, 4)
    again = cache_uc.get_stock(app.store, cache, asked, counters)
    assert again == found
    assert (counters.hits, counters.misses) == (2, 6)  # nothing cached for unknown ids

    result = warming.warm(app.store, cache, product_ids=["NO-SUCH-3", ids[5], ids[6]])
    assert (result.products, result.rows, result.not_found) == (2, 4, ["NO-SUCH-3"])
    assert cache.get_products(["NO-SUCH-3"]) == {"NO-SUCH-3": None}

    with pytest.raises(InvalidInput):
        cache_uc.get_stock(app.store, cache, ["not an id!"])
    with pytest.raises(InvalidInput):
        cache_uc.get_stock(app.store, cache, ids[:3], limit=2)
    for batch in (0, -1, 10_001, True):
        with pytest.raises(InvalidInput, match="batch must be between 1 and 10000"):
            warming.warm(app.store, cache, batch=batch)


# -- Redis unreachable


def test_reads_fall_back_to_the_database_when_redis_is_down(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Counted as misses, not errors; nothing is written to the absent cache."""
    sc = stockctl.connect(sqlite_url, redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=1)
    try:
        sc.init()
        app = sc.app
        ids = seed(app, 12, 3)
        truth = app.store.inventory_for_products(ids)
        caplog.set_level(logging.WARNING, "stockctl.cache")
        started = time.monotonic()
        found = cache_uc.get_stock(app.store, app.cache(), [*ids, "NO-SUCH"], app.read_counters)
        assert time.monotonic() - started < 5
        assert found["NO-SUCH"] is None
        for p in ids:
            assert found[p] == ProductStock(p, tuple(RowState.of(r) for r in truth[p])).level()
        assert (app.read_counters.hits, app.read_counters.misses) == (0, 13)
        assert any("redis unavailable" in r.getMessage() for r in caplog.records)
        with pytest.raises(CacheUnavailable):
            app.cache().stats()  # the cache's own commands still say it is down
    finally:
        sc.close()
