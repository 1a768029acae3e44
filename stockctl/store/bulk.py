"""Bulk loading of demo data: COPY on PostgreSQL, batched multi-row inserts on SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, func, insert, select

from stockctl.core.model import Inventory, Movement, Product, Warehouse
from stockctl.store.records import movement_values
from stockctl.store.tables import inventory, products, stock_movements, warehouses

_BATCH = 5000


def load(
    conn: Connection,
    product_rows: Sequence[Product],
    warehouse_rows: Sequence[Warehouse],
    inventory_rows: Iterable[Inventory],
    movements: Iterable[Movement],
) -> None:
    """Insert everything in the caller's transaction."""
    if conn.dialect.name == "postgresql":
        # A bulk load is a few long statements (10M rows take minutes): the request-path
        # statement timeout (30 s by default) must not cancel it. Lifted for this transaction.
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
    conn.execute(
        insert(products),
        [{"id": p.id, "name": p.name, "created_at": p.created_at} for p in product_rows],
    )
    conn.execute(
        insert(warehouses),
        [
            {
                "id": w.id,
                "name": w.name,
                "priority": w.priority,
                "active": w.active,
                "created_at": w.created_at,
            }
            for w in warehouse_rows
        ],
    )
    if conn.dialect.name == "postgresql":
        _copy(conn, "inventory", _INV_COLS, (_inv_tuple(r) for r in inventory_rows))
        _copy(
            conn,
            "stock_movements",
            _MOV_COLS,
            (tuple(movement_values(m)[c] for c in _MOV_COLS) for m in movements),
        )
    else:  # ids after the largest (PostgreSQL: inventory_id_seq, the column's default)
        first = int(conn.execute(select(func.max(inventory.c.id))).scalar() or 0) + 1
        _batched(
            conn,
            inventory,
            (
                {"id": n, **dict(zip(_INV_COLS, _inv_tuple(r), strict=True))}
                for n, r in enumerate(inventory_rows, first)
            ),
        )
        _batched(conn, stock_movements, (movement_values(m) for m in movements))


_INV_COLS = (
    "product_id",
    "warehouse_id",
    "quantity_available",
    "quantity_reserved",
    "low_stock_threshold",
    "version",
    "last_movement_at",
)
_MOV_COLS = (
    "product_id",
    "warehouse_id",
    "kind",
    "delta_available",
    "delta_reserved",
    "quantity_available",
    "quantity_reserved",
    "version",
    "reason",
    "reference",
    "reservation_id",
    "actor",
    "created_at",
)


def _inv_tuple(r: Inventory) -> tuple[Any, ...]:
    return (
        r.product_id,
        r.warehouse_id,
        r.on_hand,
        r.reserved,
        r.low_stock_threshold,
        r.version,
        r.last_movement_at,
    )


def _copy(
    conn: Connection, table: str, cols: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _batched(conn: Connection, table: Any, rows: Iterable[dict[str, Any]]) -> None:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            conn.execute(insert(table), batch)
            batch = []
    if batch:
        conn.execute(insert(table), batch)
