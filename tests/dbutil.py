"""Read the database behind a ``Stockctl`` directly, to check what the library really wrote.

Plain SQLAlchemy Core on the store's engine: these helpers share no code with the store, so a
bug there cannot hide itself from the tests.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select, update

from stockctl.library import Stockctl
from stockctl.store.tables import (
    idempotency_keys,
    inventory,
    metadata,
    outbox,
    stock_movements,
)


def engine_of(sc: Stockctl) -> Engine:
    return sc.app.store.engine


def snapshot(sc: Stockctl) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: equal snapshots = nothing changed."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine_of(sc).connect() as conn:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return out


def row(sc: Stockctl, product_id: str, warehouse_id: str) -> dict[str, Any] | None:
    stmt = select(inventory).where(
        inventory.c.product_id == product_id, inventory.c.warehouse_id == warehouse_id
    )
    with engine_of(sc).connect() as conn:
        found = conn.execute(stmt).mappings().first()
    return dict(found) if found is not None else None


def rows(sc: Stockctl, product_id: str) -> list[dict[str, Any]]:
    stmt = (
        select(inventory)
        .where(inventory.c.product_id == product_id)
        .order_by(inventory.c.warehouse_id)
    )
    with engine_of(sc).connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def ledger(sc: Stockctl, product_id: str) -> list[dict[str, Any]]:
    """The product's movements, oldest first."""
    m = stock_movements
    stmt = select(m).where(m.c.product_id == product_id).order_by(m.c.id)
    with engine_of(sc).connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def outbox_events(sc: Stockctl, product_id: str) -> list[dict[str, Any]]:
    """The product's outbox rows, oldest first, with the CloudEvent payload parsed as ``event``."""
    stmt = select(outbox).where(outbox.c.subject == product_id).order_by(outbox.c.id)
    with engine_of(sc).connect() as conn:
        found = [dict(r) for r in conn.execute(stmt).mappings()]
    for r in found:
        r["event"] = json.loads(r["payload"])
    return found


def idempotency_rows(sc: Stockctl) -> list[dict[str, Any]]:
    t = idempotency_keys
    with engine_of(sc).connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(t.c.key)).mappings()]


def force_reserved(sc: Stockctl, product_id: str, warehouse_id: str, reserved: int) -> None:
    """Hold units on a row behind the library's back (no reservation code is needed for it)."""
    stmt = (
        update(inventory)
        .where(inventory.c.product_id == product_id, inventory.c.warehouse_id == warehouse_id)
        .values(quantity_reserved=reserved)
    )
    with engine_of(sc).begin() as conn:
        assert conn.execute(stmt).rowcount == 1
