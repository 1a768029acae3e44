"""The embedded pipeline (no Redis): the outbox table is the log and the cache is a table.

On SQLite (the default) and on PostgreSQL without Redis, where transactions commit out of id
order and the pipeline must still process every row.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import event, select

import stockctl
from stockctl.core import catalog
from stockctl.core import events as ev
from stockctl.core.envelope import parse
from stockctl.core.model import ReservationStatus
from stockctl.core.projection import update_from_event
from stockctl.errors import StockRuleViolation
from stockctl.library import Stockctl
from stockctl.store.cache_sql import SqlStockCache
from stockctl.store.tables import outbox
from tests.conftest import new_id
from tests.eventutil import (
    Background,
    all_product_ids,
    assert_cache_matches_db,
    cli,
    drain,
    seed_stock,
    wait_until,
)


@pytest.fixture
def embedded(sqlite_url: str) -> Iterator[Stockctl]:
    sc = stockctl.connect(sqlite_url, relay_poll_interval_ms=20)
    sc.init()
    try:
        yield sc
    finally:
        sc.close()


def cache_of(sc: Stockctl) -> SqlStockCache:
    cache = sc.app.cache()
    assert isinstance(cache, SqlStockCache)
    return cache


def check_converged(sc: Stockctl) -> None:
    app, cache = sc.app, cache_of(sc)
    assert app.store.outbox_backlog() == (0, None)
    assert_cache_matches_db(app, cache, cache.get, cache.keys, all_product_ids(app))


def churn(sc: Stockctl, ps: Sequence[str], ws: Sequence[str], n: int, seed_: int) -> int:
    rnd = random.Random(seed_)
    done = 0
    for _ in range(n):
        p, w = rnd.choice(ps), rnd.choice(ws)
        try:
            match rnd.randrange(4):
                case 0:
                    sc.receive(p, w, rnd.randint(1, 4))
                case 1:
                    sc.adjust(p, w, -rnd.randint(1, 6), reason="count")
                case 2:
                    sc.transfer(p, w, rnd.choice([x for x in ws if x != w]), 2)
                case _:
                    sc.reserve(p, w, rnd.randint(1, 5), order_id=new_id("O"))
            done += 1
        except StockRuleViolation:
            pass
    return done


def test_worker_run_burst_brings_the_embedded_cache_to_the_database(
    embedded: Stockctl, sqlite_url: str
) -> None:
    ps, ws = seed_stock(embedded, 8, 3, 20)
    # Changes while an embedded worker runs, then `stockctl worker run --burst` drains the rest.
    with Background(embedded.app, only=["processor"], consumer="embedded"):
        threads = [threading.Thread(target=churn, args=(embedded, ps, ws, 60, k)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    churn(embedded, ps, ws, 40, 99)
    assert embedded.app.store.outbox_backlog()[0] > 0
    env = {**os.environ, "STOCKCTL_DATABASE_URL": sqlite_url}
    done = cli(env, "worker", "run", "--burst", "--only", "processor")
    assert done.code == 0, done.err
    check_converged(embedded)
    # Every published row was projected: a replay of the whole outbox applies nothing (the
    # version guard stops it; stock events get no de-duplication marker by default).
    with embedded.app.store.engine.connect() as conn:
        found = conn.execute(select(outbox.c.event_id, outbox.c.payload)).all()
    updates = [u for r in found if (u := update_from_event(parse(r.payload))) is not None]
    assert len(updates) == len(found)
    replay = cache_of(embedded).apply(updates)
    assert (replay.applied, replay.stale, replay.incomplete) == (0, len(updates), ())
    assert cache_of(embedded).processed([r.event_id for r in found]) == [False] * len(found)
    check_converged(embedded)


def test_order_events_release_reservations_on_the_embedded_default(
    embedded: Stockctl, sqlite_url: str
) -> None:
    (p,), (w1, w2) = seed_stock(embedded, 1, 2, 20)
    cancelled, failed, kept = new_id("O"), new_id("O"), new_id("O")
    a = embedded.reserve(p, w1, 5, order_id=cancelled)
    b = embedded.reserve(p, w2, 3, order_id=cancelled)
    c = embedded.reserve(p, w2, 4, order_id=failed)
    d = embedded.reserve(p, w1, 2, order_id=kept)
    embedded.confirm(b.id)
    drain(embedded.app)
    env = {**os.environ, "STOCKCTL_DATABASE_URL": sqlite_url}
    published = cli(
        env, "events", "publish", ev.ORDER_CANCELLED, "--data", json.dumps({"order_id": cancelled})
    )
    assert published.code == 0, published.err
    catalog.publish(embedded.app.ctx, ev.PAYMENT_FAILED, {"order_id": failed})
    drain(embedded.app)
    status = {r.id: embedded.get_reservation(r.id).status for r in (a, b, c, d)}
    assert status == {
        a.id: ReservationStatus.RELEASED,
        b.id: ReservationStatus.RELEASED,
        c.id: ReservationStatus.RELEASED,
        d.id: ReservationStatus.ACTIVE,
    }
    assert embedded.stock(p).total_reserved == 2
    check_converged(embedded)
    assert json.loads(cache_of(embedded).get(cache_of(embedded).keys.product(p)) or "{}") == {
        "product_id": p,
        "total": 40,
        "available": 38,
        "status": "in_stock",
        "warehouses": {w1: 18, w2: 20},
    }


def test_rows_committed_out_of_order_are_not_skipped(pg_url: str) -> None:
    """Transaction A writes its event first but commits last: the pipeline run in between
    processes B; the next run still finds A."""
    sc = stockctl.connect(pg_url)
    sc.init()
    try:
        (p,), (wa, wb) = seed_stock(sc, 1, 2, 20)
        drain(sc.app)
        in_commit, release = threading.Event(), threading.Event()

        @event.listens_for(sc.app.store.engine, "commit")
        def _hold(conn: Any) -> None:
            if threading.current_thread().name == "slow-A":
                in_commit.set()
                assert release.wait(20)

        slow = threading.Thread(target=sc.receive, args=(p, wa, 7), name="slow-A")
        slow.start()
        assert in_commit.wait(10)  # A has written its outbox row and not committed
        sc.receive(p, wb, 3)  # B: a later id, committed first
        drain(sc.app)
        assert cache_row(sc, p, wb) == (2, 23)
        assert cache_row(sc, p, wa) == (1, 20)  # A is not visible yet
        release.set()
        slow.join(10)
        ids = outbox_ids(sc, p)
        assert ids[-2][0] < ids[-1][0]  # A's row has the smaller id
        assert ids[-2][1] == wa and ids[-1][1] == wb
        drain(sc.app)
        assert cache_row(sc, p, wa) == (2, 27)
        check_converged(sc)
    finally:
        sc.close()


def cache_row(sc: Stockctl, p: str, w: str) -> tuple[int, int]:
    stock = cache_of(sc).get_products([p])[p]
    assert stock is not None
    row = next(r for r in stock.rows if r.warehouse_id == w)
    return row.version, row.on_hand


def outbox_ids(sc: Stockctl, p: str) -> list[tuple[int, str]]:
    stmt = select(outbox.c.id, outbox.c.payload).where(
        outbox.c.subject == p, outbox.c.topic == ev.STOCK_UPDATED
    )
    with sc.app.store.engine.connect() as conn:
        rows = conn.execute(stmt.order_by(outbox.c.id)).all()
    return [(r.id, json.loads(r.payload)["data"]["warehouse_id"]) for r in rows]


def test_two_embedded_pipelines_on_postgresql_share_the_work(pg_url: str) -> None:
    """Rows are claimed with SKIP LOCKED: two workers at once still apply each event once."""
    sc = stockctl.connect(pg_url, relay_poll_interval_ms=20)
    sc.init()
    other = stockctl.connect(pg_url, relay_poll_interval_ms=20)
    try:
        ps, ws = seed_stock(sc, 6, 3, 20)
        with (
            Background(sc.app, only=["processor"], consumer="one") as one,
            Background(other.app, only=["processor"], consumer="two") as two,
        ):
            churn(sc, ps, ws, 150, 5)
            jobs = [*one.runner.jobs, *two.runner.jobs]
            rows = sc.app.store.count_rows
            wait_until(
                lambda: sum(j.processed for j in jobs) == rows()["outbox"], 20, "the pipelines"
            )
        assert all(j.processed > 0 for j in jobs), "both pipelines took a share"
        assert sum(j.totals.duplicates for j in jobs) == 0  # type: ignore[attr-defined]
        check_converged(sc)
    finally:
        sc.close()
        other.close()
