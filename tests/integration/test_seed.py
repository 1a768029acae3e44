"""Demo data (COPY on PostgreSQL, batched inserts on SQLite): rows that account for themselves."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

import stockctl
from stockctl.core import seed
from stockctl.core.model import utcnow
from stockctl.errors import AlreadyExists, InvalidInput
from stockctl.library import Stockctl
from stockctl.store.tables import inventory, stock_movements
from tests import dbutil


def test_seed_loads_products_times_warehouses_with_a_ledger(sc: Stockctl) -> None:
    store = sc.app.store
    seed.load(store, seed.SeedPlan(30, 3), utcnow(), "seeder")
    counts = store.count_rows()
    assert (counts["products"], counts["warehouses"], counts["inventory"]) == (30, 3, 90)
    assert counts["stock_movements"] == 90
    m = stock_movements
    per_row = (
        select(m.c.product_id, m.c.warehouse_id, func.sum(m.c.delta_available).label("total"))
        .group_by(m.c.product_id, m.c.warehouse_id)
        .subquery()
    )
    mismatched = (
        select(func.count())
        .select_from(
            inventory.join(
                per_row,
                (per_row.c.product_id == inventory.c.product_id)
                & (per_row.c.warehouse_id == inventory.c.warehouse_id),
            )
        )
        .where(per_row.c.total != inventory.c.quantity_available)
    )
    with dbutil.engine_of(sc).connect() as conn:
        assert conn.execute(mismatched).scalar() == 0
    summary = sc.stock(seed.product_id(1))
    assert len(summary.rows) == 3 and all(r.version == 1 for r in summary.rows)
    # the seeded rows take ordinary operations afterwards
    row = sc.receive(seed.product_id(1), seed.warehouse_id(1), 1)
    assert row.version == 2


def test_seed_refuses_a_database_with_products(sc: Stockctl) -> None:
    seed.load(sc.app.store, seed.SeedPlan(2, 2), utcnow(), "seeder")
    before = dbutil.snapshot(sc)
    with pytest.raises(AlreadyExists):
        seed.load(sc.app.store, seed.SeedPlan(2, 2), utcnow(), "seeder")
    assert dbutil.snapshot(sc) == before


@pytest.mark.parametrize(("products", "warehouses"), [(0, 1), (1, 0), (-1, 5), (10**6, 1001)])
def test_seed_plan_bounds(products: int, warehouses: int) -> None:
    with pytest.raises(InvalidInput):
        seed.SeedPlan(products, warehouses)


def test_a_seed_longer_than_the_statement_timeout_completes(pg_url: str) -> None:
    """The guide's COPY is one long statement (10M rows take minutes): the request-path
    statement timeout must not cancel it, and it must still apply afterwards."""
    with stockctl.connect(pg_url) as setup:
        setup.init()
    # 20 ms: far below the load of 40,000 rows (hundreds of ms), above a plain small query
    sc = stockctl.connect(pg_url, db_statement_timeout_ms=20)
    try:
        seed.load(sc.app.store, seed.SeedPlan(4000, 10), utcnow(), "seeder")
        with stockctl.connect(pg_url) as check:  # counting 40,000 rows may take over 20 ms
            assert check.app.store.count_rows()["inventory"] == 40_000
        with dbutil.engine_of(sc).connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "20ms"
    finally:
        sc.close()
