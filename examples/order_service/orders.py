"""The order service's own database: carts and orders in one SQLite file.

Every function takes a connection that ``OrderStore.transaction()`` opened with
``BEGIN IMMEDIATE``, so a cart read and its clearing happen under one write lock.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stockctl.core.model import Reservation

CREATED = "CREATED"
CANCELLED = "CANCELLED"

SCHEMA = """
CREATE TABLE IF NOT EXISTS cart_items (
    session_id   TEXT NOT NULL,
    product_id   TEXT NOT NULL,
    warehouse_id TEXT NOT NULL DEFAULT '',  -- '': any warehouse, stockctl allocates
    quantity     INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (session_id, product_id, warehouse_id)
);
CREATE TABLE IF NOT EXISTS orders (
    id            TEXT PRIMARY KEY,
    session_id    TEXT,
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    cancelled_at  TEXT,
    cancel_reason TEXT
);
CREATE TABLE IF NOT EXISTS order_items (
    order_id       TEXT NOT NULL REFERENCES orders (id),
    reservation_id INTEGER NOT NULL,  -- stockctl's int64 reservation id
    product_id     TEXT NOT NULL,
    warehouse_id   TEXT NOT NULL,
    quantity       INTEGER NOT NULL
);
"""

Line = tuple[str, str | None, int]  # (product, warehouse or None, quantity), as stockctl takes


@dataclass
class OrderItem:
    product_id: str
    warehouse_id: str
    quantity: int
    reservation_id: int


@dataclass
class Order:
    id: str
    session_id: str | None
    status: str
    created_at: str
    cancelled_at: str | None = None
    cancel_reason: str | None = None
    items: list[OrderItem] = field(default_factory=list)


def now() -> str:
    return datetime.now(UTC).isoformat()


def new_order_id() -> str:
    """Unique across order databases: stockctl keys an order's holds (and the checkout's
    idempotency key) by this id, so an id is never reused, not even after a failed attempt."""
    return f"ORD-{uuid.uuid4().hex[:16]}"


class OrderStore:
    def __init__(self, path: str) -> None:
        self.path = path
        conn = self._connect()
        try:
            conn.executescript(SCHEMA)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)  # explicit BEGINs
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``; commit at the end unless the body already did; roll back on
        any exception."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()


def cart_lines(tx: sqlite3.Connection, session_id: str) -> list[Line]:
    rows = tx.execute(
        "SELECT product_id, warehouse_id, quantity FROM cart_items WHERE session_id = ?"
        " ORDER BY product_id, warehouse_id",
        (session_id,),
    )
    return [(r["product_id"], r["warehouse_id"] or None, r["quantity"]) for r in rows]


def in_cart(tx: sqlite3.Connection, session_id: str, product_id: str, warehouse: str | None) -> int:
    row = tx.execute(
        "SELECT quantity FROM cart_items"
        " WHERE session_id = ? AND product_id = ? AND warehouse_id = ?",
        (session_id, product_id, warehouse or ""),
    ).fetchone()
    return int(row["quantity"]) if row else 0


def put_in_cart(
    tx: sqlite3.Connection, session_id: str, product_id: str, warehouse: str | None, quantity: int
) -> None:
    tx.execute(
        "INSERT INTO cart_items (session_id, product_id, warehouse_id, quantity)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (session_id, product_id, warehouse_id)"
        " DO UPDATE SET quantity = excluded.quantity",
        (session_id, product_id, warehouse or "", quantity),
    )


def clear_cart(tx: sqlite3.Connection, session_id: str) -> None:
    tx.execute("DELETE FROM cart_items WHERE session_id = ?", (session_id,))


def insert_order(
    tx: sqlite3.Connection, order_id: str, session_id: str | None, held: list[Reservation]
) -> Order:
    """The order and one item per stock hold (with the hold's id and allocated warehouse)."""
    order = Order(order_id, session_id, CREATED, now())
    tx.execute(
        "INSERT INTO orders (id, session_id, status, created_at) VALUES (?, ?, ?, ?)",
        (order.id, session_id, order.status, order.created_at),
    )
    for r in held:
        item = OrderItem(r.product_id, r.warehouse_id, r.quantity, r.id)
        order.items.append(item)
        tx.execute(
            "INSERT INTO order_items"
            " (order_id, reservation_id, product_id, warehouse_id, quantity)"
            " VALUES (?, ?, ?, ?, ?)",
            (order_id, item.reservation_id, item.product_id, item.warehouse_id, item.quantity),
        )
    return order


def get_order(tx: sqlite3.Connection, order_id: str) -> Order | None:
    row = tx.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        return None
    items = tx.execute(
        "SELECT product_id, warehouse_id, quantity, reservation_id FROM order_items"
        " WHERE order_id = ? ORDER BY rowid",
        (order_id,),
    )
    return Order(
        row["id"],
        row["session_id"],
        row["status"],
        row["created_at"],
        row["cancelled_at"],
        row["cancel_reason"],
        [OrderItem(**dict(i)) for i in items],
    )


def mark_cancelled(tx: sqlite3.Connection, order_id: str, reason: str) -> None:
    tx.execute(
        "UPDATE orders SET status = ?, cancelled_at = ?, cancel_reason = ?"
        " WHERE id = ? AND status != ?",
        (CANCELLED, now(), reason, order_id, CANCELLED),
    )
