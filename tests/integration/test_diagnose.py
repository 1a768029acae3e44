"""The runbooks find faults injected for real on PostgreSQL and Redis (issue 8, "Proof").

Each test breaks one thing the way it breaks in production, then asks ``LiveProbe`` (the probe
``stockctl diagnose`` uses) and checks the runbook names the fault and the remedy.

Redis isolation: tests that touch the event streams hold the events lane of
``tests/eventutil.py`` (its own Redis database and lock; streams deleted before and after). The
cache-only tests use the shared test database (``REDIS_URL``) under a unique ``app_id`` and
``cache_prefix`` and delete their keys afterwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text, update

import stockctl
from stockctl.core import cache as cache_uc
from stockctl.core import diagnose as dg
from stockctl.core.catalog import TOPICS
from stockctl.core.diagnose.probe import Check, Status, Thresholds
from stockctl.daemons.workers.runner import Runner, WorkerOptions
from stockctl.library import Stockctl
from stockctl.ops.diagnostics import LiveProbe
from stockctl.store.tables import inventory
from tests.conftest import REDIS_URL, new_id
from tests.eventutil import (
    Background,
    Lane,
    drain,
    redis_lane,
    seed_stock,
    settled,
    unique,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def lane() -> Iterator[Lane]:
    with redis_lane() as lane:
        yield lane


@pytest.fixture
def cache_lane() -> Iterator[Lane]:
    """A private prefix and app id on the shared test database; no streams are written."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    lane = Lane(REDIS_URL, client, unique("diag"), unique("dg"))
    try:
        yield lane
    finally:
        lane.clean_keys()
        client.close()


def connect(database_url: str, lane: Lane, **extra: Any) -> Stockctl:
    sc = stockctl.connect(database_url, **lane.settings(**extra))
    sc.init()
    return sc


def seed(sc: Stockctl, products: int, warehouses: int, units: int = 500) -> tuple[list[str], ...]:
    return seed_stock(sc, products, warehouses, units, step=1)


def named(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def lag_checks(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.name.startswith("lag ")]


# -- stock not updating ---------------------------------------------------------------------


def test_worker_stopped_while_changes_go_on(pg_url: str, lane: Lane) -> None:
    sc = connect(
        pg_url,
        lane,
        worker_heartbeat_ttl_seconds=2,
        relay_poll_interval_ms=50,
        relay_batch_size=10,
    )
    tight = Thresholds(lag_warn=5, lag_fail=10, backlog_age_warn_s=0.5, backlog_age_fail_s=1.0)
    try:
        app = sc.app
        (p, *_), (w, *_) = seed(sc, 2, 2)
        with Background(app, only=["relay", "processor"], workers=1, consumer="w1"):
            sc.adjust(p, w, 1, reason="before the stop")
            wait_until(lambda: settled(app, lane), 10, "the worker to settle")
            wait_until(lambda: bool(app.cache().heartbeats(f"{lane.app_id}:")), 5, "a beat")
            healthy = named(dg.run(LiveProbe(app, tight), ["stock-not-updating"]))
            assert healthy["worker heartbeat"].status is Status.OK
            assert healthy["outbox backlog"].status is Status.OK
            assert all(c.status is Status.OK for c in lag_checks(list(healthy.values())))

        # the worker is gone; changes go on
        for i in range(25):
            sc.adjust(p, w, 1, reason=f"after the stop {i}")
        # the relay got one batch out before it died too: published, never processed
        relay_only = Runner(app, WorkerOptions(only=["relay"]))
        relay_only.build()
        assert relay_only.jobs[0].step() == 10
        relay_only.jobs[0].close()
        wait_until(lambda: not app.cache().heartbeats(f"{lane.app_id}:"), 5, "beats to expire")
        wait_until(lambda: LiveProbe(app).outbox_backlog()[1] > 1.1, 5, "the backlog to age")

        checks = dg.run(LiveProbe(app, tight), ["stock-not-updating"])
        found = named(checks)
        beat = found["worker heartbeat"]
        assert (beat.status, beat.value) == (Status.FAIL, "0 live worker(s)")
        assert "stockctl worker run" in beat.remedy
        backlog = found["outbox backlog"]
        assert backlog.status is Status.FAIL
        assert backlog.value.startswith("15 rows, oldest ")
        assert "stockctl worker run --only relay" in backlog.remedy
        lagging = [c for c in lag_checks(checks) if c.status is not Status.OK]
        assert [c.status for c in lagging] == [Status.FAIL]
        assert lagging[0].value.startswith("10 undelivered, 0 pending")
        assert "stockctl worker run" in lagging[0].remedy
        assert dg.exit_code(checks) == 2

        # the remedy works: start the worker again and the runbook is green
        with Background(app, only=["relay", "processor"], workers=1, consumer="w1"):
            wait_until(lambda: settled(app, lane), 10, "the restarted worker to catch up")
            wait_until(lambda: bool(app.cache().heartbeats(f"{lane.app_id}:")), 5, "a beat")
            again = dg.run(LiveProbe(app, tight), ["stock-not-updating"])
            assert dg.exit_code(again) == 0, [c for c in again if c.status is not Status.OK]
    finally:
        sc.close()


def test_a_deleted_and_a_wrong_cache_key_are_named_with_both_values(
    pg_url: str, lane: Lane
) -> None:
    sc = connect(pg_url, lane)
    try:
        app = sc.app
        (p,), (w1, w2, w3) = seed(sc, 1, 3, units=40)
        sc.reserve(p, w3, 4, order_id=new_id("o"))
        waiting = named(dg.run(LiveProbe(app), ["stock-not-updating"], p))
        assert waiting["event applied"].status is Status.FAIL  # its version not in the cache
        drain(app, workers=1)
        before = dg.run(LiveProbe(app), ["stock-not-updating"], p)
        ok = named(before)
        assert [ok[f"{p}@{w}"].status for w in (w1, w2, w3)] == [Status.OK] * 3
        assert ok[f"{p}@{w3}"].value == "database 38, cache 38"
        assert ok["event applied"].status is Status.OK
        assert ok["last event in stream"].status is Status.OK

        keys = app.cache().keys
        lane.client.delete(keys.warehouse(p, w1))
        lane.client.set(keys.warehouse(p, w2), "999")

        checks = dg.run(LiveProbe(app), ["stock-not-updating"], p)
        found = named(checks)
        assert found[f"{p}@{w1}"].status is Status.FAIL
        assert found[f"{p}@{w1}"].value == "database 40, cache None"
        assert found[f"{p}@{w2}"].status is Status.FAIL
        assert found[f"{p}@{w2}"].value == "database 41, cache 999"
        assert f"stockctl cache verify --products {p} --repair" in found[f"{p}@{w2}"].remedy
        assert found[f"{p}@{w3}"].status is Status.OK
        assert dg.exit_code(checks) == 2
    finally:
        sc.close()


# -- cache misses ---------------------------------------------------------------------------


def test_one_second_ttls_with_reads_going_on_warn_on_hit_rate_and_ttl(
    pg_url: str, cache_lane: Lane
) -> None:
    sc = connect(pg_url, cache_lane, cache_ttl_seconds=1)
    try:
        app = sc.app
        ps, _ = seed(sc, 10, 2)
        cache = app.cache()

        def read() -> None:
            found = cache_uc.get_stock(app.store, cache, ps, app.read_counters)
            assert all(v is not None for v in found.values())

        read()  # 10 misses: read-through fills the cache, for 1 s
        read()  # 10 hits
        wait_until(
            lambda: all(v is None for v in cache.get_products(ps).values()), 5, "keys to expire"
        )
        read()  # 10 misses again
        read()  # 10 hits
        read()  # 10 hits
        checks = dg.run(LiveProbe(app), ["cache-misses"])
        found = named(checks)
        rate = found["hit rate"]
        assert rate.status is Status.WARN
        assert rate.value == "60.0% of 50 reads"
        assert "cache_ttl_seconds" in rate.remedy
        ttl = found["stock key TTLs"]
        assert ttl.status is Status.WARN, ttl
        assert ttl.value.startswith("100% of 10 sampled keys expire within 60 s"), ttl
        assert "raise cache_ttl_seconds" in ttl.remedy
        assert dg.exit_code(checks) >= 1
    finally:
        sc.close()


# -- queue overflow -------------------------------------------------------------------------


def test_a_stream_past_its_maxlen_and_dead_letters_fail_queue_overflow(
    pg_url: str, lane: Lane
) -> None:
    maxlen = 20
    sc = connect(pg_url, lane, stream_maxlen=maxlen, worker_max_deliveries=1)
    try:
        app = sc.app
        (p,), (w,) = seed(sc, 1, 1, units=10_000)
        lane.xadd("warehouse.stock.updated", "not json")  # a poison entry
        drain(app, workers=1)  # groups made, seed events applied, the poison dead-lettered
        assert lane.admin().dead_letter_count() == 1
        calm = named(dg.run(LiveProbe(app), ["queue-overflow"]))
        assert calm["overflow"].status is Status.OK

        for i in range(150):  # while no processor runs (MAXLEN ~ trims whole 100-entry nodes)
            sc.adjust(p, w, -1, reason=f"burst {i}")
        Runner(app, WorkerOptions(only=["relay"], consumer="relay", burst=True)).run(
            handle_signals=False
        )
        full = [
            t
            for t in TOPICS
            if lane.client.xlen(t) >= maxlen
            and int(lane.client.xinfo_stream(t)["entries-added"]) > lane.client.xlen(t)
        ]
        assert full, "a stream was trimmed past its MAXLEN"

        checks = dg.run(LiveProbe(app), ["queue-overflow"])
        found = named(checks)
        overflow = found["overflow"]
        assert overflow.status is Status.FAIL
        assert set(overflow.value.split(", ")) >= set(full)
        assert "add workers" in overflow.remedy
        for topic in full:
            length = found[f"length {topic}"]
            assert length.status is Status.FAIL
            assert length.value == f"{lane.client.xlen(topic)} of MAXLEN {maxlen}"
        dead = found["dead letters"]
        assert (dead.status, dead.value) == (Status.WARN, "1")
        assert dg.exit_code(checks) == 2
    finally:
        sc.close()


# -- consistency ----------------------------------------------------------------------------


def test_a_corrupted_reservation_counter_fails_consistency_and_names_the_row(
    pg_url: str, cache_lane: Lane
) -> None:
    sc = connect(pg_url, cache_lane)
    try:
        app = sc.app
        (p1, p2, _), (w1, w2) = seed(sc, 3, 2)
        sc.reserve(p1, w1, 2, order_id=new_id("o"))
        held = sc.reserve(p2, w2, 3, order_id=new_id("o"))
        sc.confirm(held.id)
        cache_uc.get_stock(app.store, app.cache(), app.store.all_product_ids())  # read-through
        before = dg.run(LiveProbe(app), ["consistency"])
        assert dg.exit_code(before) == 0, before

        with app.store.engine.begin() as conn:
            conn.execute(
                update(inventory)
                .where(inventory.c.product_id == p1, inventory.c.warehouse_id == w1)
                .values(quantity_reserved=7)
            )

        checks = dg.run(LiveProbe(app), ["consistency"])
        found = named(checks)
        bad = found["reserved counters vs holds"]
        assert bad.status is Status.FAIL
        assert bad.value == f"{p1}@{w1} reserved 7, holds 2"
        assert "stockctl stock verify --repair" in bad.remedy
        assert dg.exit_code(checks) == 2
    finally:
        sc.close()


# -- slow -----------------------------------------------------------------------------------


def test_a_long_running_query_is_seen_in_pg_stat_activity(pg_url: str, cache_lane: Lane) -> None:
    sc = connect(pg_url, cache_lane)
    engine = create_engine(pg_url)
    try:
        app = sc.app
        started = threading.Event()

        def sleeper() -> None:
            with engine.connect() as conn:
                started.set()
                conn.execute(text("SELECT pg_sleep(2.5)"))

        thread = threading.Thread(target=sleeper)
        thread.start()
        try:
            assert started.wait(5)
            time.sleep(1.3)
            found = named(dg.run(LiveProbe(app), ["slow"]))
        finally:
            thread.join(10)
        long = found["queries running > 1 s"]
        assert long.status is Status.WARN
        assert int(long.value) >= 1
        connections = found["database connections"]
        used, _, top = connections.value.partition(" of ")
        assert int(used) >= 2 and int(top) >= 10
        assert found["redis ping"].status in (Status.OK, Status.WARN)
    finally:
        engine.dispose()
        sc.close()


# -- redis unreachable ----------------------------------------------------------------------


def test_with_redis_unreachable_every_runbook_completes_and_fails_on_redis(pg_url: str) -> None:
    sc = stockctl.connect(pg_url, redis_url="redis://127.0.0.1:1", redis_timeout_seconds=2)
    try:
        sc.init()
        app = sc.app
        (p,), _ = seed(sc, 1, 2)
        checks = dg.run(LiveProbe(app), list(dg.RUNBOOKS), p)
        for runbook in dg.RUNBOOKS:
            mine = [c for c in checks if c.runbook == runbook]
            failed = [c for c in mine if c.status is Status.FAIL]
            assert failed, runbook
            assert all("redis unavailable at redis://127.0.0.1:1" in c.value for c in failed), (
                failed
            )
            assert all("stockctl health" in c.remedy for c in failed)
        db_only = named([c for c in checks if c.runbook == "consistency"])
        assert db_only["reserved counters vs holds"].status is Status.OK
        assert dg.exit_code(checks) == 2
        assert json.dumps([c.__dict__ for c in checks])  # plain data for --output json
    finally:
        sc.close()
