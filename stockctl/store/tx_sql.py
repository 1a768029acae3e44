"""One unit of work: the writes of a use case on one connection inside one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from stockctl.core.events import CloudEvent
from stockctl.core.model import Inventory, Movement, Product, Reservation, Warehouse
from stockctl.core.ports import IdempotencyRecord
from stockctl.errors import RetryableConflict
from stockctl.store.ids import BlockIds, TxIds
from stockctl.store.outbox_sql import OUTBOX_CHANNEL, OutboxTx
from stockctl.store.records import (
    event_values,
    inventory_from_row,
    movement_values,
    product_from_row,
    reservation_values,
    warehouse_from_row,
)
from stockctl.store.reservation_sql import ReservationTx
from stockctl.store.tables import (
    INVENTORY_IDS,
    idempotency_keys,
    inventory,
    outbox,
    products,
    reservations,
    stock_movements,
    warehouses,
)


class SqlTx(ReservationTx, OutboxTx):
    """A unit of work on one connection inside one transaction."""

    def __init__(self, conn: Connection, blocks: BlockIds | None = None) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self._notified = False
        self._blocks = blocks
        self._tx_ids: TxIds | None = None
        self._last_inventory_id: int | None = None

    def new_inventory_id(self) -> int:
        """The id of a row about to be created: PostgreSQL's inventory_id_seq, or on SQLite
        the largest so far plus one (this transaction holds the only write lock)."""
        if self.dialect == "postgresql":
            return int(self.conn.execute(select(INVENTORY_IDS.next_value())).scalar_one())
        if self._last_inventory_id is None:
            top = self.conn.execute(select(func.max(inventory.c.id))).scalar()
            self._last_inventory_id = int(top or 0)
        self._last_inventory_id += 1
        return self._last_inventory_id

    def new_reservation_id(self) -> int:
        """A fresh reservation id (``stockctl.store.ids``)."""
        if self._blocks is not None:
            return self._blocks.take(self.conn)
        if self._tx_ids is None:
            self._tx_ids = TxIds(self.conn)
        return self._tx_ids.take()

    def get_product(self, product_id: str) -> Product | None:
        r = self.conn.execute(select(products).where(products.c.id == product_id)).first()
        return product_from_row(r) if r else None

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None:
        r = self.conn.execute(select(warehouses).where(warehouses.c.id == warehouse_id)).first()
        return warehouse_from_row(r) if r else None

    def add_product(self, product: Product) -> bool:
        stmt = self._insert(products).on_conflict_do_nothing().returning(products.c.id)
        values = {"id": product.id, "name": product.name, "created_at": product.created_at}
        return self.conn.execute(stmt, values).first() is not None

    def add_warehouse(self, warehouse: Warehouse) -> bool:
        stmt = self._insert(warehouses).on_conflict_do_nothing().returning(warehouses.c.id)
        values = {
            "id": warehouse.id,
            "name": warehouse.name,
            "priority": warehouse.priority,
            "active": warehouse.active,
            "created_at": warehouse.created_at,
        }
        return self.conn.execute(stmt, values).first() is not None

    def lock_inventory(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Inventory]:
        if not keys:
            return {}
        key_col = tuple_(inventory.c.product_id, inventory.c.warehouse_id)
        stmt = (
            select(inventory)
            .where(key_col.in_(sorted(set(keys))))
            .order_by(inventory.c.product_id, inventory.c.warehouse_id)
            .with_for_update()
        )
        rows = (inventory_from_row(r) for r in self.conn.execute(stmt))
        return {(r.product_id, r.warehouse_id): r for r in rows}

    def insert_inventory(self, row: Inventory) -> None:
        # A concurrent transaction may create the same row first (two first receipts at once):
        # then nothing is inserted, and the whole write reruns and finds the row.
        stmt = (
            self._insert(inventory)
            .on_conflict_do_nothing(index_elements=["product_id", "warehouse_id"])
            .returning(inventory.c.version)
        )
        if row.id is None:
            raise ValueError("a new inventory row needs its id (new_inventory_id)")
        inserted = self.conn.execute(
            stmt,
            {
                "id": row.id,
                "product_id": row.product_id,
                "warehouse_id": row.warehouse_id,
                "quantity_available": row.on_hand,
                "quantity_reserved": row.reserved,
                "low_stock_threshold": row.low_stock_threshold,
                "version": row.version,
                "last_movement_at": row.last_movement_at,
            },
        ).first()
        if inserted is None:
            raise RetryableConflict(
                f"inventory {row.product_id}@{row.warehouse_id} was created concurrently"
            )

    def update_inventory(self, row: Inventory) -> None:
        result = self.conn.execute(
            update(inventory)
            .where(
                inventory.c.product_id == row.product_id,
                inventory.c.warehouse_id == row.warehouse_id,
                inventory.c.version == row.version - 1,
            )
            .values(
                quantity_available=row.on_hand,
                quantity_reserved=row.reserved,
                low_stock_threshold=row.low_stock_threshold,
                version=row.version,
                last_movement_at=row.last_movement_at,
            )
        )
        if result.rowcount != 1:  # the row was locked: anything else is a bug, not a race
            raise RuntimeError(f"inventory {row.product_id}@{row.warehouse_id} changed under lock")

    def add_movements(self, movements: Sequence[Movement]) -> None:
        if movements:
            self.conn.execute(insert(stock_movements), [movement_values(m) for m in movements])

    def add_events(self, events: Sequence[CloudEvent]) -> None:
        if not events:
            return
        self.conn.execute(insert(outbox), [event_values(e) for e in events])
        if self.dialect == "postgresql" and not self._notified:
            self.conn.exec_driver_sql(f"NOTIFY {OUTBOX_CHANNEL}")  # delivered at commit
            self._notified = True

    def add_reservations(self, items: Sequence[Reservation]) -> None:
        if items:
            self.conn.execute(insert(reservations), [reservation_values(r) for r in items])

    def claim_idempotency_key(
        self, key: str, operation: str, request_hash: str, now: datetime, cutoff: datetime
    ) -> IdempotencyRecord | None:
        t = idempotency_keys
        self.conn.execute(delete(t).where(t.c.key == key, t.c.created_at < cutoff))
        claim = self._insert(t).on_conflict_do_nothing().returning(t.c.key)
        values = {
            "key": key,
            "operation": operation,
            "request_hash": request_hash,
            "created_at": now,
        }
        if self.conn.execute(claim, values).first() is not None:
            return None
        r = self.conn.execute(select(t).where(t.c.key == key)).one()
        return IdempotencyRecord(r.key, r.operation, r.request_hash, r.response, r.created_at)

    def store_idempotent_response(self, key: str, response: str) -> None:
        t = idempotency_keys
        self.conn.execute(update(t).where(t.c.key == key).values(response=response))

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
