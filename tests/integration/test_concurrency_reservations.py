"""No oversell under concurrency, on PostgreSQL: threads, processes, crosswise checkouts, the
expiry/confirm race, and concurrent duplicates of one idempotency key.

After every test: ``verify_reserved() == []`` and ``0 <= reserved <= available`` on every row.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import stockctl
from stockctl.errors import InsufficientStock, ReservationExpired
from stockctl.library import Stockctl
from tests.conftest import new_id
from tests.integration.test_reservations import assert_invariants, qty, status_of

THREADS = 200
LAST_UNITS = 50
REPETITIONS = 20


@pytest.fixture
def pg(pg_url: str) -> Iterator[Stockctl]:
    client = stockctl.connect(pg_url, db_pool_max_open=60, db_pool_max_idle=20)
    client.init()
    try:
        yield client
    finally:
        client.close()


def row_with_last_units(sc: Stockctl, available: int, sellable: int) -> tuple[str, str]:
    """A fresh row with ``available`` units of which only ``sellable`` are not yet held."""
    p, w = new_id("P"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w)
    sc.receive(p, w, available)
    if available > sellable:
        sc.reserve(p, w, available - sellable)
    return p, w


def race(pool: ThreadPoolExecutor, n: int, task: Callable[[int], Any]) -> list[Any]:
    """Run ``task(i)`` for i in range(n) released together by a barrier; results or exceptions."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(timeout=60)
        try:
            return task(i)
        except Exception as exc:  # collected and judged by the test
            return exc

    return list(pool.map(run, range(n)))


def test_200_threads_race_for_the_last_50_units(pg: Stockctl) -> None:
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for _ in range(REPETITIONS):
            p, w = row_with_last_units(pg, 1000, LAST_UNITS)

            def take_one(i: int, p: str = p, w: str = w) -> Any:
                if i % 2:  # half through the one-statement fast path, half the locking path
                    return pg.reserve(p, w, 1, order_id=f"o-{i}")
                return pg.checkout([(p, w, 1)], order_id=f"o-{i}")

            results = race(pool, THREADS, take_one)
            errors = [r for r in results if isinstance(r, Exception)]
            assert all(isinstance(e, InsufficientStock) for e in errors), errors[:3]
            assert THREADS - len(errors) == LAST_UNITS
            assert qty(pg, p, w) == (1000, 1000)  # 950 held before the race + the last 50
            assert_invariants(pg)


def _reserve_until_short(
    url: str, rows: list[tuple[str, str]], start: Any, results: Any, worker: int
) -> None:
    """One process: for each row, wait for all, then take units one by one until refused."""
    try:
        with stockctl.connect(url, db_pool_max_open=4, db_pool_max_idle=2) as sc:
            for p, w in rows:
                start.wait(timeout=120)
                got, attempts = 0, 0
                while True:
                    attempts += 1
                    try:
                        if attempts % 3 == 0:
                            sc.checkout([(p, w, 1)], order_id=f"proc-{worker}")
                        else:
                            sc.reserve(p, w, 1, order_id=f"proc-{worker}")
                        got += 1
                    except InsufficientStock:
                        break
                results.put((worker, p, got, ""))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((worker, "", 0, f"{type(exc).__name__}: {exc}"))


def test_8_processes_never_take_more_than_the_stock(pg: Stockctl, pg_url: str) -> None:
    processes, stock = 8, 60
    rows = [row_with_last_units(pg, stock + 40, stock) for _ in range(3)]
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(processes)
    results = spawn.Queue()
    workers = [
        spawn.Process(target=_reserve_until_short, args=(pg_url, rows, start, results, i))
        for i in range(processes)
    ]
    for proc in workers:
        proc.start()
    got: Counter[str] = Counter()
    try:
        for _ in range(processes * len(rows)):
            worker, p, n, error = results.get(timeout=180)
            assert not error, f"process {worker}: {error}"
            got[p] += n
    except queue.Empty:
        pytest.fail("a worker process did not report back")
    finally:
        for proc in workers:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in workers)
    for p, w in rows:
        assert got[p] == stock  # every unit sold once, none twice
        assert qty(pg, p, w) == (stock + 40, stock + 40)
    assert_invariants(pg)


def test_crosswise_checkouts_never_half_succeed(pg: Stockctl) -> None:
    clients, stock = 100, 40
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for _ in range(5):
            w = new_id("W")
            pg.add_warehouse(w)
            a, b = new_id("A"), new_id("B")
            for p in (a, b):
                pg.add_product(p)
                pg.receive(p, w, stock)

            def buy(i: int, a: str = a, b: str = b, w: str = w) -> Any:
                lines = [(a, w, 1), (b, w, 1)] if i % 2 else [(b, w, 1), (a, w, 1)]
                return pg.checkout(lines, order_id=f"cart-{i}")

            results = race(pool, clients, buy)
            errors = [r for r in results if isinstance(r, Exception)]
            assert all(isinstance(e, InsufficientStock) for e in errors), errors[:3]
            made = [r for r in results if not isinstance(r, Exception)]
            assert len(made) == stock
            assert all(sorted(x.product_id for x in m) == sorted([a, b]) for m in made)
            assert qty(pg, a, w) == qty(pg, b, w) == (stock, stock)
            assert_invariants(pg)


def test_expiry_races_confirm_and_exactly_one_wins(pg: Stockctl) -> None:
    holds = 8
    with ThreadPoolExecutor(max_workers=1 + holds) as pool:
        for _ in range(25):
            p, w = row_with_last_units(pg, 100, 100)
            made = [pg.reserve(p, w, 1, ttl=timedelta(minutes=15)) for _ in range(holds)]
            sweep_at = datetime.now(UTC) + timedelta(hours=1)  # every hold is due for the sweeper

            def act(i: int, made: list[Any] = made, at: datetime = sweep_at) -> Any:
                if i == 0:
                    return pg.expire_due(at)
                return pg.confirm(made[i - 1].id)  # confirm runs on the real clock: not due

            swept, *confirms = race(pool, 1 + holds, act)
            assert isinstance(swept, int), swept
            statuses = [status_of(pg, r.id) for r in made]
            for outcome, status in zip(confirms, statuses, strict=True):
                if isinstance(outcome, ReservationExpired):
                    assert status == "EXPIRED"
                else:
                    assert not isinstance(outcome, Exception), outcome
                    assert outcome.status.value == "CONFIRMED" and status == "CONFIRMED"
            assert swept == statuses.count("EXPIRED")
            assert qty(pg, p, w) == (100, statuses.count("CONFIRMED"))
            assert_invariants(pg)


def test_50_concurrent_duplicates_of_one_key_make_one_reservation(pg: Stockctl) -> None:
    clients = 50
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for warehouse_given in (True, False, True):
            p, w = row_with_last_units(pg, 100, 100)
            key = new_id("key")

            where = w if warehouse_given else None

            def dup(i: int, p: str = p, w: str | None = where, k: str = key) -> Any:
                return pg.reserve(p, w, 2, order_id="o-1", idempotency_key=k)

            results = race(pool, clients, dup)
            errors = [r for r in results if isinstance(r, Exception)]
            assert errors == []
            assert len({r.id for r in results}) == 1
            assert qty(pg, p, w) == (100, 2)
            held = pg.app.store.list_reservations(product_id=p)
            assert [r.id for r in held] == [results[0].id]
            assert_invariants(pg)
