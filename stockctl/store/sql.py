"""The SQL store: every statement stockctl runs, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from stockctl.core.events import CloudEvent
from stockctl.core.model import (
    Inventory,
    Movement,
    MovementKind,
    Product,
    Reservation,
    Warehouse,
)
from stockctl.core.ports import (
    FastRequest,
    IdempotencyRecord,
    OutboxEntry,
    ReservedDrift,
    WarehouseTotals,
)
from stockctl.core.projection import RowState
from stockctl.errors import DatabaseNotInitialised, DatabaseUnavailable, RetryableConflict
from stockctl.store import outbox_sql
from stockctl.store.engine import describe_target
from stockctl.store.fast_reads import AsyncFastReads, FastReads
from stockctl.store.ids import BlockIds, TxIds
from stockctl.store.outbox_sql import OutboxTx
from stockctl.store.reservation_sql import (
    HOLDING,
    ReservationTx,
    fast_reserve,
    reservation_from_row,
    reserved_drift,
)
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

OUTBOX_CHANNEL = "stockctl_outbox"
RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


def _product(r: Row[Any]) -> Product:
    return Product(id=r.id, name=r.name, created_at=r.created_at)


def _warehouse(r: Row[Any]) -> Warehouse:
    return Warehouse(
        id=r.id, name=r.name, priority=r.priority, active=bool(r.active), created_at=r.created_at
    )


def _inventory(r: Row[Any]) -> Inventory:
    return Inventory(
        id=r.id,
        product_id=r.product_id,
        warehouse_id=r.warehouse_id,
        quantity_available=r.quantity_available,
        quantity_reserved=r.quantity_reserved,
        low_stock_threshold=r.low_stock_threshold,
        version=r.version,
        last_movement_at=r.last_movement_at,
    )


def _movement(r: Row[Any]) -> Movement:
    return Movement(
        id=r.id,
        product_id=r.product_id,
        warehouse_id=r.warehouse_id,
        kind=MovementKind(r.kind),
        delta_available=r.delta_available,
        delta_reserved=r.delta_reserved,
        quantity_available=r.quantity_available,
        quantity_reserved=r.quantity_reserved,
        version=r.version,
        reason=r.reason,
        reference=r.reference,
        reservation_id=r.reservation_id,
        actor=r.actor,
        created_at=r.created_at,
    )


def movement_values(m: Movement) -> dict[str, Any]:
    return {
        "product_id": m.product_id,
        "warehouse_id": m.warehouse_id,
        "kind": m.kind.value,
        "delta_available": m.delta_available,
        "delta_reserved": m.delta_reserved,
        "quantity_available": m.quantity_available,
        "quantity_reserved": m.quantity_reserved,
        "version": m.version,
        "reason": m.reason,
        "reference": m.reference,
        "reservation_id": m.reservation_id,
        "actor": m.actor,
        "created_at": m.created_at,
    }


def event_values(e: CloudEvent) -> dict[str, Any]:
    return {
        "event_id": e.id,
        "topic": e.topic,
        "subject": e.subject,
        "payload": e.to_json(),
        "created_at": e.time,
    }


def reservation_values(r: Reservation) -> dict[str, Any]:
    return {
        "id": r.id,
        "product_id": r.product_id,
        "warehouse_id": r.warehouse_id,
        "quantity": r.quantity,
        "status": r.status.value,
        "order_id": r.order_id,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "updated_at": r.updated_at,
    }


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
        return _product(r) if r else None

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None:
        r = self.conn.execute(select(warehouses).where(warehouses.c.id == warehouse_id)).first()
        return _warehouse(r) if r else None

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
        rows = (_inventory(r) for r in self.conn.execute(stmt))
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
                "quantity_available": row.quantity_available,
                "quantity_reserved": row.quantity_reserved,
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
                quantity_available=row.quantity_available,
                quantity_reserved=row.quantity_reserved,
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


class SqlStore:
    """Store over a primary engine and an optional read replica."""

    def __init__(self, engine: Engine, replica: Engine | None = None) -> None:
        self.engine = engine
        self.replica = replica or engine
        # the API's hot reads on PostgreSQL: plain autocommit psycopg (see fast_reads)
        self._fast = FastReads(self.replica) if self.replica.dialect.name == "postgresql" else None
        self._afast = AsyncFastReads(self.replica) if self._fast is not None else None
        self._blocks = BlockIds(engine) if engine.dialect.name == "postgresql" else None

    def fast_reservation_id(self) -> int | None:
        """An id outside a transaction, for the one-statement reserve (PostgreSQL only)."""
        if self._blocks is None:
            return None
        with self._guard(self.engine):
            return self._blocks.take()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with self._guard(self.engine), self.engine.begin() as conn:
            yield SqlTx(conn, self._blocks)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._guard(self.replica), self.replica.connect() as conn:
            conn = conn.execution_options(stockctl_read=True)
            yield conn

    @contextmanager
    def _guard(self, engine: Engine) -> Iterator[None]:
        """Connection failures become ``DatabaseUnavailable`` naming the host, not the password."""
        try:
            yield
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            if getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
                raise RetryableConflict(
                    f"transaction aborted by the database: {exc.orig}"
                ) from None
            target = describe_target(engine.url.render_as_string(hide_password=True))
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            if _is_missing_schema(detail):
                raise DatabaseNotInitialised(
                    f"database at {target} has no stockctl schema: run `stockctl init`"
                ) from None
            if exc.connection_invalidated or _is_connect_error(detail):
                raise DatabaseUnavailable(
                    f"database unavailable at {target}: {_scrub(detail, engine)}"
                ) from None
            raise

    def list_products(self, limit: int, offset: int = 0) -> list[Product]:
        stmt = select(products).order_by(products.c.id).limit(limit).offset(offset)
        with self.read() as conn:
            return [_product(r) for r in conn.execute(stmt)]

    def list_warehouses(self) -> list[Warehouse]:
        stmt = select(warehouses).order_by(warehouses.c.priority, warehouses.c.id)
        with self.read() as conn:
            return [_warehouse(r) for r in conn.execute(stmt)]

    def get_product(self, product_id: str) -> Product | None:
        with self.read() as conn:
            r = conn.execute(select(products).where(products.c.id == product_id)).first()
            return _product(r) if r else None

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None:
        with self.read() as conn:
            r = conn.execute(select(warehouses).where(warehouses.c.id == warehouse_id)).first()
            return _warehouse(r) if r else None

    def get_inventory(self, product_id: str, warehouse_id: str) -> Inventory | None:
        if self._fast is not None:
            with self._guard(self.replica):
                rows = self._fast.select(
                    inventory, "product_id = %s AND warehouse_id = %s", (product_id, warehouse_id)
                )
            return _inventory(rows[0]) if rows else None
        stmt = select(inventory).where(
            inventory.c.product_id == product_id, inventory.c.warehouse_id == warehouse_id
        )
        with self.read() as conn:
            r = conn.execute(stmt).first()
            return _inventory(r) if r else None

    @property
    def reads_async(self) -> bool:
        """Whether :meth:`get_inventory_async` reads without a thread (PostgreSQL)."""
        return self._afast is not None

    async def get_inventory_async(self, product_id: str, warehouse_id: str) -> Inventory | None:
        """:meth:`get_inventory` for a coroutine, on the event loop (only if ``reads_async``)."""
        assert self._afast is not None
        with self._guard(self.replica):
            rows = await self._afast.select(
                inventory, "product_id = %s AND warehouse_id = %s", (product_id, warehouse_id)
            )
        return _inventory(rows[0]) if rows else None

    def product_inventory(self, product_id: str) -> list[Inventory]:
        if self._fast is not None:
            with self._guard(self.replica):
                rows = self._fast.select(
                    inventory, "product_id = %s", (product_id,), order_by="warehouse_id"
                )
            return [_inventory(r) for r in rows]
        stmt = (
            select(inventory)
            .where(inventory.c.product_id == product_id)
            .order_by(inventory.c.warehouse_id)
        )
        with self.read() as conn:
            return [_inventory(r) for r in conn.execute(stmt)]

    def inventory_overview(self, limit: int) -> list[Inventory]:
        stmt = (
            select(inventory)
            .order_by(inventory.c.product_id, inventory.c.warehouse_id)
            .limit(limit)
        )
        with self.read() as conn:
            return [_inventory(r) for r in conn.execute(stmt)]

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
            return [_inventory(r) for r in conn.execute(stmt)]

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
            return [_movement(r) for r in conn.execute(stmt)]

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
                yield _inventory(r)

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
        with self._guard(self.engine):
            return fast_reserve(self.engine, reservation, actor, reserved, out_of_stock, low_stock)

    def reserve_merged(
        self, requests: Sequence[FastRequest], actor: str
    ) -> list[tuple[bool, int]] | None:
        """PostgreSQL's merged reserve of one row (``stockctl.store.hot_row_sql``); None (nothing
        done: run them one by one) elsewhere."""
        if self.backend != "postgresql" or not requests:
            return None
        from stockctl.store.hot_row_sql import merged_reserve

        with self._guard(self.engine):
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

    def reserved_drift(self, limit: int) -> list[ReservedDrift]:
        with self.read() as conn:
            return reserved_drift(conn, limit)

    def outbox_backlog(self) -> tuple[int, datetime | None]:
        with self.read() as conn:
            return outbox_sql.backlog(conn)

    def prune_outbox(self, published_before: datetime, limit: int = 10_000) -> int:
        with self.transaction() as tx:
            return outbox_sql.prune(tx.conn, published_before, limit)

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
                out.setdefault(r.product_id, []).append(_inventory(r))
        return out

    def recently_updated(
        self, since: datetime, warehouse_id: str | None, offset: int, limit: int
    ) -> list[Inventory]:
        i = inventory
        stmt = select(i).where(i.c.last_movement_at >= since)
        if warehouse_id is not None:
            stmt = stmt.where(i.c.warehouse_id == warehouse_id)
        stmt = stmt.order_by(i.c.last_movement_at, i.c.product_id, i.c.warehouse_id)
        with self.read() as conn:
            return [_inventory(r) for r in conn.execute(stmt.offset(offset).limit(limit))]

    def changed_since(self, since: datetime) -> Iterator[Inventory]:
        """Rows with ``last_movement_at >= since``, streamed (the partial index serves it)."""
        i = inventory
        stmt = select(i).where(i.c.last_movement_at >= since).order_by(i.c.last_movement_at)
        with self.read() as conn:
            for r in conn.execution_options(yield_per=5000).execute(stmt):
                yield _inventory(r)

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
        with self._guard(engine), engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def upgrade_schema(self, revision: str = "head") -> str | None:
        """Apply migrations on the primary; returns the revision now current."""
        from stockctl.store import migrate
        from stockctl.store.engine import allow_create

        allow_create(self.engine)  # the one path that may create an embedded database file
        with self._guard(self.engine):
            migrate.upgrade(self.engine, revision)
            return migrate.current(self.engine)

    def schema_revision(self) -> str | None:
        from stockctl.store import migrate

        with self._guard(self.engine):
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


def _is_missing_schema(detail: str) -> bool:
    text = detail.lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _is_connect_error(detail: str) -> bool:
    text = detail.lower()
    needles = (
        "connection",
        "connect",
        "password authentication",
        "database",
        "unable to open",
        "timeout",
        "timed out",
        "name or service not known",
        "server closed",
    )
    return any(n in text for n in needles)


def _scrub(text: str, engine: Engine) -> str:
    password = engine.url.password
    return text.replace(str(password), "***") if password else text
