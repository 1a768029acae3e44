"""Many writers at once on a real PostgreSQL: no unit appears or vanishes, no invariant breaks.

Threads share one ``Stockctl`` (it is documented thread-safe) and so one connection pool.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import stockctl
from stockctl.core import events as ev
from stockctl.errors import InventoryNotFound, StockRuleViolation
from stockctl.library import Stockctl
from tests import dbutil
from tests.conftest import new_id

THREADS = 16
OPS_PER_THREAD = 15  # a fixed amount of work, not a time budget: the machine may be busy


@pytest.fixture
def pg(pg_url: str) -> Iterator[Stockctl]:
    with stockctl.connect(pg_url) as client:
        client.init()
        yield client


def run_threads(work: Callable[[random.Random], Any], threads: int = THREADS) -> list[Any]:
    """Run ``work`` on many threads started together; re-raise the first unexpected error."""
    start = threading.Barrier(threads)

    def worker(seed: int) -> Any:
        start.wait()
        return work(random.Random(seed))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(worker, range(threads)))


def assert_rows_consistent(sc: Stockctl, product: str) -> None:
    """Each row: invariants hold, and its ledger and its events account for every version."""
    moves = dbutil.ledger(sc, product)
    events = [
        e for e in dbutil.outbox_events(sc, product) if e["topic"].startswith("warehouse.stock.")
    ]
    assert len(events) == len(moves)
    for row in dbutil.rows(sc, product):
        w = row["warehouse_id"]
        assert 0 <= row["quantity_reserved"] <= row["quantity_available"]
        mine = [m for m in moves if m["warehouse_id"] == w]
        assert [m["version"] for m in mine] == list(range(1, row["version"] + 1))
        assert sum(m["delta_available"] for m in mine) == row["quantity_available"]
        assert mine[-1]["quantity_available"] == row["quantity_available"]
        for before, after in zip(mine, mine[1:], strict=False):
            assert (
                after["quantity_available"] - before["quantity_available"]
                == (after["delta_available"])
            )
        versions = sorted(
            e["event"]["data"]["version"] for e in events if e["event"]["data"]["warehouse_id"] == w
        )
        assert versions == list(range(1, row["version"] + 1))


def test_random_transfers_and_adjusts_conserve_stock(pg: Stockctl) -> None:
    p = new_id("P")
    warehouses = [new_id("W") for _ in range(3)]
    pg.add_product(p)
    for w in warehouses:
        pg.add_warehouse(w)
    pg.receive(p, warehouses[0], 3000)  # the other two rows are created by the racing writers

    def work(rng: random.Random) -> tuple[int, int, int]:
        adjusted = done = refused = 0
        for _ in range(OPS_PER_THREAD):
            src, dst = rng.sample(warehouses, 2)
            try:
                if rng.random() < 0.75:
                    pg.transfer(p, src, dst, rng.randint(1, 40))
                else:
                    delta = rng.choice([-1, 1]) * rng.randint(1, 20)
                    pg.adjust(p, src, delta, reason="race")
                    adjusted += delta
                done += 1
            except (StockRuleViolation, InventoryNotFound):
                refused += 1
        return adjusted, done, refused

    results = run_threads(work)
    adjusted = sum(r[0] for r in results)
    done = sum(r[1] for r in results)
    assert done + sum(r[2] for r in results) == THREADS * OPS_PER_THREAD
    assert done >= THREADS * OPS_PER_THREAD // 2, f"most writes should succeed: {results}"
    rows = dbutil.rows(pg, p)
    assert sum(r["quantity_available"] for r in rows) == 3000 + adjusted
    assert_rows_consistent(pg, p)


def test_concurrent_first_receipts_of_a_new_row_all_count(pg: Stockctl) -> None:
    p, w = new_id("P"), new_id("W")
    pg.add_product(p)
    pg.add_warehouse(w)
    results = run_threads(lambda rng: pg.receive(p, w, 1), threads=12)
    assert sorted(r.version for r in results) == list(range(1, 13))
    row = dbutil.row(pg, p, w)
    assert row is not None and (row["quantity_available"], row["version"]) == (12, 12)
    assert_rows_consistent(pg, p)


def test_transfers_never_oversell_the_source(pg: Stockctl) -> None:
    p, a, b = new_id("P"), new_id("W"), new_id("W")
    pg.add_product(p)
    pg.add_warehouse(a)
    pg.add_warehouse(b)
    pg.receive(p, a, 50)
    pg.receive(p, b, 1)

    def work(rng: random.Random) -> int:
        moved = 0
        for _ in range(10):
            try:
                pg.transfer(p, a, b, 1)
                moved += 1
            except StockRuleViolation:
                pass
        return moved

    assert sum(run_threads(work)) == 50  # 160 attempts, exactly the 50 units there were
    assert [r["quantity_available"] for r in dbutil.rows(pg, p)] == ([0, 51] if a < b else [51, 0])
    assert_rows_consistent(pg, p)


def test_the_same_idempotency_key_at_once_applies_once(pg: Stockctl) -> None:
    p, w = new_id("P"), new_id("W")
    pg.add_product(p)
    pg.add_warehouse(w)
    pg.receive(p, w, 1)
    key = new_id("key")
    results = run_threads(lambda rng: pg.receive(p, w, 5, idempotency_key=key), threads=8)
    assert len(set(results)) == 1
    row = dbutil.row(pg, p, w)
    assert row is not None and (row["quantity_available"], row["version"]) == (6, 2)
    topics = [e["topic"] for e in dbutil.outbox_events(pg, p)]
    assert topics.count(ev.STOCK_UPDATED) == 2
