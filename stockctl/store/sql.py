"""The SQL store: every statement stockctl runs, on PostgreSQL and SQLite alike.

``SqlStore`` is the adapter; its parts: ``tx_sql`` (the unit of work), ``records`` (rows to
models), ``guard`` (failures to stockctl's errors), ``reports_sql`` (the operator's reports),
``reservation_sql``, ``outbox_sql``, ``hot_row_sql``, ``fast_reads`` and ``bulk``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select

from stockctl.core.events import CloudEvent
from stockctl.core.model import Inventory, Movement, Product, Reservation, Warehouse
from stockctl.core.ports import FastRequest, OutboxEntry, ReservedDrift
from stockctl.store import outbox_sql
from stockctl.store.fast_reads import AsyncFastReads, FastReads
from stockctl.store.guard import guard
from stockctl.store.ids import BlockIds
from stockctl.store.outbox_listen import NotifyWaiter, listen_conninfo
from stockctl.store.records import (
    inventory_from_row,
    movement_from_row,
    product_from_row,
    warehouse_from_row,
)
from stockctl.store.reports_sql import SqlReportReads
from stockctl.store.reservation_sql import fast_reserve, reservation_from_row, reserved_drift
from stockctl.store.row_reads import RowReads
from stockctl.store.tables import (
    idempotency_keys,
    inventory,
    products,
    reservations,
    stock_movements,
    warehouses,
)
from stockctl.store.tx_sql import SqlTx


class SqlStore(SqlReportReads):
    """Store over a primary engine and an optional read replica."""

    def __init__(
        self, engine: Engine, replica: Engine | None = None, *, fast_reads: bool = True
    ) -> None:
        self.engine = engine
        self.replica = replica or engine
        # the API's hot reads on PostgreSQL: plain autocommit psycopg (see fast_reads); off,
        # every read goes through SQLAlchemy
        fast = fast_reads and self.replica.dialect.name == "postgresql"
        self._fast = FastReads(self.replica) if fast else None
        self._afast = AsyncFastReads(self.replica) if self._fast is not None else None
        self.row_reads = RowReads(self._afast) if self._afast is not None else None
        self._blocks = BlockIds(engine) if engine.dialect.name == "postgresql" else None

    def fast_reservation_id(self) -> int | None:
        """An id outside a transaction, for the one-statement reserve (PostgreSQL only)."""
        if self._blocks is None:
            return None
        with guard(self.engine):
            return self._blocks.take()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with guard(self.engine), self.engine.begin() as conn:
            yield SqlTx(conn, self._blocks)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with guard(self.replica), self.replica.connect() as conn:
            conn = conn.execution_options(stockctl_read=True)
            yield conn

    def list_products(self, limit: int, offset: int = 0) -> list[Product]:
        stmt = select(products).order_by(products.c.id).limit(limit).offset(offset)
        with self.read() as conn:
            return [product_from_row(r) for r in conn.execute(stmt)]

    def list_warehouses(self) -> list[Warehouse]:
        stmt = select(warehouses).order_by(warehouses.c.priority, warehouses.c.id)
        with self.read() as conn:
            return [warehouse_from_row(r) for r in conn.execute(stmt)]

    def get_product(self, product_id: str) -> Product | None:
        with self.read() as conn:
            r = conn.execute(select(products).where(products.c.id == product_id)).first()
            return product_from_row(r) if r else None

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None:
        with self.read() as conn:
            r = conn.execute(select(warehouses).where(warehouses.c.id == warehouse_id)).first()
            return warehouse_from_row(r) if r else None

    def get_inventory(self, product_id: str, warehouse_id: str) -> Inventory | None:
        if self._fast is not None:
            with guard(self.replica):
                rows = self._fast.select(
                    inventory, "product_id = %s AND warehouse_id = %s", (product_id, warehouse_id)
                )
            return inventory_from_row(rows[0]) if rows else None
        stmt = select(inventory).where(
            inventory.c.product_id == product_id, inventory.c.warehouse_id == warehouse_id
        )
        with self.read() as conn:
            r = conn.execute(stmt).first()
            return inventory_from_row(r) if r else None

    @property
    def reads_async(self) -> bool:
        """Whether :meth:`get_inventory_async` reads without a thread (PostgreSQL)."""
        return self._afast is not None

    async def get_inventory_async(self, product_id: str, warehouse_id: str) -> Inventory | None:
        """:meth:`get_inventory` for a coroutine, on the event loop (only if ``reads_async``)."""
        assert self.row_reads is not None
        with guard(self.replica):
            row = await self.row_reads.get(product_id, warehouse_id)
        return inventory_from_row(row) if row is not None else None

    def product_inventory(self, product_id: str) -> list[Inventory]:
        if self._fast is not None:
            with guard(self.replica):
                rows = self._fast.select(
                    inventory, "product_id = %s", (product_id,), order_by="warehouse_id"
                )
            return [inventory_from_row(r) for r in rows]
        stmt = (
            select(inventory)
            .where(inventory.c.product_id == product_id)
            .order_by(inventory.c.warehouse_id)
        )
        with self.read() as conn:
            return [inventory_from_row(r) for r in conn.execute(stmt)]

    def bulk_load(
        self,
        product_rows: Sequence[Product],
        warehouse_rows: Sequence[Warehouse],
        inventory_rows: Iterator[Inventory],
        movements: Iterator[Movement],
    ) -> None:
        from stockctl.store import bulk

        with self.transaction() as tx:
            bulk.load(tx.conn, product_rows, warehouse_rows, inventory_rows, movements)

    def history(self, product_id: str, warehouse_id: str | None, limit: int) -> list[Movement]:
        m = stock_movements
        stmt = select(m).where(m.c.product_id == product_id)
        if warehouse_id is not None:
            stmt = stmt.where(m.c.warehouse_id == warehouse_id)
        stmt = stmt.order_by(m.c.id.desc()).limit(limit)
        with self.read() as conn:
            return [movement_from_row(r) for r in conn.execute(stmt)]

    def purge_idempotency_keys(self, cutoff: datetime) -> int:
        with self.transaction() as tx:
            t = idempotency_keys
            return int(tx.conn.execute(delete(t).where(t.c.created_at < cutoff)).rowcount)

    def reserve_fast(
        self,
        reservation: Reservation,
        actor: str,
        reserved: CloudEvent,
        out_of_stock: CloudEvent,
        low_stock: CloudEvent,
    ) -> bool:
        """PostgreSQL's one-round-trip reserve; False (nothing done) elsewhere or when short."""
        if self.backend != "postgresql":
            return False
        with guard(self.engine):
            return fast_reserve(self.engine, reservation, actor, reserved, out_of_stock, low_stock)

    def reserve_merged(
        self, requests: Sequence[FastRequest], actor: str
    ) -> list[tuple[bool, int]] | None:
        """PostgreSQL's merged reserve of one row (``stockctl.store.hot_row_sql``); None (nothing
        done: run them one by one) elsewhere."""
        if self.backend != "postgresql" or not requests:
            return None
        from stockctl.store.hot_row_sql import merged_reserve

        with guard(self.engine):
            return merged_reserve(self.engine, requests, actor)

    def inventory_key(self, inventory_id: int) -> tuple[str, str] | None:
        t = inventory
        stmt = select(t.c.product_id, t.c.warehouse_id).where(t.c.id == inventory_id)
        with self.read() as conn:
            r = conn.execute(stmt).first()
            return (r.product_id, r.warehouse_id) if r else None

    def get_reservation(self, reservation_id: int) -> Reservation | None:
        stmt = select(reservations).where(reservations.c.id == reservation_id)
        with self.read() as conn:
            r = conn.execute(stmt).first()
            return reservation_from_row(r) if r else None

    def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        overdue_at: datetime | None = None,
        limit: int = 100,
    ) -> list[Reservation]:
        t = reservations
        stmt = select(t)
        if status is not None:
            stmt = stmt.where(t.c.status == status)
        if product_id is not None:
            stmt = stmt.where(t.c.product_id == product_id)
        if order_id is not None:
            stmt = stmt.where(t.c.order_id == order_id)
        if overdue_at is not None:
            stmt = stmt.where(t.c.status == "ACTIVE", t.c.expires_at <= overdue_at)
        stmt = stmt.order_by(t.c.created_at.desc(), t.c.id).limit(limit)
        with self.read() as conn:
            return [reservation_from_row(r) for r in conn.execute(stmt)]

    def reserved_drift(self, limit: int) -> list[ReservedDrift]:
        with self.read() as conn:
            return reserved_drift(conn, limit)

    def outbox_backlog(self) -> tuple[int, datetime | None]:
        with self.read() as conn:
            return outbox_sql.backlog(conn)

    def prune_outbox(self, published_before: datetime, limit: int = 10_000) -> int:
        with self.transaction() as tx:
            return outbox_sql.prune(tx.conn, published_before, limit)

    def outbox_newest(self, topics: Sequence[str], limit: int) -> list[OutboxEntry]:
        """The last ``limit`` outbox rows of ``topics``, newest first (``events tail``)."""
        with self.read() as conn:
            return outbox_sql.newest(conn, topics, limit)

    def outbox_after(self, topics: Sequence[str], after_id: int, limit: int) -> list[OutboxEntry]:
        """Outbox rows of ``topics`` with an id above ``after_id``, in id order."""
        with self.read() as conn:
            return outbox_sql.after(conn, topics, after_id, limit)

    def outbox_waiter(self) -> NotifyWaiter:
        """What the relay sleeps on between batches: LISTEN on PostgreSQL, a timed wait else."""
        return NotifyWaiter(listen_conninfo(self.engine))

    def inventory_for_products(self, product_ids: Sequence[str]) -> dict[str, list[Inventory]]:
        """Every row of each product, in one query (products without rows are absent)."""
        out: dict[str, list[Inventory]] = {}
        if not product_ids:
            return out
        stmt = (
            select(inventory)
            .where(inventory.c.product_id.in_(sorted(set(product_ids))))
            .order_by(inventory.c.product_id, inventory.c.warehouse_id)
        )
        with self.read() as conn:
            for r in conn.execute(stmt):
                out.setdefault(r.product_id, []).append(inventory_from_row(r))
        return out

    def sample_product_ids(self, n: int) -> list[str]:
        with self.read() as conn:
            stmt = select(products.c.id).order_by(func.random()).limit(n)
            return [r.id for r in conn.execute(stmt)]

    def all_product_ids(self) -> list[str]:
        with self.read() as conn:
            stmt = select(products.c.id).order_by(products.c.id)
            return [r.id for r in conn.execute(stmt)]

    def ping(self, replica: bool = False) -> None:
        engine = self.replica if replica else self.engine
        with guard(engine), engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def upgrade_schema(self, revision: str = "head") -> str | None:
        """Apply migrations on the primary; returns the revision now current."""
        from stockctl.store import migrate
        from stockctl.store.engine import allow_create

        allow_create(self.engine)  # the one path that may create an embedded database file
        with guard(self.engine):
            migrate.upgrade(self.engine, revision)
            return migrate.current(self.engine)

    def db_activity(self, long_query_s: float) -> dict[str, Any]:
        """PostgreSQL's connections, long queries and row-lock waits (``activity_sql``)."""
        from stockctl.store.activity_sql import activity

        with self.read() as conn:
            return activity(conn, long_query_s)

    def head_revision(self) -> str | None:
        """The latest migration this stockctl has (``db upgrade`` brings the schema there)."""
        from stockctl.store import migrate

        return migrate.head()

    def schema_revision(self) -> str | None:
        from stockctl.store import migrate

        with guard(self.engine):
            return migrate.current(self.engine)

    def has_products(self) -> bool:
        """On the primary: seeding must not trust a lagging replica."""
        with self.transaction() as tx:
            return bool(tx.conn.execute(select(products.c.id).limit(1)).first())

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        if self._afast is not None:
            self._afast.close()
        self.engine.dispose()
        if self.replica is not self.engine:
            self.replica.dispose()
