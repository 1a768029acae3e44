"""The reads behind the operator's reports (overview, low stock, diagnose, warm and sync of the
cache, loadtest targets): whole-table and aggregate queries, on the replica when there is one.

``SqlStore`` has these methods through this class; they only need its ``read()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy import Connection, func, select

from stockctl.core.model import Inventory
from stockctl.core.ports import OutboxEntry, WarehouseTotals
from stockctl.core.projection import RowState
from stockctl.store.records import inventory_from_row
from stockctl.store.reservation_sql import HOLDING
from stockctl.store.tables import (
    inventory,
    outbox,
    products,
    reservations,
    stock_movements,
    warehouses,
)


class SqlReportReads:
    """Report queries over ``read()`` (a connection for reads)."""

    def read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def inventory_overview(self, limit: int) -> list[Inventory]:
        stmt = (
            select(inventory)
            .order_by(inventory.c.product_id, inventory.c.warehouse_id)
            .limit(limit)
        )
        with self.read() as conn:
            return [inventory_from_row(r) for r in conn.execute(stmt)]

    def count_rows(self) -> dict[str, int]:
        tables = {
            "products": products,
            "warehouses": warehouses,
            "inventory": inventory,
            "reservations": reservations,
            "stock_movements": stock_movements,
            "outbox": outbox,
        }
        with self.read() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for name, t in tables.items()
            }

    def warehouse_totals(self) -> list[WarehouseTotals]:
        i = inventory
        sellable = i.c.quantity_available - i.c.quantity_reserved
        stmt = (
            select(
                warehouses.c.id,
                warehouses.c.name,
                warehouses.c.priority,
                warehouses.c.active,
                func.count(i.c.product_id),
                func.coalesce(func.sum(i.c.quantity_available), 0),
                func.coalesce(func.sum(i.c.quantity_reserved), 0),
                func.count(i.c.product_id).filter(sellable <= 0),
                func.count(i.c.product_id).filter(
                    sellable > 0, sellable <= i.c.low_stock_threshold
                ),
            )
            .select_from(warehouses.outerjoin(i, i.c.warehouse_id == warehouses.c.id))
            .group_by(
                warehouses.c.id, warehouses.c.name, warehouses.c.priority, warehouses.c.active
            )
            .order_by(warehouses.c.priority, warehouses.c.id)
        )
        with self.read() as conn:
            return [WarehouseTotals(*r) for r in conn.execute(stmt)]

    def low_stock(self, limit: int) -> list[Inventory]:
        i = inventory
        sellable = i.c.quantity_available - i.c.quantity_reserved
        stmt = (
            select(i)
            .where(sellable <= i.c.low_stock_threshold)
            .order_by(sellable, i.c.product_id, i.c.warehouse_id)
            .limit(limit)
        )
        with self.read() as conn:
            return [inventory_from_row(r) for r in conn.execute(stmt)]

    def outbox_for(self, product_id: str, limit: int) -> list[OutboxEntry]:
        stmt = (
            select(outbox).where(outbox.c.subject == product_id).order_by(outbox.c.id.desc())
        ).limit(limit)
        with self.read() as conn:
            return [
                OutboxEntry(r.id, r.event_id, r.topic, r.payload, r.created_at, r.published_at)
                for r in conn.execute(stmt)
            ]

    def iter_inventory(self, batch: int) -> Iterator[Inventory]:
        """Every row ordered by product, streamed with a server-side cursor."""
        stmt = select(inventory).order_by(inventory.c.product_id, inventory.c.warehouse_id)
        with self.read() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            for r in result:
                yield inventory_from_row(r)

    def iter_row_states(self, batch: int) -> Iterator[tuple[str, RowState]]:
        """(product, row state) of every row ordered by product, streamed with a server-side
        cursor; plain tuples, no per-row objects beyond the state (the warm-cache hot loop)."""
        i = inventory
        stmt = select(
            i.c.product_id,
            i.c.warehouse_id,
            i.c.version,
            i.c.quantity_available,
            i.c.quantity_reserved,
            i.c.low_stock_threshold,
        ).order_by(i.c.product_id, i.c.warehouse_id)
        with self.read() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            for p, w, v, a, r, t in result:
                yield p, RowState(w, v, a, r, t)

    def reservation_stats(self, now: datetime, soon: datetime) -> dict[str, int]:
        t = reservations
        stmt = select(
            func.count().filter(t.c.status.in_(HOLDING)),
            func.count().filter(t.c.status == "ACTIVE", t.c.expires_at <= now),
            func.count().filter(
                t.c.status == "ACTIVE", t.c.expires_at > now, t.c.expires_at <= soon
            ),
        )
        with self.read() as conn:
            holding, overdue, expiring = conn.execute(stmt).one()
        return {"holding": holding, "overdue": overdue, "expiring_soon": expiring}

    def recently_updated(
        self, since: datetime, warehouse_id: str | None, offset: int, limit: int
    ) -> list[Inventory]:
        i = inventory
        stmt = select(i).where(i.c.last_movement_at >= since)
        if warehouse_id is not None:
            stmt = stmt.where(i.c.warehouse_id == warehouse_id)
        stmt = stmt.order_by(i.c.last_movement_at, i.c.product_id, i.c.warehouse_id)
        with self.read() as conn:
            return [inventory_from_row(r) for r in conn.execute(stmt.offset(offset).limit(limit))]

    def changed_since(self, since: datetime) -> Iterator[Inventory]:
        """Rows with ``last_movement_at >= since``, streamed (the partial index serves it)."""
        i = inventory
        stmt = select(i).where(i.c.last_movement_at >= since).order_by(i.c.last_movement_at)
        with self.read() as conn:
            for r in conn.execution_options(yield_per=5000).execute(stmt):
                yield inventory_from_row(r)

    def oversold_rows(self, limit: int) -> list[str]:
        """Rows breaking 0 <= reserved <= available (the CHECK constraints forbid them)."""
        i = inventory
        stmt = (
            select(i.c.product_id, i.c.warehouse_id, i.c.quantity_available, i.c.quantity_reserved)
            .where((i.c.quantity_reserved > i.c.quantity_available) | (i.c.quantity_reserved < 0))
            .limit(limit)
        )
        with self.read() as conn:
            return [
                f"{r.product_id}@{r.warehouse_id} available {r.quantity_available} "
                f"reserved {r.quantity_reserved}"
                for r in conn.execute(stmt)
            ]

    def sample_targets(self, n: int) -> list[tuple[str, str]]:
        """Up to ``n`` (product, warehouse) rows of distinct products, at random."""
        i = inventory
        with self.read() as conn:
            ids = [
                r[0] for r in conn.execute(select(products.c.id).order_by(func.random()).limit(n))
            ]
            if not ids:
                return []
            rows = conn.execute(
                select(i.c.product_id, i.c.warehouse_id)
                .where(i.c.product_id.in_(ids))
                .order_by(i.c.product_id, i.c.warehouse_id)
            )
            return [(r.product_id, r.warehouse_id) for r in rows]

    def outbox_max_id(self) -> int:
        with self.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(outbox.c.id), 0))).scalar_one())
