"""Migrations build exactly the schema of stockctl.store.tables, and its CHECKs really hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, text, update
from sqlalchemy.exc import IntegrityError

import stockctl
from stockctl.errors import DatabaseNotInitialised
from stockctl.library import Stockctl
from stockctl.store import migrate
from stockctl.store.tables import inventory, metadata, reservations
from tests import dbutil
from tests.conftest import new_id


def schema_diffs(sc: Stockctl) -> list[Any]:
    with dbutil.engine_of(sc).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def is_sqlite_expression_index_artifact(diff: Any) -> bool:
    """Alembic cannot compare an expression index (``last_movement_at DESC``) on SQLite: it
    reports the index removed and added again. Its real DDL is checked separately below."""
    return (
        isinstance(diff, tuple)
        and diff[0] in ("add_index", "remove_index")
        and diff[1].name == "idx_inventory_last_movement"
    )


def test_migrations_match_the_table_definitions(sc: Stockctl) -> None:
    diffs = schema_diffs(sc)
    if sc.app.store.backend == "sqlite":
        diffs = [d for d in diffs if not is_sqlite_expression_index_artifact(d)]
    assert diffs == []


def test_every_table_is_created_at_head(sc: Stockctl) -> None:
    engine = dbutil.engine_of(sc)
    names = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= names
    assert migrate.current(engine) == migrate.head()


def test_last_movement_index_is_partial_and_descending(sc: Stockctl) -> None:
    engine = dbutil.engine_of(sc)
    if engine.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = :name"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    with engine.connect() as conn:
        ddl = conn.execute(text(query), {"name": "idx_inventory_last_movement"}).scalar_one()
    normal = " ".join(ddl.replace("(", " ( ").replace(")", " ) ").split()).lower()
    assert "last_movement_at desc" in normal
    assert "where" in normal and "last_movement_at is not null" in normal


def test_upgrade_twice_is_harmless(sc: Stockctl) -> None:
    sc.init()
    assert migrate.current(dbutil.engine_of(sc)) == migrate.head()


def test_an_uninitialised_database_says_so(database_url: str) -> None:
    with stockctl.connect(database_url) as sc:
        with pytest.raises(DatabaseNotInitialised, match="stockctl init"):
            sc.stock(new_id("P"))


# CHECK constraints -------------------------------------------------------------------------------


def stocked(sc: Stockctl) -> tuple[str, str]:
    p, w = new_id("P"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w)
    sc.receive(p, w, 5)
    return p, w


BAD_UPDATES: dict[str, dict[str, Any]] = {
    "reserved-above-available": {"quantity_reserved": 6},
    "available-below-reserved": {"quantity_available": -1},
    "reserved-negative": {"quantity_reserved": -1},
    "threshold-negative": {"low_stock_threshold": -1},
}


@pytest.mark.parametrize("values", BAD_UPDATES.values(), ids=BAD_UPDATES.keys())
def test_check_constraints_reject_a_direct_update(sc: Stockctl, values: dict[str, Any]) -> None:
    p, w = stocked(sc)
    before = dbutil.snapshot(sc)
    stmt = (
        update(inventory)
        .where(inventory.c.product_id == p, inventory.c.warehouse_id == w)
        .values(**values)
    )
    with pytest.raises(IntegrityError), dbutil.engine_of(sc).begin() as conn:
        conn.execute(stmt)
    assert dbutil.snapshot(sc) == before


def test_check_constraints_allow_reserved_equal_to_available(sc: Stockctl) -> None:
    p, w = stocked(sc)
    dbutil.force_reserved(sc, p, w, 5)
    stored = dbutil.row(sc, p, w)
    assert stored is not None and stored["quantity_reserved"] == 5


def _insert_inventory(p: str, w: str) -> Any:
    return insert(inventory).values(product_id=p, warehouse_id=w)


def _insert_reservation(p: str, w: str, **values: Any) -> Any:
    from stockctl.core.model import utcnow

    now = utcnow()
    row = {
        "id": 2**62 + 7,
        "product_id": p,
        "warehouse_id": w,
        "quantity": 1,
        "status": "ACTIVE",
        "created_at": now,
        "expires_at": now,
        "updated_at": now,
    }
    return insert(reservations).values(**{**row, **values})


BAD_INSERTS: dict[str, Callable[[str, str], Any]] = {
    "inventory-unknown-product": lambda p, w: _insert_inventory(new_id("P"), w),
    "inventory-unknown-warehouse": lambda p, w: _insert_inventory(p, new_id("W")),
    "inventory-duplicate-row": _insert_inventory,
    "reservation-zero-quantity": lambda p, w: _insert_reservation(p, w, quantity=0),
    "reservation-unknown-status": lambda p, w: _insert_reservation(p, w, status="LOST"),
    "reservation-without-row": lambda p, w: _insert_reservation(p, new_id("W")),
}


@pytest.mark.parametrize("make", BAD_INSERTS.values(), ids=BAD_INSERTS.keys())
def test_keys_and_checks_reject_bad_rows(sc: Stockctl, make: Callable[[str, str], Any]) -> None:
    p, w = stocked(sc)
    before = dbutil.snapshot(sc)
    with pytest.raises(IntegrityError), dbutil.engine_of(sc).begin() as conn:
        conn.execute(make(p, w))
    assert dbutil.snapshot(sc) == before
